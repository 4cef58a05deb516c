#include "cache/store_state.hpp"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <system_error>

namespace pgstash::cache {

namespace fs = std::filesystem;

namespace {

// Enough for one read txn per thread of any sane proxy; a slot costs 64
// bytes of lock file.
constexpr unsigned k_max_readers = 512;

// No fsync per commit: after an unclean stop the cache is discarded
// anyway. MDB_NOTLS: read txns are pooled and renewed on any thread.
constexpr unsigned k_env_flags = MDB_NOSYNC | MDB_NOMETASYNC | MDB_NOTLS;

std::uint64_t derived_map_size(std::uint64_t max_size) {
  // The budget counts key and value bytes; LMDB spends more: a value over
  // ~2 kB takes whole 4 kB overflow pages (up to 2x for 2-4 kB values),
  // B-tree pages are partly full, and pages freed by a txn are reused only
  // after later ones. 3x plus 64 MiB keeps the map full out of reach. It
  // is address space: the file grows only as pages are used.
  constexpr std::uint64_t slack = 64ull << 20;
  constexpr std::uint64_t most = 1ull << 44;
  return max_size > (most - slack) / 3 ? most : 3 * max_size + slack;
}

[[noreturn]] void fail_open(const std::string& path, const std::string& why) {
  throw std::runtime_error("cache directory " + path + ": " + why);
}

// Creates `path` (mode 0700: it will hold query results) or checks that it
// is a directory.
void make_directory(const std::string& path) {
  if (path.empty()) throw std::runtime_error("no cache directory configured");
  std::error_code ec;
  const bool created = fs::create_directories(path, ec);
  if (ec) fail_open(path, "cannot create it: " + ec.message());
  if (created) fs::permissions(path, fs::perms::owner_all, ec);
  if (!fs::is_directory(path, ec)) fail_open(path, "not a directory");
}

directory_lock lock_directory(const std::string& path) {
  try {
    return directory_lock::acquire((fs::path(path) / "pgstash.lock").string());
  } catch (const std::runtime_error& e) {
    fail_open(path, e.what());
  }
}

lmdb::env open_fresh_env(const std::string& path, std::uint64_t map_size) {
  // Delete the files rather than the entries in them: this also recovers
  // from a file too damaged to open, and gives back the disk a larger
  // budget once took. The directory lock makes sure no one uses them.
  for (const char* name : {"data.mdb", "lock.mdb"}) {
    std::error_code ec;
    fs::remove(fs::path(path) / name, ec);
    if (ec) fail_open(path, std::string("cannot remove the earlier ") + name + ": " + ec.message());
  }
  try {
    return lmdb::env::open(path, static_cast<std::size_t>(map_size), k_max_readers, k_env_flags);
  } catch (const lmdb::error& e) {
    fail_open(path, e.what());
  }
}

lmdb::dbi open_dbi(const lmdb::env& env, const std::string& path) {
  try {
    lmdb::txn t = lmdb::txn::begin(env, 0);
    const lmdb::dbi d = lmdb::dbi::open(t, MDB_CREATE);
    t.commit();
    return d;
  } catch (const lmdb::error& e) {
    fail_open(path, e.what());
  }
}

validity_check always_valid_if_empty(validity_check check) {
  if (check) return check;
  return [](std::span<const dependency>) { return true; };
}

}  // namespace

result_store::state::state(const store_options& options_in, validity_check still_valid_in,
                           failure_report report)
    : options(options_in),
      still_valid(always_valid_if_empty(std::move(still_valid_in))),
      map_size(options_in.map_size ? options_in.map_size : derived_map_size(options_in.max_size)),
      lock((make_directory(options.path), lock_directory(options.path))),
      env(open_fresh_env(options.path, map_size)),
      dbi(open_dbi(env, options.path)),
      readers(env),
      report_(std::move(report)) {}

void result_store::state::fail(std::string_view kind, const std::string& message) {
  count(failures);
  {
    std::lock_guard lock(reported_mutex_);
    if (!reported_.emplace(kind).second) return;
  }
  if (report_) report_(message);
}

void result_store::state::note_time(std::int64_t now_ms) {
  std::int64_t seen = latest_ms_.load(std::memory_order_relaxed);
  while (now_ms > seen &&
         !latest_ms_.compare_exchange_weak(seen, now_ms, std::memory_order_relaxed)) {
  }
}

}  // namespace pgstash::cache
