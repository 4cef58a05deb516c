#include "cache/store_state.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
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

std::uint64_t effective_map_size(const store_options& options) {
  return options.map_size ? options.map_size : derived_map_size(options.max_size);
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

// What the files of a store's directory were written on: this format, on
// this boot of this machine. The map is written without fsync, so after an
// operating system crash it may be torn; after a crash of the process alone
// the page cache kept every committed txn.
std::string boot_mark() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (!std::getline(in, id) || id.empty()) return {};
  return "pgstash cache format 1, boot " + id + "\n";
}

constexpr const char* k_boot_file = "boot";

bool written_on_this_boot(const std::string& path) {
  const std::string mark = boot_mark();
  if (mark.empty()) return false;
  std::ifstream in(fs::path(path) / k_boot_file);
  const std::string found((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return found == mark;
}

// Written before anything is stored, so files of this boot say so.
void write_boot_mark(const std::string& path) {
  const fs::path file = fs::path(path) / k_boot_file;
  const fs::path temporary = fs::path(path) / "boot.new";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << boot_mark();
    if (!out) fail_open(path, "cannot write " + temporary.string());
  }
  std::error_code ec;
  fs::rename(temporary, file, ec);
  if (ec) fail_open(path, "cannot write " + file.string() + ": " + ec.message());
}

}  // namespace

void result_store::state::forget_boot(const std::string& path) {
  std::error_code ec;
  fs::remove(fs::path(path) / k_boot_file, ec);
}

namespace {

void remove_files(const std::string& path) {
  // Delete the files rather than the entries in them: this also recovers
  // from a file too damaged to open, and gives back the disk a larger
  // budget once took. The directory lock makes sure no one uses them.
  for (const char* name : {"data.mdb", "lock.mdb", k_boot_file}) {
    std::error_code ec;
    fs::remove(fs::path(path) / name, ec);
    if (ec) fail_open(path, std::string("cannot remove the earlier ") + name + ": " + ec.message());
  }
}

struct opened_environment {
  lmdb::env env;
  lmdb::dbi entries, meta;
};

opened_environment open_environment(const std::string& path, std::uint64_t map_size) {
  opened_environment o;
  o.env = lmdb::env::open(path, static_cast<std::size_t>(map_size), k_max_readers, 2, k_env_flags);
  lmdb::txn t = lmdb::txn::begin(o.env, 0);
  o.entries = lmdb::dbi::open(t, "entries", MDB_CREATE);
  o.meta = lmdb::dbi::open(t, "meta", MDB_CREATE);
  t.commit();
  return o;
}

}  // namespace

// Takes the directory, then opens the files an earlier run left if it may
// keep them and they open, or fresh ones.
result_store::state::prepared result_store::state::prepare(const store_options& options,
                                                           std::uint64_t map_size) {
  make_directory(options.path);
  prepared p{lock_directory(options.path), {}, {}, {}, false};
  if (options.keep_entries && written_on_this_boot(options.path)) {
    try {
      opened_environment o = open_environment(options.path, map_size);
      p.env = std::move(o.env);
      p.dbi = o.entries;
      p.meta = o.meta;
      p.kept = true;
      return p;
    } catch (const lmdb::error&) {
      // Too damaged to open, or from another format: start afresh.
    }
  }
  remove_files(options.path);
  write_boot_mark(options.path);
  try {
    opened_environment o = open_environment(options.path, map_size);
    p.env = std::move(o.env);
    p.dbi = o.entries;
    p.meta = o.meta;
  } catch (const lmdb::error& e) {
    fail_open(options.path, e.what());
  }
  return p;
}

namespace {

validity_check always_valid_if_empty(validity_check check) {
  if (check) return check;
  return [](std::span<const dependency>) { return true; };
}

}  // namespace

result_store::state::state(const store_options& options_in, validity_check still_valid_in,
                           failure_report report)
    : state(options_in, std::move(still_valid_in), std::move(report),
            prepare(options_in, effective_map_size(options_in))) {}

result_store::state::state(const store_options& options_in, validity_check still_valid_in,
                           failure_report report, prepared p)
    : options(options_in),
      still_valid(always_valid_if_empty(std::move(still_valid_in))),
      map_size(effective_map_size(options_in)),
      kept(p.kept),
      lock(std::move(p.lock)),
      env(std::move(p.env)),
      dbi(p.dbi),
      meta(p.meta),
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
