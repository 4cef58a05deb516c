// Helpers for writing protocol bytes by hand in tests, independent of
// wire::message_writer, so builder tests compare against a second opinion.
#pragma once

#include <cstdint>
#include <ostream>  // doctest prints a failing std::error_code through operator<<
#include <string>
#include <string_view>

namespace pgstash::wire::test {

inline std::string be16(std::uint16_t v) {
  return {static_cast<char>(v >> 8), static_cast<char>(v & 0xff)};
}

inline std::string be32(std::uint32_t v) {
  return be16(static_cast<std::uint16_t>(v >> 16)) + be16(static_cast<std::uint16_t>(v & 0xffff));
}

// `s` plus its NUL terminator.
inline std::string cstr(std::string_view s) { return std::string(s) + '\0'; }

// A normal-phase frame: tag, length word (counting itself), body.
inline std::string frame(char tag, std::string_view body) {
  return tag + be32(static_cast<std::uint32_t>(body.size() + 4)) + std::string(body);
}

// A startup-phase packet: length word, body.
inline std::string packet(std::string_view body) {
  return be32(static_cast<std::uint32_t>(body.size() + 4)) + std::string(body);
}

}  // namespace pgstash::wire::test
