// A memo of analyze() results, keyed by a 128-bit hash of the SQL text.
//
// Clients send the same few texts over and over (ORMs, pgbench), so each
// is parsed once. Texts that may_have_effects() clears never reach the
// memo: they get a shared empty analysis without being hashed or stored.
//
// Keys are XXH3-128 digests, not the text, so an entry costs the same for a
// 10 kB query as for "BEGIN"; two texts colliding in 128 bits is treated as
// impossible. Eviction is least-recently-used at max_entries.
//
// Not thread-safe: keep one per thread (or per session), or guard it
// externally. The returned analyses are immutable and may be shared freely
// across threads; they stay valid after eviction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "invalidation/statement_analysis.hpp"

namespace pgstash::invalidation {

class analysis_cache {
 public:
  // Holds at most `max_entries` analyses; 0 memoizes nothing (every
  // pre-filtered text is analyzed afresh).
  explicit analysis_cache(std::size_t max_entries);

  analysis_cache(const analysis_cache&) = delete;
  analysis_cache& operator=(const analysis_cache&) = delete;

  // analyze(sql), from the memo when possible. Never null.
  std::shared_ptr<const analysis> get(std::string_view sql);

  // Entries held now (never more than max_entries).
  std::size_t size() const { return index_.size(); }

  // get() calls answered from the memo / by analyze(). Texts cleared by the
  // pre-filter count as neither.
  std::uint64_t hits() const { return hits_; }
  std::uint64_t misses() const { return misses_; }

 private:
  struct digest {
    std::uint64_t low = 0;
    std::uint64_t high = 0;
    bool operator==(const digest&) const = default;
  };
  struct digest_hash {
    std::size_t operator()(const digest& d) const { return static_cast<std::size_t>(d.low); }
  };
  // Most recently used first.
  using lru_list = std::list<std::pair<digest, std::shared_ptr<const analysis>>>;

  std::size_t max_entries_;
  lru_list lru_;
  std::unordered_map<digest, lru_list::iterator, digest_hash> index_;
  std::uint64_t hits_ = 0;
  std::uint64_t misses_ = 0;
};

}  // namespace pgstash::invalidation
