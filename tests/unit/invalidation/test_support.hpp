// Helpers shared by the invalidation tests.
#pragma once

#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include "invalidation/statement_analysis.hpp"

namespace pgstash::invalidation::test {

// analyze(), checking on every text a test uses that the pre-filter never
// misses an effect.
inline analysis checked_analyze(std::string_view sql) {
  analysis a = analyze(sql);
  if (a.any_effect()) {
    INFO("pre-filter missed: ", std::string(sql));
    CHECK(may_have_effects(sql));
  }
  return a;
}

// The effects of a text that must parse into exactly one statement.
inline statement_effects only(std::string_view sql) {
  INFO("sql: ", std::string(sql));
  analysis a = checked_analyze(sql);
  REQUIRE_FALSE(a.parse_error);
  REQUIRE(a.statements.size() == 1);
  return a.statements[0];
}

inline setting_change set(std::string name, std::string value_sql) {
  return {setting_change::kind::set, std::move(name), std::move(value_sql)};
}
inline setting_change reset(std::string name) {
  return {setting_change::kind::reset, std::move(name), {}};
}

}  // namespace pgstash::invalidation::test

namespace doctest {
template <>
struct StringMaker<pgstash::invalidation::setting_change> {
  static String convert(const pgstash::invalidation::setting_change& c) {
    return pgstash::invalidation::to_sql(c).c_str();
  }
};
}  // namespace doctest
