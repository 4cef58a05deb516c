// What the readers and the writer thread of one result_store share: the
// directory lock, the open LMDB environment and its database, the pool of
// read txns, the in-memory index, the counters and the callbacks.
//
// Built by result_store::open; members are declared in the order they
// must be destroyed in reverse (readers before the env, the env before the
// directory lock).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "cache/directory_lock.hpp"
#include "cache/entry_index.hpp"
#include "cache/lmdb_env.hpp"
#include "cache/read_txn_pool.hpp"
#include "cache/result_store.hpp"

namespace pgstash::cache {

class result_store::state {
 public:
  // Takes the directory and opens the environment: the earlier run's
  // files when options.keep_entries and this boot wrote them (`kept`),
  // else fresh ones. Throws std::runtime_error with the one-line message
  // open() returns.
  state(const store_options& options, validity_check still_valid, failure_report report);
  state(const state&) = delete;
  state& operator=(const state&) = delete;

  // Counts a failure; reports `message` if no failure of this `kind` was
  // reported before.
  void fail(std::string_view kind, const std::string& message);

  // The latest now_ms a caller passed: the writer's clock for expiry, so
  // it agrees with the callers' clock whatever that is.
  void note_time(std::int64_t now_ms);
  std::int64_t latest_ms() const { return latest_ms_.load(std::memory_order_relaxed); }

  static void count(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) {
    counter.fetch_add(n, std::memory_order_relaxed);
  }

  const store_options options;
  const validity_check still_valid;  // never empty
  const std::uint64_t map_size;
  const bool kept;  // the files are an earlier run's

  directory_lock lock;
  lmdb::env env;
  lmdb::dbi dbi;   // the entries
  lmdb::dbi meta;  // the checkpoint
  read_txn_pool readers;
  entry_index index;

  std::atomic<std::uint64_t> hits{0}, misses{0}, stores{0}, evictions{0}, expirations{0},
      invalidations{0}, rejected{0}, failures{0};

 private:
  struct prepared {
    directory_lock lock;
    lmdb::env env;
    lmdb::dbi dbi, meta;
    bool kept;
  };
  static prepared prepare(const store_options& options, std::uint64_t map_size);

 public:
  // Makes the files look written on another boot: the next open discards
  // them.
  static void forget_boot(const std::string& path);

 private:
  state(const store_options& options, validity_check still_valid, failure_report report,
        prepared p);

  const failure_report report_;  // may be empty
  std::mutex reported_mutex_;
  std::set<std::string, std::less<>> reported_;  // kinds
  std::atomic<std::int64_t> latest_ms_{0};
};

}  // namespace pgstash::cache
