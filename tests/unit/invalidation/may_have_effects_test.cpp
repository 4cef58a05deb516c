#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "invalidation/statement_analysis.hpp"
#include "test_support.hpp"

using namespace pgstash::invalidation;
using pgstash::invalidation::test::checked_analyze;

namespace {

// What ORMs, drivers and pgbench send most: the pre-filter should clear it.
const std::vector<std::string> k_ordinary = {
    "SELECT 1",
    "select now()",
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
    "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, "
    "CURRENT_TIMESTAMP)",
    "SELECT \"users\".* FROM \"users\" WHERE \"users\".\"id\" = $1 LIMIT $2",
    "SELECT \"auth_user\".\"id\", \"auth_user\".\"password\", \"auth_user\".\"last_login\" FROM "
    "\"auth_user\" WHERE \"auth_user\".\"username\" = $1 LIMIT 21",
    "INSERT INTO \"orders\" (\"user_id\", \"total\", \"created_at\") VALUES ($1, $2, $3) RETURNING "
    "\"id\"",
    "UPDATE \"orders\" SET \"status\" = $1, \"updated_at\" = $2 WHERE \"orders\".\"id\" = $3",
    "DELETE FROM \"sessions\" WHERE \"sessions\".\"expires_at\" < $1",
    "SELECT u0.\"id\", u0.\"name\" FROM \"users\" AS u0 INNER JOIN \"orders\" AS o1 ON "
    "o1.\"user_id\" = "
    "u0.\"id\" WHERE (o1.\"total\" > $1) ORDER BY u0.\"id\" LIMIT 50",
    "select this_.id as id1_0_0_, this_.name as name2_0_0_ from customer this_ where this_.id=$1",
    "SELECT count(*) FROM items WHERE category_id IN ($1, $2, $3) AND price BETWEEN 10 AND 20.5",
    "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'it''s'), (3, 'SET search_path = evil; BEGIN')",
    "INSERT INTO logs (msg) VALUES ('LISTEN; set_config; pg_advisory_lock; temp; PREPARE')",
    "UPDATE t SET settings = settings || '{\"a\": 1}'::jsonb WHERE id = 7",
    "SELECT * FROM t WHERE name LIKE 'abc%' ORDER BY created_at DESC NULLS LAST OFFSET 10",
    "WITH recent AS (SELECT * FROM events WHERE at > now() - interval '1 day') SELECT count(*) "
    "FROM recent",
    "SELECT a, sum(b) OVER (PARTITION BY a ORDER BY c) FROM t GROUP BY a, b, c HAVING count(*) > 1",
    "INSERT INTO counters (k, v) VALUES ($1, 1) ON CONFLICT (k) DO UPDATE SET v = counters.v + 1",
    "UPDATE accounts SET balance = balance - 100.00 WHERE id = 1",
    "SELECT id FROM jobs WHERE state = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1",
    "SELECT 1 -- SET search_path = x; BEGIN",
    "/* BEGIN; LISTEN x; set_config */ SELECT 1",
    "SELECT /* nested /* SET */ comment */ 2",
    "/*controller='users',action='show'*/ SELECT * FROM users WHERE id = $1",
    "SELECT x::text, y::numeric(10,2), '2024-01-01'::date FROM t",
    "SELECT $1::int4 + 2e3, 1.5, .5, 1e-3 FROM t",
    "SELECT \"ëxtra\", ünicode FROM tëst",
    "SELECT a FROM t; SELECT b FROM u; UPDATE v SET c = 1",
    "SELECT set_configuration, temperature, held, executed FROM t",
    "CREATE TABLE settings (id int)",
    "ANALYZE t",
    "VACUUM t",
};

// One or more examples of every rule that makes an effect.
const std::vector<std::string> k_effectful = {
    "SET search_path = '$user', public",
    "set time zone 'UTC'",
    "SET NAMES 'UTF8'",
    "SET SCHEMA 'app'",
    "SET ROLE admin",
    "SET work_mem TO DEFAULT",
    "RESET work_mem",
    "RESET ALL",
    "SET SESSION AUTHORIZATION bob",
    "RESET SESSION AUTHORIZATION",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "SET TIME ZONE INTERVAL '3' HOUR",
    "SELECT set_config('app.tenant', '7', false)",
    "SELECT set_config('app.tenant', $1, false)",
    "SELECT \"set_config\"('app.tenant', '7', false)",
    "SELECT pg_catalog.\"set_config\"('a.b', 'x', false)",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_advisory_lock_shared(1)",
    "SELECT pg_try_advisory_lock(1)",
    "SELECT \"pg_try_advisory_lock_shared\"(1)",
    "LISTEN jobs",
    "UNLISTEN *",
    "CREATE TEMP TABLE t (a int)",
    "CREATE TEMPORARY VIEW v AS SELECT 1",
    "CREATE TEMP SEQUENCE s",
    "CREATE TABLE pg_temp.t (a int)",
    "CREATE TABLE \"pg_temp\".t (a int)",
    "SELECT 1 AS a INTO TEMP t",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "LOAD 'auto_explain'",
    "PREPARE q AS SELECT 1",
    "EXECUTE q",
    "EXPLAIN EXECUTE q",
    "DEALLOCATE q",
    "DEALLOCATE ALL",
    "DISCARD ALL",
    "BEGIN",
    "START TRANSACTION",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT s",
    "RELEASE s",
    "ROLLBACK TO s",
    "PREPARE TRANSACTION 'x'",
    "SELECT 1; SET a.b = 1",
    "SELECT 1;SET a.b=1",
    "/* leading */ SET a.b = 1",
    "-- leading\nBEGIN",
    "  \n\tcommit",
    "SELECT 'x';begin",
    "UPDATE t SET a = 1; COMMIT",
    "SELECT set_config('a.b', 'back\\slash', false)",
};

// Texts the pre-filter must call "maybe" because it cannot see through them.
const std::vector<std::string> k_doubtful = {
    "SELECT $$ anything $$", "SELECT $tag$ x $tag$",      "SELECT E'\\' SET x = 1'",
    "SELECT 'a\\'",          "SELECT U&\"\\0070g_temp\"", "SELECT 'unterminated",
    "SELECT \"unterminated", "SELECT /* unterminated",
};

// Variants of a text that must not change what it does: case, and the
// whitespace between tokens (spaces, newlines, comments).
std::vector<std::string> variants(const std::string& sql) {
  std::vector<std::string> out{sql};
  std::string upper = sql, lower = sql;
  for (char& c : upper) c = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c;
  for (char& c : lower) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
  out.push_back(upper);
  out.push_back(lower);
  for (const char* gap : {"  ", "\n", "\t\r\n", " /* c; SET */ ", " -- c; SET\n", "/**/"}) {
    std::string v;
    for (char c : sql) {
      if (c == ' ')
        v += gap;
      else
        v += c;
    }
    out.push_back(v);
  }
  out.push_back("/* lead */ " + sql);
  out.push_back(";" + sql + ";");
  out.push_back("SELECT 1; " + sql);
  return out;
}

}  // namespace

