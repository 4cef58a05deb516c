#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "invalidation/statement_analysis.hpp"

#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "test_support.hpp"

using namespace pgstash::invalidation;
using pgstash::invalidation::test::checked_analyze;
using pgstash::invalidation::test::only;
using pgstash::invalidation::test::reset;
using pgstash::invalidation::test::set;

namespace {

void check_settings(const statement_effects& fx, const std::vector<setting_change>& expected) {
  REQUIRE(fx.settings.size() == expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) CHECK(fx.settings[i] == expected[i]);
}

// The effects of `sql`, which must be exactly one setting change.
setting_change single_setting(const std::string& sql) {
  INFO("sql: ", sql);
  const statement_effects fx = only(sql);
  REQUIRE(fx.settings.size() == 1);
  statement_effects rest = fx;
  rest.settings.clear();
  CHECK(rest == statement_effects{});
  return fx.settings[0];
}

}  // namespace

TEST_CASE("empty and comment-only texts have no statements") {
  for (const std::string sql :
       {"", "   \n\t", "-- just a comment", "/* a /* nested */ comment */", ";", " ; ;; "}) {
    INFO("sql: ", sql);
    const analysis a = checked_analyze(sql);
    CHECK_FALSE(a.parse_error);
    CHECK(a.statements.empty());
    CHECK_FALSE(a.any_effect());
  }
}

TEST_CASE("parse errors report no statements and no effect") {
  for (const std::string sql :
       {"SELECT 1 FROM", "SET", "BEGIN; SELEC 1; COMMIT", "SELECT 'unterminated",
        "SET search_path = ", "SET x TO 'a' 'b'", "/* unterminated"}) {
    INFO("sql: ", sql);
    const analysis a = checked_analyze(sql);
    CHECK(a.parse_error);
    CHECK(a.statements.empty());
    CHECK_FALSE(a.any_effect());
  }
}

TEST_CASE("ordinary statements have default effects") {
  const analysis a = checked_analyze(
      "SELECT 1; INSERT INTO t VALUES (1); UPDATE t SET a = 2; DELETE FROM t; CREATE TABLE u (a "
      "int)");
  REQUIRE(a.statements.size() == 5);
  for (const statement_effects& fx : a.statements) CHECK(fx == statement_effects{});
  CHECK_FALSE(a.any_effect());
}

