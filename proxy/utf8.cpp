#include "proxy/utf8.hpp"

namespace pgstash::proxy {

std::size_t utf8_sequence(std::string_view s) {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  std::size_t n = 0;
  if (c < 0x80) {
    n = 1;
  } else if (c >= 0xc2 && c < 0xe0) {
    n = 2;
  } else if (c >= 0xe0 && c < 0xf0) {
    n = 3;
  } else if (c >= 0xf0 && c < 0xf5) {
    n = 4;
  }
  if (n == 0 || n > s.size()) return 0;
  for (std::size_t i = 1; i < n; ++i)
    if ((b(i) & 0xc0) != 0x80) return 0;
  // Overlong forms, UTF-16 surrogates, beyond U+10FFFF.
  if (n == 3 && ((c == 0xe0 && b(1) < 0xa0) || (c == 0xed && b(1) >= 0xa0))) return 0;
  if (n == 4 && ((c == 0xf0 && b(1) < 0x90) || (c == 0xf4 && b(1) >= 0x90))) return 0;
  return n;
}

std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    const std::size_t n = utf8_sequence(s);
    out += n == 0 ? k_replacement_character : s.substr(0, n);
    s.remove_prefix(n == 0 ? 1 : n);
  }
  return out;
}

}  // namespace pgstash::proxy
