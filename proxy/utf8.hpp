// UTF-8 for what pgstash shows of clients' bytes (names, statements) where
// the format demands valid UTF-8: Prometheus text, the console's rows.
//
// Pure.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace pgstash::proxy {

// U+FFFD, which stands in for a byte that is not part of valid UTF-8.
inline constexpr std::string_view k_replacement_character = "\xef\xbf\xbd";

// The length of the valid UTF-8 sequence at the start of `s` (1 to 4), or
// 0 if `s` does not start with one. REQUIRES: `s` is not empty.
std::size_t utf8_sequence(std::string_view s);

// `s` with each byte that is not part of valid UTF-8 replaced by U+FFFD.
std::string valid_utf8(std::string_view s);

}  // namespace pgstash::proxy
