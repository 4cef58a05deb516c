#include "invalidation/analysis_cache.hpp"

#include <memory>
#include <string>

#include <doctest/doctest.h>

using namespace pgstash::invalidation;

TEST_CASE("cache: texts the pre-filter clears take the fast path") {
  analysis_cache cache(8);
  const auto a = cache.get("SELECT * FROM t WHERE id = $1");
  const auto b = cache.get("UPDATE t SET a = 1");
  REQUIRE(a);
  CHECK(a == b);  // one shared empty analysis
  CHECK_FALSE(a->parse_error);
  CHECK(a->statements.empty());
  CHECK_FALSE(a->any_effect());
  CHECK(cache.size() == 0);
  CHECK(cache.hits() == 0);
  CHECK(cache.misses() == 0);
}

TEST_CASE("cache: a repeated text is analyzed once") {
  analysis_cache cache(8);
  const auto first = cache.get("SET search_path = a");
  CHECK(cache.misses() == 1);
  CHECK(cache.size() == 1);
  REQUIRE(first->statements.size() == 1);
  CHECK(first->statements[0].settings.at(0).name == "search_path");

  const auto again = cache.get("SET search_path = a");
  CHECK(again == first);
  CHECK(cache.hits() == 1);
  CHECK(cache.misses() == 1);
  CHECK(cache.size() == 1);

  const auto other = cache.get("SET search_path = b");
  CHECK(other != first);
  CHECK(other->statements.at(0).settings.at(0).value_sql == "'b'");
  CHECK(cache.size() == 2);
}

TEST_CASE("cache: results that are not effects are memoized too") {
  analysis_cache cache(8);
  const auto e = cache.get("SET search_path =");  // passes the pre-filter, fails to parse
  CHECK(e->parse_error);
  CHECK(cache.get("SET search_path =") == e);
  const auto s = cache.get("SELECT temp FROM t");  // a false positive of the pre-filter
  CHECK_FALSE(s->any_effect());
  CHECK(cache.get("SELECT temp FROM t") == s);
  CHECK(cache.hits() == 2);
  CHECK(cache.size() == 2);
}

TEST_CASE("cache: least recently used entries are evicted") {
  analysis_cache cache(2);
  const auto a = cache.get("BEGIN");
  const auto b = cache.get("COMMIT");
  CHECK(cache.get("BEGIN") == a);        // BEGIN is now the most recent
  const auto c = cache.get("ROLLBACK");  // evicts COMMIT
  CHECK(cache.size() == 2);
  CHECK(cache.get("BEGIN") == a);
  CHECK(cache.get("ROLLBACK") == c);
  const std::uint64_t misses = cache.misses();
  const auto b2 = cache.get("COMMIT");  // analyzed again, evicts BEGIN
  CHECK(cache.misses() == misses + 1);
  CHECK(b2 != b);
  CHECK(b2->statements.at(0).transaction == transaction_effect::commit);
  // Evicted results stay valid for whoever holds them.
  CHECK(b->statements.at(0).transaction == transaction_effect::commit);
  CHECK(cache.size() == 2);
  CHECK(cache.get("ROLLBACK") == c);
  CHECK(cache.get("BEGIN") != a);
}

TEST_CASE("cache: many distinct texts never exceed max_entries") {
  analysis_cache cache(16);
  for (int i = 0; i < 200; ++i) {
    const auto r = cache.get("SET app.n = " + std::to_string(i));
    CHECK(r->statements.at(0).settings.at(0).value_sql == std::to_string(i));
    CHECK(cache.size() <= 16);
  }
  CHECK(cache.size() == 16);
  CHECK(cache.misses() == 200);
  // The most recent 16 are all there.
  for (int i = 184; i < 200; ++i) cache.get("SET app.n = " + std::to_string(i));
  CHECK(cache.hits() == 16);
}

TEST_CASE("cache: zero entries memoizes nothing") {
  analysis_cache cache(0);
  const auto a = cache.get("BEGIN");
  const auto b = cache.get("BEGIN");
  CHECK(a != b);
  CHECK(a->statements == b->statements);
  CHECK(b->statements.at(0).transaction == transaction_effect::begin);
  CHECK(cache.size() == 0);
  CHECK(cache.misses() == 2);
}
