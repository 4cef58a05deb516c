#include "invalidation/analysis_cache.hpp"

#include <algorithm>
#include <iterator>

#include <xxhash.h>

namespace pgstash::invalidation {

namespace {

// One empty analysis shared by every text the pre-filter clears, so the
// fast path allocates nothing.
const std::shared_ptr<const analysis>& no_effects() {
  static const std::shared_ptr<const analysis> empty = std::make_shared<const analysis>();
  return empty;
}

}  // namespace

analysis_cache::analysis_cache(std::size_t max_entries) : max_entries_(max_entries) {
  index_.reserve(std::min<std::size_t>(max_entries, 1 << 16));
}

std::shared_ptr<const analysis> analysis_cache::get(std::string_view sql) {
  if (!may_have_effects(sql)) return no_effects();

  const XXH128_hash_t h = XXH3_128bits(sql.data(), sql.size());
  const digest key{h.low64, h.high64};
  if (const auto it = index_.find(key); it != index_.end()) {
    ++hits_;
    lru_.splice(lru_.begin(), lru_, it->second);  // now most recent
    return it->second->second;
  }

  ++misses_;
  auto result = std::make_shared<const analysis>(analyze(sql));
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

}  // namespace pgstash::invalidation
