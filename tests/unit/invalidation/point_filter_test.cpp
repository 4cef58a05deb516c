#include <optional>
#include <string>

#include <doctest/doctest.h>

#include "invalidation/cache_analysis.hpp"

using namespace pgstash::invalidation;

namespace {

using equality = point_filter::equality;

equality constant(std::string column, std::int64_t value) { return {std::move(column), value, 0}; }
equality parameter(std::string column, int number) {
  return {std::move(column), std::nullopt, number};
}

std::optional<point_filter> point_of(const std::string& sql) {
  INFO("sql: ", sql);
  return analyze_for_cache(sql).point;
}

void check_point(const std::string& sql, const object_name& relation,
                 const std::vector<equality>& equalities) {
  INFO("sql: ", sql);
  const auto point = analyze_for_cache(sql).point;
  REQUIRE(point);
  CHECK(point->relation == relation);
  CHECK(point->equalities == equalities);
}

}  // namespace

TEST_CASE("point filters of reads: one table, equalities at the top of WHERE") {
  check_point("SELECT bid, bbalance FROM pgbench_branches WHERE bid = 7", {"", "pgbench_branches"},
              {constant("bid", 7)});
  check_point("select * from s.t as x where x.id = $1 and 5 = y and z > 1", {"s", "t"},
              {parameter("id", 1), constant("y", 5)});
  check_point("SELECT v FROM t WHERE t.id = -3 AND (a = '12' AND b = 3000000000)", {"", "t"},
              {constant("id", -3), constant("a", 12), constant("b", 3000000000)});
  check_point("SELECT count(*) FROM t WHERE id = 0 GROUP BY v ORDER BY 1 LIMIT 3", {"", "t"},
              {constant("id", 0)});
  check_point("SELECT (SELECT 1) FROM t WHERE id = 1", {"", "t"}, {constant("id", 1)});
}

TEST_CASE("reads that are not point filters") {
  for (const char* sql : {
           "SELECT * FROM t",
           "SELECT * FROM t WHERE id > 1",
           "SELECT * FROM t WHERE id = 1 OR id = 2",
           "SELECT * FROM t WHERE NOT (id = 1)",
           "SELECT * FROM t WHERE id = v",
           "SELECT * FROM t WHERE id + 0 = 1",
           "SELECT * FROM t WHERE id = 1 + 0",
           "SELECT * FROM t WHERE id = 1.0",
           "SELECT * FROM t WHERE id = '1.0'",
           "SELECT * FROM t WHERE id = ' 1'",
           "SELECT * FROM t WHERE id = '+1'",
           "SELECT * FROM t WHERE id = '0x1f'",
           "SELECT * FROM t WHERE id = '1_000'",
           "SELECT * FROM t WHERE id = 99999999999999999999",
           "SELECT * FROM t WHERE id = NULL",
           "SELECT * FROM t WHERE id = 1::int",
           "SELECT * FROM t WHERE id OPERATOR(pg_catalog.=) 1",
           "SELECT * FROM t WHERE other.id = 1",
           "SELECT * FROM t AS x WHERE t.id = 1",
           "SELECT * FROM s.t WHERE s.t.id = 1",
           "SELECT * FROM t, u WHERE t.id = 1",
           "SELECT * FROM t JOIN u USING (id) WHERE id = 1",
           "SELECT * FROM t WHERE id = 1 AND v IN (SELECT v FROM t)",
           "SELECT *, (SELECT max(v) FROM u) FROM t WHERE id = 1",
           "SELECT * FROM t WHERE id = 1 UNION SELECT * FROM t WHERE id = 2",
           "WITH w AS (SELECT 1) SELECT * FROM t WHERE id = 1",
           "SELECT * FROM (SELECT * FROM t) s WHERE id = 1",
           "SELECT * FROM f() WHERE id = 1",
           "SELECT * INTO n FROM t WHERE id = 1",
           "SELECT * FROM t WHERE id = 1; SELECT 1",
           // Column aliases rename t's columns by position.
           "SELECT * FROM t AS x(owner, id) WHERE id = 1",
           // An untyped parameter's type is fixed where it is first used.
           "SELECT $1::float4, * FROM t WHERE id = $1",
           "SELECT * FROM t WHERE id = $1 LIMIT $1",
       }) {
    CHECK_FALSE(point_of(sql));
  }
}

TEST_CASE("point filters of writes: UPDATE that keeps the column, DELETE") {
  check_point("UPDATE pgbench_branches SET bbalance = bbalance + -5 WHERE bid = 3",
              {"", "pgbench_branches"}, {constant("bid", 3)});
  check_point("UPDATE t AS x SET v = (SELECT max(v) FROM t) WHERE x.id = $2 RETURNING *", {"", "t"},
              {parameter("id", 2)});
  check_point("DELETE FROM s.t WHERE id = 4 AND v = 'x'", {"s", "t"}, {constant("id", 4)});
  // Setting one filtered column leaves the other.
  check_point("UPDATE t SET id = id + 1 WHERE id = 1 AND k = 2", {"", "t"}, {constant("k", 2)});
  CHECK_FALSE(point_of("UPDATE t SET id = 2 WHERE id = 1"));
  CHECK_FALSE(point_of("UPDATE t SET (v, id) = (1, 2) WHERE id = 1"));
  CHECK_FALSE(point_of("UPDATE t SET v = u.v FROM u WHERE t.id = 1"));
  CHECK_FALSE(point_of("DELETE FROM t USING u WHERE t.id = 1"));
  CHECK_FALSE(point_of("WITH d AS (DELETE FROM u) DELETE FROM t WHERE id = 1"));
  CHECK_FALSE(point_of("UPDATE t SET v = 1"));
  CHECK_FALSE(point_of("INSERT INTO t VALUES (1)"));
  CHECK_FALSE(point_of("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE"));
  CHECK_FALSE(point_of("UPDATE t SET v = 1 WHERE id = 1; UPDATE t SET v = 1 WHERE id = 2"));
  CHECK_FALSE(point_of("UPDATE t SET v = 1 WHERE $1::float4 IS NOT NULL AND id = $1"));
  check_point("UPDATE t SET v = $1 WHERE id = $2 AND k = $1", {"", "t"}, {parameter("id", 2)});
}

TEST_CASE("integer_value reads only plain integers") {
  CHECK(integer_value("0") == 0);
  CHECK(integer_value("007") == 7);
  CHECK(integer_value("-42") == -42);
  CHECK(integer_value("9223372036854775807") == INT64_MAX);
  CHECK(integer_value("-9223372036854775808") == INT64_MIN);
  for (const char* text :
       {"", "-", "+1", " 1", "1 ", "1.0", "1e3", "0x10", "1_000", "--1", "9223372036854775808"}) {
    INFO("text: ", text);
    CHECK_FALSE(integer_value(text));
  }
}
