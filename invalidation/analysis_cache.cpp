#include "invalidation/analysis_cache.hpp"

namespace pgstash::invalidation {

namespace {

// One empty analysis shared by every text the pre-filter clears, so the
// fast path allocates nothing.
const std::shared_ptr<const analysis>& no_effects() {
  static const std::shared_ptr<const analysis> empty = std::make_shared<const analysis>();
  return empty;
}

}  // namespace

analysis_cache::analysis_cache(std::size_t max_entries) : memo_(max_entries, analyze) {}

std::shared_ptr<const analysis> analysis_cache::get(std::string_view sql) {
  if (!may_have_effects(sql)) return no_effects();
  return memo_.get(sql);
}

}  // namespace pgstash::invalidation
