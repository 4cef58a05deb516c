// A memo of a pure function of SQL text, keyed by a 128-bit hash of the text.
//
// Clients send the same few texts over and over (ORMs, pgbench), and
// parsing costs more than a cache hit should, so each text is analyzed
// once: text_memo<analysis> serves analysis_cache, text_memo<cache_analysis>
// the result cache.
//
// Keys are XXH3-128 digests, not the text, so an entry costs the same for a
// 10 kB query as for "BEGIN"; two texts colliding in 128 bits is treated as
// impossible. Eviction is least-recently-used at max_entries.
//
// Not thread-safe: keep one per thread (or per session), or guard it
// externally. The returned results are immutable and may be shared freely
// across threads; they stay valid after eviction.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <list>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace pgstash::invalidation {

// XXH3-128 of a text, the memo's key.
struct text_digest {
  std::uint64_t low = 0;
  std::uint64_t high = 0;
  bool operator==(const text_digest&) const = default;
};
text_digest digest_of(std::string_view text);

template <class T>
class text_memo {
 public:
  // What is memoized; must be pure (same text, same result).
  using compute_fn = T (*)(std::string_view);

  // Holds at most `max_entries` results; 0 memoizes nothing (every text is
  // computed afresh).
  text_memo(std::size_t max_entries, compute_fn compute)
      : max_entries_(max_entries), compute_(compute) {
    index_.reserve(std::min<std::size_t>(max_entries, 1 << 16));
  }

  text_memo(const text_memo&) = delete;
  text_memo& operator=(const text_memo&) = delete;

  // compute(text), from the memo when possible. Never null.
  std::shared_ptr<const T> get(std::string_view text) {
    const text_digest key = digest_of(text);
    if (const auto it = index_.find(key); it != index_.end()) {
      ++hits_;
      lru_.splice(lru_.begin(), lru_, it->second);  // now most recent
      return it->second->second;
    }
    ++misses_;
    auto result = std::make_shared<const T>(compute_(text));
    if (max_entries_ == 0) return result;
    if (index_.size() >= max_entries_) {
      // Reuse the least recent node rather than free and allocate one.
      auto last = std::prev(lru_.end());
      index_.erase(last->first);
      last->first = key;
      last->second = result;
      lru_.splice(lru_.begin(), lru_, last);
    } else {
      lru_.emplace_front(key, result);
    }
    index_.emplace(key, lru_.begin());
    return result;
  }

  // Entries held now (never more than max_entries).
  std::size_t size() const { return index_.size(); }

  // get() calls answered from the memo / by compute().
  std::uint64_t hits() const { return hits_; }
  std::uint64_t misses() const { return misses_; }

 private:
  struct digest_hash {
    std::size_t operator()(const text_digest& d) const { return static_cast<std::size_t>(d.low); }
  };
  // Most recently used first.
  using lru_list = std::list<std::pair<text_digest, std::shared_ptr<const T>>>;

  std::size_t max_entries_;
  compute_fn compute_;
  lru_list lru_;
  std::unordered_map<text_digest, typename lru_list::iterator, digest_hash> index_;
  std::uint64_t hits_ = 0;
  std::uint64_t misses_ = 0;
};

}  // namespace pgstash::invalidation
