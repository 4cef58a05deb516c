// SQL LIKE patterns, for picking cached statements by their text: `%`
// matches any run of characters, `_` any one byte, `\` makes the next
// character literal. Case-sensitive, as LIKE is. Pure.
#pragma once

#include <string_view>

namespace pgstash::proxy {

bool like_match(std::string_view text, std::string_view pattern);

}  // namespace pgstash::proxy