TEST_CASE("SET forms: names and exact value_sql") {
  struct row {
    std::string sql;
    std::string name;
    std::string value_sql;
  };
  const row rows[] = {
      {"SET search_path = '$user', public", "search_path", "'$user', 'public'"},
      {"SET search_path TO \"$user\", public", "search_path", "'$user', 'public'"},
      {"set SEARCH_PATH to A, \"B\"", "search_path", "'a', 'B'"},
      {"SET search_path = 'a,b'", "search_path", "'a,b'"},
      {"SET TIME ZONE 'Europe/Paris'", "timezone", "'Europe/Paris'"},
      {"SET timezone = 'UTC'", "timezone", "'UTC'"},
      {"SET TIME ZONE -7", "timezone", "-7"},
      {"SET TIME ZONE 5.5", "timezone", "5.5"},
      {"SET TIME ZONE INTERVAL '+02:00'", "timezone", "'INTERVAL ''+02:00'''"},
      {"SET TIME ZONE INTERVAL '-05:30' HOUR TO MINUTE", "timezone", "'INTERVAL ''-05:30'''"},
      {"SET NAMES 'UTF8'", "client_encoding", "'UTF8'"},
      {"SET client_encoding TO 'LATIN1'", "client_encoding", "'LATIN1'"},
      {"SET SCHEMA 'app'", "search_path", "'app'"},
      {"SET ROLE admin", "role", "'admin'"},
      {"SET ROLE NONE", "role", "'none'"},
      {"SET SESSION ROLE 'Admin'", "role", "'Admin'"},
      {"SET XML OPTION DOCUMENT", "xmloption", "'DOCUMENT'"},
      {"SET statement_timeout = 5000", "statement_timeout", "5000"},
      {"SET statement_timeout = 0", "statement_timeout", "0"},
      {"SET statement_timeout = '5s'", "statement_timeout", "'5s'"},
      {"SET extra_float_digits = -1", "extra_float_digits", "-1"},
      // libpg_query 15-4.0.0's JSON drops integers <= 0; they are read back from the text.
      {"SET extra_float_digits = - 2", "extra_float_digits", "-2"},
      {"SET extra_float_digits = -/* c */ 3", "extra_float_digits", "-3"},
      {"SET extra_float_digits = -0", "extra_float_digits", "0"},
      {"SET app.n = -2147483648", "app.n", "-2147483648"},
      {"SET app.n = 2147483647", "app.n", "2147483647"},
      {"SET application_name = ''", "application_name", "''"},
      {"SET seed = -0.5", "seed", "-0.5"},
      {"SET seed TO +0.25", "seed", "0.25"},
      {"SET work_mem = 99999999999", "work_mem", "99999999999"},
      {"SET SESSION work_mem = '64MB'", "work_mem", "'64MB'"},
      {"SET enable_seqscan = off", "enable_seqscan", "'off'"},
      {"SET enable_seqscan TO true", "enable_seqscan", "'true'"},
      {"SET datestyle = iso, mdy", "datestyle", "'iso', 'mdy'"},
      {"SET app.tenant = 'acme'", "app.tenant", "'acme'"},
      {"SET \"App\".\"Tenant\" = 42", "app.tenant", "42"},
      {"SET application_name = 'it''s'", "application_name", "'it''s'"},
      {"SET application_name = E'a\\\\b\\'c'", "application_name", "E'a\\\\b''c'"},
      {"SET application_name = U&'d\\0061t'", "application_name", "'dat'"},
      {"SET application_name = $$dollar$$", "application_name", "'dollar'"},
      {"SET application_name = 'con'\n'tinued'", "application_name", "'continued'"},
      {"SET x.y TO \"Foo\"", "x.y", "'Foo'"},
      {"SET /* a */ search_path /* b */ = /* c */ a /* d */, -- e\n b -- f", "search_path",
       "'a', 'b'"},
      {"\n\tSET\tsearch_path\n=\na ;", "search_path", "'a'"},
  };
  for (const row& r : rows) {
    INFO("sql: ", r.sql);
    const setting_change c = single_setting(r.sql);
    CHECK(c.what == setting_change::kind::set);
    CHECK(c.name == r.name);
    CHECK(c.value_sql == r.value_sql);

    // "SET name TO value_sql" parses back to the same setting, as does to_sql().
    CHECK(single_setting("SET " + c.name + " TO " + c.value_sql) == c);
    CHECK(single_setting(to_sql(c)) == c);
  }
}

TEST_CASE("SET ... TO DEFAULT and RESET are resets and RESET ALL is reset_all") {
  struct row {
    std::string sql;
    std::string name;
  };
  const row rows[] = {
      {"SET work_mem TO DEFAULT", "work_mem"},
      {"set Work_Mem = default", "work_mem"},
      {"RESET work_mem", "work_mem"},
      {"SET TIME ZONE LOCAL", "timezone"},
      {"SET TIME ZONE DEFAULT", "timezone"},
      {"RESET TIME ZONE", "timezone"},
      {"RESET ROLE", "role"},
      {"SET role TO DEFAULT", "role"},
      {"RESET \"App\".tenant", "app.tenant"},
      {"SET search_path TO DEFAULT", "search_path"},
  };
  for (const row& r : rows) {
    INFO("sql: ", r.sql);
    const setting_change c = single_setting(r.sql);
    CHECK(c == reset(r.name));
    CHECK(single_setting(to_sql(c)) == c);
  }
  const setting_change all = single_setting("reset all");
  CHECK(all.what == setting_change::kind::reset_all);
  CHECK(all.name.empty());
  CHECK(to_sql(all) == "RESET ALL");
  CHECK(single_setting(to_sql(all)) == all);
}

TEST_CASE("transaction-scoped SET forms are not session settings") {
  for (const std::string sql : {
           "SET LOCAL search_path = a", "SET LOCAL TIME ZONE 'UTC'",
           "SET LOCAL work_mem TO DEFAULT", "SET LOCAL ROLE admin",
           "SET LOCAL SESSION AUTHORIZATION bob", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
           "SET TRANSACTION READ ONLY, DEFERRABLE",
           "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
           "SET transaction_isolation = 'serializable'", "SET transaction_read_only TO on",
           "SET work_mem FROM CURRENT",  // the value does not change
       }) {
    INFO("sql: ", sql);
    CHECK(only(sql) == statement_effects{});
  }
}

