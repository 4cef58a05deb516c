#include "proxy/statement_map.hpp"

#include <doctest/doctest.h>

#include "wire/frontend.hpp"

namespace pgstash::proxy {
namespace {

wire::parse_message parse_of(std::string_view name, std::string_view sql,
                             std::vector<std::uint32_t> types = {}) {
  return {name, sql, std::move(types)};
}

TEST_CASE("statements with the same text and types share one server-side name") {
  statement_map a, b;
  const auto& sa = a.define(parse_of("s1", "select $1"), nullptr, 1);
  const auto& sb = b.define(parse_of("other", "select $1"), nullptr, 2);
  CHECK(sa.server_name == sb.server_name);
  CHECK(sa.server_name.starts_with("pgstash_"));
  statement_map c;
  CHECK(c.define(parse_of("s1", "select $1", {23}), nullptr, 3).server_name != sa.server_name);
  CHECK(c.define(parse_of("s2", "select $2"), nullptr, 3).server_name != sa.server_name);
}

TEST_CASE("the Parse frame recreates the statement under its server-side name") {
  statement_map m;
  const auto& s = m.define(parse_of("mine", "select 1", {23, 25}), nullptr, 1);
  wire::parse_message p;
  REQUIRE(s.parse_frame[0] == 'P');
  REQUIRE_FALSE(wire::parse_parse(std::string_view(s.parse_frame).substr(5), p));
  CHECK(p.statement == s.server_name);
  CHECK(p.query == "select 1");
  CHECK(p.parameter_types == std::vector<std::uint32_t>{23, 25});
}

TEST_CASE("a server lacking the statement gets a Parse; then it has it") {
  statement_map m;
  pool::statement_lru server(10);
  const auto& s = m.define(parse_of("s", "select 1"), nullptr, 5);
  auto first = statement_map::prepare_on(s, server, 6);
  CHECK(first.parse);
  CHECK_FALSE(first.evicted);
  CHECK(server.version(s.server_name) == 6u);
  auto second = statement_map::prepare_on(s, server, 7);
  CHECK_FALSE(second.parse);
}

TEST_CASE("a copy prepared before the client's Parse is replaced, never reused") {
  // Another client prepared the same text at time 10 on this server; a
  // table it reads was re-created since, and this client Parsed at 20.
  statement_map earlier, later;
  pool::statement_lru server(10);
  const auto& old_stmt = earlier.define(parse_of("a", "select x from t"), nullptr, 10);
  statement_map::prepare_on(old_stmt, server, 10);
  const auto& mine = later.define(parse_of("b", "select x from t"), nullptr, 20);
  auto p = statement_map::prepare_on(mine, server, 21);
  CHECK(p.parse);
  CHECK(server.version(mine.server_name) == 21u);
  // The fresher copy serves the earlier client too.
  CHECK_FALSE(statement_map::prepare_on(old_stmt, server, 22).parse);
}

TEST_CASE("preparing on a full server evicts its least recently used statement") {
  statement_map m;
  pool::statement_lru server(2);
  const auto& s1 = m.define(parse_of("s1", "select 1"), nullptr, 1);
  const auto& s2 = m.define(parse_of("s2", "select 2"), nullptr, 1);
  const auto& s3 = m.define(parse_of("s3", "select 3"), nullptr, 1);
  statement_map::prepare_on(s1, server, 2);
  statement_map::prepare_on(s2, server, 2);
  statement_map::prepare_on(s1, server, 3);  // s1 used again: s2 is now the oldest
  auto p = statement_map::prepare_on(s3, server, 4);
  REQUIRE(p.evicted);
  CHECK(*p.evicted == s2.server_name);
  CHECK(server.contains(s1.server_name));
  CHECK_FALSE(server.contains(s2.server_name));
}

TEST_CASE("names are the client's own: find, redefine, erase, clear") {
  statement_map m;
  m.define(parse_of("s", "select 1"), nullptr, 1);
  REQUIRE(m.find("s"));
  CHECK(m.find("s")->parsed_at == 1u);
  m.define(parse_of("s", "select 2"), nullptr, 2);
  CHECK(m.size() == 1);
  CHECK(m.find("s")->parsed_at == 2u);
  CHECK_FALSE(m.contains("t"));
  CHECK(m.erase("s"));
  CHECK_FALSE(m.erase("s"));
  m.define(parse_of("u", "select 1"), nullptr, 3);
  m.clear();
  CHECK(m.size() == 0);
}

}  // namespace
}  // namespace pgstash::proxy
