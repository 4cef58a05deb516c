// Reading libpg_query's parse tree, shared by the analyses in this folder.
// Internal to the invalidation library: no public header includes it, so
// nlohmann::json and pg_query.h stay out of other modules' builds.
//
// source_text is the SQL as handed to libpg_query (made valid UTF-8, see
// below); parse() runs the parser and reads its JSON; the readers treat a
// missing member as its default, since libpg_query's JSON omits defaults.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace pgstash::invalidation {

using json = nlohmann::json;

// ---- Characters, classified as PostgreSQL's scan.l does.

inline bool is_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

// Skips a /* */ comment that starts at `i`; PostgreSQL nests them.
// Returns the index just past it, or npos if it never ends.
std::size_t skip_block_comment(std::string_view s, std::size_t i);

// ---- Text handed to libpg_query.
//
// libpg_query copies input bytes into its JSON as they are, and nlohmann
// rejects invalid UTF-8. Text that is not valid UTF-8 (a LATIN1 client) is
// therefore parsed with each byte >= 0x80 mapped to the code point
// U+E000 + byte (3 bytes of UTF-8), so the lexer still sees identifier or
// string bytes where they were; strings taken from the tree are mapped back
// and offsets are translated to the original text. Text after an embedded
// NUL is dropped, as the server never sees it.

class source_text {
 public:
  explicit source_text(std::string_view sql);

  const std::string& original() const { return original_; }
  // The text libpg_query parses; its locations are offsets into this.
  std::string_view parsed() const { return mapped_ ? parsed_ : original_; }
  const char* c_str() const { return mapped_ ? parsed_.c_str() : original_.c_str(); }

  // An offset into c_str() as an offset into original(), clamped.
  std::size_t to_original(std::int64_t offset) const {
    if (offset < 0) return 0;
    const auto o = static_cast<std::size_t>(offset);
    if (!mapped_) return std::min(o, original_.size());
    return o < offsets_.size() ? offsets_[o] : original_.size();
  }

  // A string from the tree, with mapped bytes restored.
  std::string decode(std::string_view s) const;

 private:
  std::string original_;
  bool mapped_ = false;
  std::string parsed_;
  std::vector<std::uint32_t> offsets_;  // parsed_ offset -> original_ offset
};

// What libpg_query made of a text.
struct parse_result {
  bool error = false;  // libpg_query rejected the text (the server would too)
  // {"version": ..., "stmts": [RawStmt...]} when !error; is_discarded() if
  // the JSON could not be read (never seen; callers assume the worst).
  json tree;
};
parse_result parse(const source_text& src);

// ---- Reading libpg_query's JSON. Defaults are omitted from it: a missing
// member is false, 0 or "".

inline const json* member(const json& o, const char* key) {
  if (!o.is_object()) return nullptr;
  const auto it = o.find(key);
  return it == o.end() ? nullptr : &*it;
}
inline std::string_view str_member(const json& o, const char* key) {
  const json* m = member(o, key);
  return m && m->is_string() ? std::string_view(m->get_ref<const std::string&>())
                             : std::string_view();
}
inline bool bool_member(const json& o, const char* key) {
  const json* m = member(o, key);
  return m && m->is_boolean() && m->get<bool>();
}
inline std::int64_t int_member(const json& o, const char* key) {
  const json* m = member(o, key);
  return m && m->is_number_integer() ? m->get<std::int64_t>() : 0;
}
// A Node is {"TypeName": {...fields}}: returns the fields if it is one of `type`.
inline const json* node_as(const json& node, std::string_view type) {
  if (!node.is_object() || node.size() != 1) return nullptr;
  const auto it = node.begin();
  return it.key() == type ? &it.value() : nullptr;
}
// The svals of a list of String nodes (a qualified name); "" for others.
std::vector<std::string_view> name_list(const json* list);

// The integer of an A_Const, as SQL. libpg_query 15-4.0.0's JSON omits
// Integer values <= 0, not just 0 (pganalyze/libpg_query#243, fixed
// upstream in #249), so an absent value is read back from the text: at the
// constant's location, a '-' then (after any whitespace or comments) digits
// is negative; anything else is 0.
std::optional<std::string> integer_sql(const json& a_const, const json& ival,
                                       const source_text& src);

}  // namespace pgstash::invalidation