TEST_CASE("SET SESSION CHARACTERISTICS sets the default_transaction_* settings") {
  // A deliberate departure from "ignore": these outlive the transaction.
  const statement_effects fx =
      only("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
  check_settings(fx, {set("default_transaction_isolation", "'repeatable read'"),
                      set("default_transaction_read_only", "1")});
  check_settings(
      only("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE, NOT DEFERRABLE"),
      {set("default_transaction_read_only", "0"), set("default_transaction_deferrable", "0")});
  for (const setting_change& c : fx.settings) CHECK(single_setting(to_sql(c)) == c);
}

TEST_CASE("SESSION AUTHORIZATION pins instead of being a setting") {
  for (const std::string sql : {"SET SESSION AUTHORIZATION bob", "SET SESSION AUTHORIZATION 'bob'",
                                "SET SESSION AUTHORIZATION DEFAULT", "RESET SESSION AUTHORIZATION",
                                "SELECT set_config('session_authorization', 'bob', false)"}) {
    INFO("sql: ", sql);
    const statement_effects fx = only(sql);
    CHECK(fx.pins == pin_session_authorization);
    CHECK(fx.settings.empty());
  }
}

TEST_CASE("SET values that cannot be reproduced pin as opaque") {
  for (const std::string sql :
       {"SET TIME ZONE INTERVAL '3' HOUR",  // '3' means hours only with the range
        "SET TIME ZONE INTERVAL '+02:00:30' HOUR TO MINUTE",
        "SET TIME ZONE INTERVAL(2) '+02:00'"}) {
    INFO("sql: ", sql);
    const statement_effects fx = only(sql);
    CHECK(fx.pins == pin_opaque_setting);
    CHECK(fx.settings.empty());
  }
}

TEST_CASE("set_config with constant arguments in a plain SELECT is a setting") {
  CHECK(single_setting("SELECT set_config('app.tenant', 'acme', false)") ==
        set("app.tenant", "'acme'"));
  CHECK(single_setting("select PG_CATALOG.SET_CONFIG('App.Tenant', 'it''s', FALSE) AS x") ==
        set("app.tenant", "'it''s'"));
  CHECK(single_setting("SELECT set_config('timezone', 'Europe/Paris', 'off')") ==
        set("timezone", "'Europe/Paris'"));
  CHECK(single_setting("SELECT set_config('a.b', 'x'::text, false::bool)") == set("a.b", "'x'"));
  CHECK(single_setting("SELECT set_config('a.b', 'x'::varchar, 'no'::boolean)") ==
        set("a.b", "'x'"));
  CHECK(single_setting("SELECT set_config('a.b', 'x', NULL)") ==
        set("a.b", "'x'"));  // NULL is false
  CHECK(single_setting("SELECT set_config('a.b', NULL, false)") == reset("a.b"));
  CHECK(single_setting("SELECT set_config('a.b', 'back\\slash', false)") ==
        set("a.b", "E'back\\\\slash'"));

  // search_path's raw value is an identifier list: rebuilt so SET quotes it the same.
  CHECK(single_setting(
            "SELECT set_config('search_path', 'Tenant_1, \"Mixed Case\",public', false)") ==
        set("search_path", "'tenant_1', 'Mixed Case', 'public'"));
  CHECK(single_setting("SELECT set_config('search_path', '\"$user\", public', false)") ==
        set("search_path", "'$user', 'public'"));
  CHECK(single_setting("SELECT set_config('search_path', 'a, \"\", b', false)") ==
        set("search_path", "'a', '', 'b'"));
  // pg_dump's opening line: an empty list, which SET cannot spell (it gives ""), kept as the
  // value itself and applied with set_config again.
  const setting_change empty{setting_change::kind::set, "search_path", "", true};
  CHECK(single_setting("SELECT pg_catalog.set_config('search_path', '', false)") == empty);
  CHECK(to_sql(empty) == "SELECT pg_catalog.set_config('search_path', '', false)");
  CHECK(single_setting(to_sql(empty)) == empty);
  CHECK(single_setting("SELECT set_config('search_path', ' ', false)") ==
        setting_change{setting_change::kind::set, "search_path", " ", true});

  const statement_effects two =
      only("SELECT set_config('a.b', '1', false), 42, pg_catalog.set_config('c.d', '2', false)");
  check_settings(two, {set("a.b", "'1'"), set("c.d", "'2'")});

  for (const std::string sql : {"SELECT set_config('app.tenant', 'acme', false)",
                                "SELECT set_config('search_path', 'a, \"B\"', false)"}) {
    const setting_change c = single_setting(sql);
    CHECK(single_setting("SET " + c.name + " TO " + c.value_sql) == c);
  }
}

TEST_CASE("set_config: local calls do nothing and the rest pins as opaque") {
  for (const std::string sql : {
           "SELECT set_config('a.b', 'x', true)", "SELECT set_config('a.b', 'x', 'on')",
           "SELECT set_config('a.b', $1, true)",  // local: whatever the value
           "SELECT set_config('a.b', 'x', true) FROM t",
           "SELECT set_config('transaction_isolation', 'serializable', false)",
           "SELECT \"SET_CONFIG\"('a', 'b', false)",  // not the built-in
       }) {
    INFO("sql: ", sql);
    CHECK(only(sql) == statement_effects{});
  }
  for (const std::string sql : {
           "SELECT set_config('a.b', $1, false)",
           "SELECT set_config($1, 'x', false)",
           "SELECT set_config('a.b', 'x', $1)",
           "SELECT set_config('a.b', 'x' || 'y', false)",
           "SELECT set_config('a.b', 'x'::varchar(1), false)",
           "SELECT set_config(setting_name => 'a.b', new_value => 'x', is_local => false)",
           "SELECT set_config('a.b', 'x', false) FROM t",
           "SELECT set_config('a.b', 'x', false) WHERE false",
           "SELECT set_config('a.b', 'x', false) LIMIT 0",
           "SELECT set_config('a.b', 'x', false), generate_series(1, 0)",
           "SELECT CASE WHEN $1 THEN set_config('a.b', 'x', false) END",
           "SELECT 1 UNION ALL SELECT set_config('a.b', 'x', false)::int",
           "WITH c AS (SELECT set_config('a.b', 'x', false)) SELECT 1",
           "UPDATE t SET a = set_config('a.b', 'x', false)",
           "PREPARE p AS SELECT set_config('a.b', 'x', false)",
           "SELECT myschema.set_config('a.b', 'x', false)",
           "SELECT set_config('search_path', 'a,,b', false)",
           "SELECT set_config('', 'x', false)",
       }) {
    INFO("sql: ", sql);
    const statement_effects fx = only(sql);
    CHECK((fx.pins & pin_opaque_setting) != 0);
    CHECK(fx.settings.empty());
  }
}

TEST_CASE("session advisory locks pin but transaction-level ones do not") {
  for (const std::string sql : {
           "SELECT pg_advisory_lock(1)",
           "SELECT pg_advisory_lock_shared(1, 2)",
           "SELECT pg_try_advisory_lock(42)",
           "select PG_TRY_ADVISORY_LOCK_SHARED(hashtext('x'))",
           "SELECT pg_catalog.pg_advisory_lock(1)",
           "SELECT * FROM jobs WHERE pg_try_advisory_lock(id) LIMIT 1",
           "WITH x AS (SELECT pg_advisory_lock(1)) SELECT * FROM x",
           "EXPLAIN ANALYZE SELECT pg_advisory_lock(1)",
           "UPDATE t SET a = 1 WHERE pg_try_advisory_lock(t.id)",
       }) {
    INFO("sql: ", sql);
    CHECK(only(sql).pins == pin_advisory_lock);
  }
  for (const std::string sql :
       {"SELECT pg_advisory_xact_lock(1)", "SELECT pg_try_advisory_xact_lock(1)",
        "SELECT pg_advisory_xact_lock_shared(1)", "SELECT pg_advisory_unlock(1)",
        "SELECT pg_advisory_unlock_all()"}) {
    INFO("sql: ", sql);
    CHECK(only(sql) == statement_effects{});
  }
}

TEST_CASE("LISTEN pins and UNLISTEN * is unlisten_all") {
  CHECK(only("LISTEN jobs").pins == pin_listen);
  CHECK(only("listen \"Jobs\"").pins == pin_listen);
  const statement_effects all = only("UNLISTEN *");
  CHECK(all.unlisten_all);
  CHECK(all.pins == pin_none);
  CHECK(only("UNLISTEN jobs") == statement_effects{});
  CHECK(only("NOTIFY jobs, 'x'") == statement_effects{});
}

TEST_CASE("temporary objects pin") {
  for (const std::string sql : {
           "CREATE TEMP TABLE t (a int)",
           "CREATE TEMPORARY TABLE t (a int)",
           "create local temporary table t (a int)",
           "CREATE GLOBAL TEMP TABLE t (a int)",
           "CREATE TEMP TABLE IF NOT EXISTS t (a serial)",
           "CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS",
           "CREATE TEMP TABLE t (a int) ON COMMIT PRESERVE ROWS",
           "CREATE TEMP TABLE t AS SELECT 1 AS a",
           "CREATE TEMP VIEW v AS SELECT 1",
           "CREATE OR REPLACE TEMPORARY VIEW v AS SELECT 1",
           "CREATE TEMP SEQUENCE s",
           "CREATE TABLE pg_temp.t (a int)",
           "CREATE TABLE \"pg_temp\".t (a int)",
           "CREATE VIEW pg_temp.v AS SELECT 1",
           "SELECT 1 AS a INTO TEMP t",
           "SELECT 1 AS a INTO TEMPORARY TABLE t",
           "SELECT * INTO pg_temp.t FROM u",
           "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'select 1'",
           "CREATE TYPE pg_temp.pair AS (a int, b int)",
           "CREATE DOMAIN pg_temp.d AS int",
       }) {
    INFO("sql: ", sql);
    CHECK(only(sql).pins == pin_temp_object);
  }
  // Dropped at commit: nothing outlives the transaction.
  for (const std::string sql :
       {"CREATE TEMP TABLE t (a int) ON COMMIT DROP",
        "CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1", "CREATE TABLE t (a int)",
        "CREATE UNLOGGED TABLE t (a int)", "SELECT 1 AS a INTO t", "CREATE TABLE temp (a int)"}) {
    INFO("sql: ", sql);
    CHECK(only(sql) == statement_effects{});
  }
}

TEST_CASE("DECLARE ... WITH HOLD pins") {
  CHECK(only("DECLARE c CURSOR WITH HOLD FOR SELECT 1").pins == pin_hold_cursor);
  CHECK(only("declare \"C\" binary scroll cursor with hold for select * from t").pins ==
        pin_hold_cursor);
  CHECK(only("DECLARE c CURSOR FOR SELECT 1") == statement_effects{});
  CHECK(only("DECLARE c NO SCROLL CURSOR WITHOUT HOLD FOR SELECT 1") == statement_effects{});
}

TEST_CASE("LOAD pins") { CHECK(only("LOAD 'auto_explain'").pins == pin_load); }

TEST_CASE("PREPARE records the name and the statement's own text") {
  statement_effects fx = only("PREPARE q1 (int, text) AS SELECT $1, $2");
  CHECK(fx.prepare_name == "q1");
  CHECK(fx.prepare_sql == "PREPARE q1 (int, text) AS SELECT $1, $2");
  CHECK(fx.prepare_returns_rows);
  CHECK(fx.prepare_parameters == 2);
  fx.prepare_name.clear();
  fx.prepare_sql.clear();
  fx.prepare_returns_rows = false;
  fx.prepare_parameters = 0;
  CHECK(fx == statement_effects{});
  // Parameters: as many as declared, or as the highest $n if more.
  CHECK(only("PREPARE p AS SELECT $3 + (SELECT $1)").prepare_parameters == 3);
  CHECK(only("PREPARE p (int, int, int) AS SELECT $1").prepare_parameters == 3);
  CHECK(only("PREPARE p AS SELECT 1").prepare_parameters == 0);
  CHECK(only("EXECUTE p(1, 'a')").execute_arguments == 2);
  CHECK(only("EXECUTE p").execute_arguments == 0);
  // Whether its query returns rows: a write only with RETURNING.
  CHECK_FALSE(only("PREPARE w (int) AS INSERT INTO t VALUES ($1)").prepare_returns_rows);
  CHECK(only("PREPARE w (int) AS DELETE FROM t WHERE a = $1 RETURNING a").prepare_returns_rows);
  CHECK(only("PREPARE w AS VALUES (1)").prepare_returns_rows);

  const analysis a =
      checked_analyze("SELECT 1;\n  /* next */ -- one\n PREPARE \"Q2\" AS SELECT ';' ; SELECT 3");
  REQUIRE(a.statements.size() == 3);
  CHECK(a.statements[1].prepare_name == "Q2");
  CHECK(a.statements[1].prepare_sql == "PREPARE \"Q2\" AS SELECT ';'");
  CHECK(a.statements[0] == statement_effects{});
  CHECK(a.statements[2] == statement_effects{});

  // Unquoted names fold to lower case, as the server folds them.
  CHECK(only("prepare MyPlan as select 1").prepare_name == "myplan");

  // A last statement keeps its trailing comment, safely ended.
  fx = only("PREPARE q3 AS SELECT '--' -- tail  ");
  CHECK(fx.prepare_sql == "PREPARE q3 AS SELECT '--' -- tail\n");
}

TEST_CASE("prepare_sql replays to the same PREPARE") {
  for (const std::string sql :
       {"PREPARE a AS SELECT 1", "PREPARE b(int) AS UPDATE t SET x = $1 /* c */",
        "PREPARE c AS SELECT 'x' -- tail", "PREPARE d AS INSERT INTO t VALUES (1)"}) {
    INFO("sql: ", sql);
    const statement_effects fx = only(sql);
    const analysis again = checked_analyze(fx.prepare_sql + ";SELECT 1");
    REQUIRE(again.statements.size() == 2);
    CHECK(again.statements[0].prepare_name == fx.prepare_name);
    CHECK(again.statements[0].prepare_sql == fx.prepare_sql);
  }
}

TEST_CASE("PREPARE TRANSACTION is a transaction effect and not a prepared statement") {
  const statement_effects fx = only("PREPARE TRANSACTION 'gid-1'");
  CHECK(fx.transaction == transaction_effect::prepare_transaction);
  CHECK(fx.prepare_name.empty());
  CHECK(fx.prepare_sql.empty());
}

TEST_CASE("EXECUTE and DEALLOCATE") {
  CHECK(only("EXECUTE q1(1, 'a')").execute_name == "q1");
  CHECK(only("execute Q1").execute_name == "q1");
  CHECK(only("EXPLAIN ANALYZE EXECUTE q1(1)").execute_name == "q1");
  CHECK(only("CREATE TABLE t AS EXECUTE q1(1)").execute_name == "q1");

  statement_effects fx = only("DEALLOCATE q1");
  CHECK(fx.deallocate_name == "q1");
  CHECK_FALSE(fx.deallocate_all);
  CHECK(only("DEALLOCATE PREPARE \"Q1\"").deallocate_name == "Q1");
  for (const std::string sql : {"DEALLOCATE ALL", "deallocate prepare all"}) {
    fx = only(sql);
    CHECK(fx.deallocate_all);
    CHECK(fx.deallocate_name.empty());
  }
}

TEST_CASE("DISCARD ALL is discard_all and other DISCARD targets have no effect") {
  const statement_effects fx = only("DISCARD ALL");
  CHECK(fx.discard_all);
  CHECK(fx.settings.empty());
  for (const std::string sql :
       {"DISCARD PLANS", "DISCARD SEQUENCES", "DISCARD TEMP", "DISCARD TEMPORARY"}) {
    INFO("sql: ", sql);
    CHECK(only(sql) == statement_effects{});
  }
}

TEST_CASE("transaction control statements") {
  struct row {
    std::string sql;
    transaction_effect effect;
  };
  const row rows[] = {
      {"BEGIN", transaction_effect::begin},
      {"begin work", transaction_effect::begin},
      {"BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY", transaction_effect::begin},
      {"START TRANSACTION", transaction_effect::begin},
      {"COMMIT", transaction_effect::commit},
      {"END", transaction_effect::commit},
      {"commit transaction", transaction_effect::commit},
      {"COMMIT AND CHAIN", transaction_effect::commit},
      {"ROLLBACK", transaction_effect::rollback},
      {"ABORT", transaction_effect::rollback},
      {"SAVEPOINT s1", transaction_effect::savepoint},
      {"RELEASE s1", transaction_effect::release_savepoint},
      {"RELEASE SAVEPOINT s1", transaction_effect::release_savepoint},
      {"ROLLBACK TO s1", transaction_effect::rollback_to_savepoint},
      {"ROLLBACK TO SAVEPOINT s1", transaction_effect::rollback_to_savepoint},
      {"PREPARE TRANSACTION 'x'", transaction_effect::prepare_transaction},
      {"COMMIT PREPARED 'x'", transaction_effect::none},
      {"ROLLBACK PREPARED 'x'", transaction_effect::none},
  };
  for (const row& r : rows) {
    INFO("sql: ", r.sql);
    statement_effects fx = only(r.sql);
    CHECK(fx.transaction == r.effect);
    const bool names_savepoint = r.effect == transaction_effect::savepoint ||
                                 r.effect == transaction_effect::release_savepoint ||
                                 r.effect == transaction_effect::rollback_to_savepoint;
    CHECK(fx.savepoint_name == (names_savepoint ? "s1" : ""));
    fx.transaction = transaction_effect::none;
    fx.savepoint_name.clear();
    CHECK(fx == statement_effects{});
  }
}

TEST_CASE("multi-statement strings give one entry per statement in order") {
  const analysis a = checked_analyze("BEGIN; SET search_path = a, b; COMMIT");
  CHECK_FALSE(a.parse_error);
  REQUIRE(a.statements.size() == 3);
  CHECK(a.statements[0].transaction == transaction_effect::begin);
  check_settings(a.statements[1], {set("search_path", "'a', 'b'")});
  CHECK(a.statements[1].transaction == transaction_effect::none);
  CHECK(a.statements[2].transaction == transaction_effect::commit);
  CHECK(a.any_effect());

  const analysis b = checked_analyze(
      "select 1;; LISTEN x ;\nSET a.b = 1 -- c ; not a statement\n; RESET a.b;"
      "SELECT set_config('a.b', '2', false); DISCARD ALL");
  REQUIRE(b.statements.size() == 6);
  CHECK(b.statements[0] == statement_effects{});
  CHECK(b.statements[1].pins == pin_listen);
  check_settings(b.statements[2], {set("a.b", "1")});
  check_settings(b.statements[3], {reset("a.b")});
  check_settings(b.statements[4], {set("a.b", "'2'")});
  CHECK(b.statements[5].discard_all);
}

TEST_CASE("text that is not UTF-8 (a LATIN1 client) keeps its bytes") {
  const std::string value = "SET application_name = 'caf\xe9'";
  CHECK(single_setting(value) == set("application_name", "'caf\xe9'"));
  CHECK(single_setting("SELECT set_config('app.n\xe4me', 'gr\xfc\xdf', false)") ==
        set("app.n\xe4me", "'gr\xfc\xdf'"));

  const analysis a =
      checked_analyze("SELECT '\xe9\xe9'; PREPARE p\xe9 AS SELECT '\xff' ; SELECT 1");
  REQUIRE(a.statements.size() == 3);
  CHECK(a.statements[1].prepare_name == "p\xe9");
  CHECK(a.statements[1].prepare_sql == "PREPARE p\xe9 AS SELECT '\xff'");
  // Valid UTF-8 that looks like the private-use mapping is left alone.
  CHECK(single_setting("SET application_name = '\xee\x82\x80'") ==
        set("application_name", "'\xee\x82\x80'"));
}

TEST_CASE("text after an embedded NUL is ignored") {
  const std::string sql("SET a.b = 1;\0 SET c.d = 2", 25);
  const analysis a = checked_analyze(sql);
  REQUIRE(a.statements.size() == 1);
  check_settings(a.statements[0], {set("a.b", "1")});
}

TEST_CASE("deeply nested expressions are walked without recursion") {
  std::string sql = "SELECT 1";
  for (int i = 0; i < 3000; ++i) sql += " + 1";
  sql += " + pg_advisory_lock(1)";
  CHECK(only(sql).pins == pin_advisory_lock);
}

TEST_CASE("to_sql quotes every name component") {
  CHECK(to_sql(set("search_path", "'a'")) == "SET \"search_path\" TO 'a'");
  CHECK(to_sql(set("app.user", "1")) == "SET \"app\".\"user\" TO 1");
  CHECK(to_sql(reset("app.we\"ird")) == "RESET \"app\".\"we\"\"ird\"");
  // app.user cannot be written unquoted (USER is reserved); to_sql can.
  const setting_change c = single_setting("SET app.\"user\" = 'x'");
  CHECK(c == set("app.user", "'x'"));
  CHECK(checked_analyze("SET " + c.name + " TO " + c.value_sql).parse_error);
  CHECK(single_setting(to_sql(c)) == c);
}
