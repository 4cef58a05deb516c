#include "proxy/point_key.hpp"

#include <string>

#include <doctest/doctest.h>

using namespace pgstash;
using equality = invalidation::point_filter::equality;

TEST_CASE("point_value: a constant, or the parameter a Bind gives as an integer") {
  const equality constant{"id", 7, 0}, parameter{"id", std::nullopt, 2};
  CHECK(proxy::point_value(constant, nullptr, nullptr) == 7);
  CHECK_FALSE(proxy::point_value(parameter, nullptr, nullptr));

  wire::bind_message bind;
  bind.parameters = {std::string_view("x"), std::string_view("-42")};
  CHECK(proxy::point_value(parameter, nullptr, &bind) == -42);
  bind.parameters[1] = std::string_view(" 42");
  CHECK_FALSE(proxy::point_value(parameter, nullptr, &bind));
  bind.parameters[1] = std::nullopt;  // NULL
  CHECK_FALSE(proxy::point_value(parameter, nullptr, &bind));
  CHECK_FALSE(proxy::point_value(equality{"id", std::nullopt, 3}, nullptr, &bind));

  // Binary: big-endian, sign-extended from 2, 4 or 8 bytes.
  bind.parameter_formats = {1};
  const std::string minus_two("\xff\xfe", 2), four("\x00\x00\x00\x04", 4);
  bind.parameters[1] = std::string_view(minus_two);
  CHECK(proxy::point_value(parameter, nullptr, &bind) == -2);
  bind.parameters[1] = std::string_view(four);
  CHECK(proxy::point_value(parameter, nullptr, &bind) == 4);
  const std::string three("\x00\x00\x04", 3);
  bind.parameters[1] = std::string_view(three);
  CHECK_FALSE(proxy::point_value(parameter, nullptr, &bind));
  // A format list that does not fit the parameters is not read.
  bind.parameters[1] = std::string_view(four);
  bind.parameter_formats = {0, 1, 1};
  CHECK(proxy::point_value(parameter, nullptr, &bind) == 4);
  bind.parameter_formats = {0, 0, 0, 1};
  CHECK_FALSE(proxy::point_value(equality{"id", std::nullopt, 2}, nullptr, &bind));

  // Declared types: integers only (a float8 may equal several keys).
  bind.parameter_formats = {};
  bind.parameters[1] = std::string_view("5");
  wire::parse_message statement;
  statement.parameter_types = {0, 20};
  CHECK(proxy::point_value(parameter, &statement, &bind) == 5);
  statement.parameter_types = {0, 701};
  CHECK_FALSE(proxy::point_value(parameter, &statement, &bind));
}

TEST_CASE("equality_on: the key's equality, where `=` is PostgreSQL's own") {
  const auto a = invalidation::analyze_for_cache("SELECT v FROM t WHERE k = 1 AND id = 2");
  const auto* e = proxy::equality_on(a, "id", "\"$user\", public", "alice");
  REQUIRE(e);
  CHECK(e->constant == 2);
  CHECK_FALSE(proxy::equality_on(a, "v", "public", "alice"));
  CHECK_FALSE(proxy::equality_on(a, "", "public", "alice"));
  CHECK(proxy::equality_on(a, "id", "pg_catalog, public", "alice"));
  CHECK_FALSE(proxy::equality_on(a, "id", "public, pg_catalog", "alice"));
  CHECK_FALSE(
      proxy::equality_on(invalidation::analyze_for_cache("SELECT 1"), "id", "public", "alice"));
}
