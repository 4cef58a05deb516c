#include "invalidation/text_memo.hpp"

#include <xxhash.h>

namespace pgstash::invalidation {

text_digest digest_of(std::string_view text) {
  const XXH128_hash_t h = XXH3_128bits(text.data(), text.size());
  return {h.low64, h.high64};
}

}  // namespace pgstash::invalidation
