// A memo of analyze() results: text_memo<analysis> behind the pre-filter.
//
// Texts that may_have_effects() clears never reach the memo: they get a
// shared empty analysis without being hashed or stored. The rest are parsed
// once per distinct text (see text_memo.hpp for keys and eviction).
//
// Not thread-safe: keep one per thread (or per session), or guard it
// externally. The returned analyses are immutable and may be shared freely
// across threads; they stay valid after eviction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "invalidation/statement_analysis.hpp"
#include "invalidation/text_memo.hpp"

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
  std::size_t size() const { return memo_.size(); }

  // get() calls answered from the memo / by analyze(). Texts cleared by the
  // pre-filter count as neither.
  std::uint64_t hits() const { return memo_.hits(); }
  std::uint64_t misses() const { return memo_.misses(); }

 private:
  text_memo<analysis> memo_;
};

}  // namespace pgstash::invalidation