TEST_CASE("pre-filter: ordinary statements are cleared") {
  for (const std::string& sql : k_ordinary) {
    INFO("sql: ", sql);
    CHECK_FALSE(may_have_effects(sql));
    const analysis a = checked_analyze(sql);
    CHECK_FALSE(a.parse_error);
    CHECK_FALSE(a.any_effect());
  }
}

TEST_CASE("pre-filter: every effectful example is flagged") {
  for (const std::string& sql : k_effectful) {
    INFO("sql: ", sql);
    CHECK(checked_analyze(sql).any_effect());
    CHECK(may_have_effects(sql));
  }
}

TEST_CASE("pre-filter: says maybe when in doubt") {
  for (const std::string& sql : k_doubtful) {
    INFO("sql: ", sql);
    CHECK(may_have_effects(sql));
  }
}

TEST_CASE("pre-filter: mid-statement keywords are not statement starts") {
  CHECK_FALSE(may_have_effects("UPDATE t SET a = 1"));
  CHECK_FALSE(may_have_effects("SELECT begin, commit, listen, load FROM t"));
  CHECK_FALSE(may_have_effects("SELECT \"SET\" FROM t"));
  CHECK(may_have_effects("SELECT 1; BEGIN"));
  CHECK(may_have_effects("SELECT \"pg_temp_3\".x FROM y"));
  CHECK(may_have_effects("SELECT \"a\"\"b\", \"pg_temp\"\"x\" FROM y"));  // "" inside a name
  CHECK_FALSE(may_have_effects("SELECT \"a\"\"b\", \"x\"\"\" FROM y"));
  CHECK(may_have_effects("SELECT * FROM t WHERE id = 1; -- c\n  RESET ALL"));
}

TEST_CASE("property: no effect escapes the pre-filter") {
  std::vector<std::string> all;
  for (const auto* list : {&k_ordinary, &k_effectful, &k_doubtful})
    all.insert(all.end(), list->begin(), list->end());
  int checked = 0;
  int cleared = 0;
  for (const std::string& base : all) {
    for (const std::string& sql : variants(base)) {
      INFO("sql: ", sql);
      const bool maybe = may_have_effects(sql);
      if (!maybe) {
        ++cleared;
        CHECK_FALSE(analyze(sql).any_effect());
      }
      ++checked;
    }
  }
  MESSAGE(checked, " texts checked, ", cleared, " cleared by the pre-filter");
  CHECK(cleared > 0);
}
