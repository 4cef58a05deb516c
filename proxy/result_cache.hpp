// The result cache as every client session shares it: the LMDB store, the
// per-relation generations that prove an entry current, the catalog
// look-ups that say what a statement reads and writes, and the counters
// the admin port reports (hits, misses, and why statements were not
// cached).
//
// Thread-safe: sessions on every worker use it at once. Nothing here
// blocks on the network: catalog answers not known yet make a statement
// uncached this time, and are looked up in the background.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/result_store.hpp"
#include "conf/config.hpp"
#include "invalidation/cache_analysis.hpp"
#include "invalidation/catalog_service.hpp"
#include "invalidation/generations.hpp"
#include "invalidation/replication_listener.hpp"
#include "proxy/cache_rules.hpp"
#include "proxy/in_flight.hpp"

namespace pgstash::proxy {

class result_cache {
 public:
  // Opens the store at cfg.path, and follows the replication stream if
  // `followed.replication`. An earlier run's entries are discarded, unless
  // it kept its slots (`followed.persistent_slot`) and its last checkpoint
  // proves them. Returns null and sets `error` if it cannot.
  static std::unique_ptr<result_cache> open(const conf::cache_section& cfg,
                                            const conf::invalidation_section& followed,
                                            std::string& error);
  result_cache(const result_cache&) = delete;
  result_cache& operator=(const result_cache&) = delete;

  const conf::cache_section& config() const { return cfg_; }
  const cache_rules& rules() const { return rules_; }
  // The clock of entries' creation and expiry: Unix time in ms.
  static std::int64_t now_ms();
  invalidation::generations& generations() { return generations_; }
  invalidation::catalog_service& catalog() { return catalog_; }
  // Misses being fetched (no stampede).
  in_flight_results& in_flight() { return in_flight_; }
  cache::result_store& store() { return *store_; }
  // Whether `database`'s results may be served, as its replication stream
  // stands (started now if it is not yet); null when writes that bypass
  // pgstash are not followed (the TTL bounds them).
  std::shared_ptr<const invalidation::stream_status> follow(const std::string& database,
                                                            const std::string& conninfo);

  // How the streams log in (libpq keywords), to look at the server's
  // replication slots; nullopt before the first stream or without them.
  std::optional<std::string> stream_conninfo() const;

  // Every database whose stream runs, with its status (none when writes
  // that bypass pgstash are not followed).
  std::vector<std::pair<std::string, std::shared_ptr<const invalidation::stream_status>>> streams()
      const;

  // The operator's invalidations (admin port): every result read from
  // `table` (a bare name) in `database`; every result of `database`.
  void invalidate_table(const std::string& database, std::string_view table);
  void invalidate_database(const std::string& database);
  // Every result, and the store emptied.
  void invalidate_all(const std::vector<std::string>& databases);
  // `seen` and the databases whose entries were kept from the earlier run.
  std::vector<std::string> databases(std::vector<std::string> seen) const;
  // Persistent slots: saves what proves the stored entries now, and waits.
  // Entries kept across a restart are proven by the last checkpoint, so one
  // that predates an operator's invalidation would bring back what it
  // invalidated (the invalidations above call it); and a stop saves one.
  void checkpoint();

  // Statements served from the cache, sent on to be captured, and passed
  // through uncached (by reason).
  void count_hit() { hits_.fetch_add(1, std::memory_order_relaxed); }
  void count_miss() { misses_.fetch_add(1, std::memory_order_relaxed); }
  // Strict consistency: a hit the stream did not prove within
  // cache.strict_wait_ms, sent to the server instead (also a miss).
  void count_unproven() { unproven_.fetch_add(1, std::memory_order_relaxed); }
  std::uint64_t unproven() const { return unproven_.load(std::memory_order_relaxed); }
  void count_uncacheable(invalidation::uncacheable why);
  std::uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  std::uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }
  std::uint64_t uncacheable(invalidation::uncacheable why) const;

 private:
  explicit result_cache(const conf::cache_section& cfg);
  void bump_database(const std::string& database);

  const conf::cache_section& cfg_;
  const cache_rules rules_;
  invalidation::generations generations_;
  invalidation::catalog_service catalog_;
  in_flight_results in_flight_;
  std::unique_ptr<cache::result_store> store_;
  std::vector<std::string> kept_databases_;  // of the checkpoint the store was opened with
  std::atomic<std::uint64_t> hits_ = 0;
  std::atomic<std::uint64_t> misses_ = 0;
  std::atomic<std::uint64_t> unproven_ = 0;
  static constexpr std::size_t k_reasons = 64;
  std::array<std::atomic<std::uint64_t>, k_reasons> uncacheable_{};
  // Last: its threads use the generations and the catalog until it is gone.
  std::unique_ptr<invalidation::replication_listener> listener_;
};

}  // namespace pgstash::proxy
