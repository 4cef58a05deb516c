#include "invalidation/parse_tree.hpp"

#include <pg_query.h>

namespace pgstash::invalidation {
namespace {

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
      cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      cp = c & 0x07u;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (std::size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    // Overlong forms, surrogates, beyond U+10FFFF.
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

}  // namespace

std::size_t skip_block_comment(std::string_view s, std::size_t i) {
  int depth = 0;
  while (i < s.size()) {
    if (s[i] == '/' && i + 1 < s.size() && s[i + 1] == '*') {
      ++depth;
      i += 2;
    } else if (s[i] == '*' && i + 1 < s.size() && s[i + 1] == '/') {
      i += 2;
      if (--depth == 0) return i;
    } else {
      ++i;
    }
  }
  return std::string_view::npos;
}

source_text::source_text(std::string_view sql) : original_(sql.substr(0, sql.find('\0'))) {
  if (valid_utf8(original_)) return;
  mapped_ = true;
  parsed_.reserve(original_.size() * 2);
  for (std::size_t i = 0; i < original_.size(); ++i) {
    const auto b = static_cast<unsigned char>(original_[i]);
    if (b < 0x80) {
      parsed_.push_back(static_cast<char>(b));
      offsets_.push_back(static_cast<std::uint32_t>(i));
      continue;
    }
    const std::uint32_t cp = 0xE000u + b;
    parsed_.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    parsed_.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    parsed_.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    offsets_.insert(offsets_.end(), 3, static_cast<std::uint32_t>(i));
  }
  offsets_.push_back(static_cast<std::uint32_t>(original_.size()));
}

std::string source_text::decode(std::string_view s) const {
  if (!mapped_) return std::string(s);
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0xEE && i + 2 < s.size()) {
      const std::uint32_t cp = ((c & 0x0Fu) << 12) |
                               ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
                               (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
      if (cp >= 0xE080 && cp <= 0xE0FF) {
        out.push_back(static_cast<char>(cp - 0xE000));
        i += 2;
        continue;
      }
    }
    out.push_back(static_cast<char>(c));
  }
  return out;
}

parse_result parse(const source_text& src) {
  parse_result out;
  PgQueryParseResult parsed = pg_query_parse(src.c_str());
  struct releaser {
    PgQueryParseResult& r;
    ~releaser() { pg_query_free_parse_result(r); }
  } release{parsed};
  if (parsed.error) {
    out.error = true;
    return out;
  }
  out.tree = json::parse(parsed.parse_tree, nullptr, /*allow_exceptions=*/false);
  return out;
}

std::vector<std::string_view> name_list(const json* list) {
  std::vector<std::string_view> names;
  if (!list || !list->is_array()) return names;
  for (const json& n : *list) {
    const json* s = node_as(n, "String");
    names.push_back(s ? str_member(*s, "sval") : std::string_view());
  }
  return names;
}

std::optional<std::string> integer_sql(const json& a_const, const json& ival,
                                       const source_text& src) {
  if (member(ival, "ival")) return std::to_string(int_member(ival, "ival"));
  const std::string_view text = src.parsed();
  const std::int64_t location = int_member(a_const, "location");
  if (location < 0 || static_cast<std::size_t>(location) >= text.size() || text[location] != '-') {
    return "0";
  }
  std::size_t i = static_cast<std::size_t>(location) + 1;
  for (;;) {
    while (i < text.size() && is_space(static_cast<unsigned char>(text[i]))) ++i;
    if (text.substr(i).starts_with("--")) {
      i = text.find_first_of("\r\n", i);
      if (i == std::string_view::npos) return std::nullopt;
    } else if (text.substr(i).starts_with("/*")) {
      i = skip_block_comment(text, i);
      if (i == std::string_view::npos) return std::nullopt;
    } else {
      break;
    }
  }
  std::int64_t value = 0;
  std::size_t digits = 0;
  for (; i < text.size() && is_digit(static_cast<unsigned char>(text[i])) && digits < 12;
       ++i, ++digits) {
    value = value * 10 + (text[i] - '0');
  }
  if (digits == 0 || digits == 12) return std::nullopt;
  return value == 0 ? std::string("0") : "-" + std::to_string(value);
}

}  // namespace pgstash::invalidation
