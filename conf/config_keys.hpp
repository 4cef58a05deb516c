// Internal to conf/: the key table (one row per config key, binding its
// name, type, range, doc and struct member) and how a value is written,
// shared by the loader and the reference in config.cpp. Not part of the
// module's contract.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.hpp"

namespace pgstash::conf::detail {

enum class key_type { string, integer, boolean, choice, string_list };
// What an integer key counts: one with a unit may also be written as a
// string with a unit ("30s", "512MiB").
enum class key_unit { none, milliseconds, seconds, bytes };

// A value from the file, already checked against its row.
struct setting {
  std::int64_t number = 0;  // integer keys; 0 or 1 for booleans; the index into choices
  std::string text;         // string keys
  std::vector<std::string> list;  // string_list keys
};

setting number_setting(std::int64_t number);
setting text_setting(std::string text);
setting list_setting(std::vector<std::string> list);

// One config key. Rows are built by the *_key factories in config_keys.cpp, which bind
// `store` and `load` to one struct member.
struct key_row {
  std::string_view name;  // "section.key"
  key_type type = key_type::string;
  std::string_view doc;
  // integer: inclusive range. string: min is the minimum length (0 or 1).
  std::int64_t min = 0;
  std::int64_t max = 0;
  // choice: accepted spellings, in the member enum's declaration order.
  std::span<const std::string_view> choices = {};
  // choice: spellings that are documented but refused for now.
  std::span<const std::string_view> unsupported = {};
  // Its value is never shown (current_settings()).
  bool secret = false;
  key_unit unit = key_unit::none;
  // A reload (SIGHUP, the admin API, RELOAD) applies it to the running
  // process; other keys take effect at the next start.
  bool live = false;
  void (*store)(config&, const setting&) = nullptr;
  setting (*load)(const config&) = nullptr;
};

// Every key, sorted by name.
std::span<const key_row> all_keys();
// The row of "section.key", or null.
const key_row* find_key(std::string_view name);
std::string_view section_of(std::string_view name);
std::string_view key_of(std::string_view name);

// A quantity with its unit, as `unit` counts it: "30s" is 30000 for
// milliseconds, "512MiB" 536870912 for bytes. A whole number, optional
// spaces, then one of ms, s, min, h, d (durations) or B, KiB, MiB, GiB, TiB
// (sizes). nullopt, with `problem` set, if it is not one or does not come
// out whole.
std::optional<std::int64_t> parse_quantity(std::string_view text, key_unit unit,
                                           std::string& problem);
// The units parse_quantity() takes for `unit`, for hints: "ms, s, min, h, d".
std::string_view unit_names(key_unit unit);

std::string quoted(std::string_view s);
// `"a", "b", "c"`
std::string quoted_list(std::span<const std::string_view> values);
// The value as it would be written in the file.
std::string render(const key_row& row, const setting& s);
std::string default_of(const key_row& row);
// A value with a unit for `row`, as written in the file ("\"30s\"").
std::string example_quantity(const key_row& row);
// The reference's type column: "integer, 1 to 65535", "`a`, `b`", ...
std::string type_cell(const key_row& row);

}  // namespace pgstash::conf::detail
