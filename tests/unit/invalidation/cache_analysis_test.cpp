#include "invalidation/cache_analysis.hpp"

#include <algorithm>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <doctest/doctest.h>

#include "invalidation/text_memo.hpp"

using namespace pgstash::invalidation;

namespace doctest {
template <>
struct StringMaker<uncacheable> {
  static String convert(uncacheable r) { return std::string(to_string(r)).c_str(); }
};
template <>
struct StringMaker<object_name> {
  static String convert(const object_name& n) { return (n.schema + "." + n.name).c_str(); }
};
template <>
struct StringMaker<std::vector<object_name>> {
  static String convert(const std::vector<object_name>& names) {
    std::string out = "{";
    for (const object_name& n : names) out += " " + n.schema + "." + n.name;
    return (out + " }").c_str();
  }
};
}  // namespace doctest

namespace {

cache_analysis of(const std::string& sql) {
  INFO("sql: ", sql);
  return analyze_for_cache(sql);
}

object_name rel(std::string name) { return {"", std::move(name)}; }
// Names are reported without a promised order.
bool same_names(std::vector<object_name> a, std::vector<object_name> b) {
  auto less = [](const object_name& x, const object_name& y) {
    return std::tie(x.schema, x.name) < std::tie(y.schema, y.name);
  };
  std::sort(a.begin(), a.end(), less);
  std::sort(b.begin(), b.end(), less);
  return a == b;
}
object_name rel(std::string schema, std::string name) {
  return {std::move(schema), std::move(name)};
}

// A SELECT that is cacheable as far as the text shows, reading `reads`.
void check_cacheable(const std::string& sql, const std::vector<object_name>& reads) {
  INFO("sql: ", sql);
  const cache_analysis a = analyze_for_cache(sql);
  CHECK(a.reason == uncacheable::none);
  CHECK(same_names(a.reads, reads));
  CHECK(a.writes.empty());
  CHECK(a.read_only);
  CHECK_FALSE(a.invalidates_database);
  CHECK_FALSE(a.truncate_cascade);
  CHECK_FALSE(a.leaves_read_committed);
}

void check_reason(const std::string& sql, uncacheable expected) {
  INFO("sql: ", sql);
  CHECK(analyze_for_cache(sql).reason == expected);
}

bool same_canonical(const std::string& a, const std::string& b) {
  const cache_analysis x = analyze_for_cache(a);
  const cache_analysis y = analyze_for_cache(b);
  REQUIRE(x.reason != uncacheable::parse_error);
  REQUIRE(y.reason != uncacheable::parse_error);
  return x.canonical_low == y.canonical_low && x.canonical_high == y.canonical_high;
}

}  // namespace

TEST_CASE("cache analysis: reason names are stable and distinct") {
  std::set<std::string_view> names;
  for (std::size_t i = 0; i < uncacheable_count; ++i) {
    names.insert(to_string(static_cast<uncacheable>(i)));
  }
  CHECK(names.size() == uncacheable_count);
  CHECK(to_string(uncacheable::none) == "none");
  CHECK(to_string(uncacheable::data_modifying_cte) == "data_modifying_cte");
  CHECK(to_string(uncacheable::notice_or_error) == "notice_or_error");
  CHECK(to_string(uncacheable::rule_or_config) == "rule_or_config");
}

TEST_CASE("cache analysis: plain reads are cacheable and name what they read") {
  check_cacheable("SELECT a FROM t WHERE id = $1", {rel("t")});
  check_cacheable("select * from S.T", {rel("s", "t")});
  check_cacheable(R"(SELECT * FROM "My Schema"."Odd""Name")", {rel("My Schema", "Odd\"Name")});
  check_cacheable("SELECT * FROM mydb.app.users", {rel("app", "users")});
  check_cacheable("TABLE t", {rel("t")});
  check_cacheable("SELECT * FROM ONLY parent", {rel("parent")});
  check_cacheable("SELECT * FROM a JOIN b USING (id) LEFT JOIN c ON c.id = b.id",
                  {rel("a"), rel("b"), rel("c")});
  check_cacheable("SELECT x FROM t1 UNION SELECT x FROM t2 EXCEPT SELECT x FROM t1",
                  {rel("t1"), rel("t2")});
  check_cacheable("SELECT (SELECT max(x) FROM s) FROM t WHERE EXISTS (SELECT 1 FROM u)",
                  {rel("t"), rel("u"), rel("s")});
  check_cacheable("SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.id = t.id) l",
                  {rel("t"), rel("u")});
  check_cacheable("SELECT * FROM (SELECT * FROM inner_t) sub", {rel("inner_t")});
  check_cacheable("SELECT * FROM my_view", {rel("my_view")});
  check_cacheable(
      "SELECT current_user, session_user, current_schema, current_catalog, user "
      "FROM t",
      {rel("t")});
}

TEST_CASE("cache analysis: WITH names are not relations, their bodies are read") {
  check_cacheable("WITH x AS (SELECT * FROM base) SELECT * FROM x", {rel("base")});
  // A qualified name is never a WITH item.
  check_cacheable("WITH x AS (SELECT 1) SELECT * FROM public.x", {rel("public", "x")});
  // A non-recursive body does not see its own name: that is the table.
  check_cacheable("WITH t AS (SELECT * FROM t) SELECT * FROM t", {rel("t")});
  // ...nor later names.
  check_cacheable("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b", {rel("b")});
  check_cacheable(
      "WITH RECURSIVE r(n) AS (SELECT id FROM tree UNION ALL "
      "SELECT r.n FROM r JOIN tree ON tree.parent = r.n) SELECT * FROM r",
      {rel("tree")});
  // Visible in subqueries, not outside its statement.
  check_cacheable("SELECT * FROM (WITH q AS (SELECT * FROM a) SELECT * FROM q) s, q",
                  {rel("q"), rel("a")});
  check_cacheable("WITH q AS (SELECT * FROM a) SELECT * FROM t WHERE id IN (SELECT id FROM q)",
                  {rel("t"), rel("a")});
}

TEST_CASE("cache analysis: functions called by name") {
  const cache_analysis a =
      of("SELECT lower(name), count(*) OVER (PARTITION BY upper(k)) FROM t "
         "WHERE pg_catalog.length(name) > 2 GROUP BY app.bucket(x) HAVING sum(y) > 0 "
         "ORDER BY coalesce(z, 0), lower(name)");
  CHECK(a.reason == uncacheable::none);
  CHECK(a.read_only);
  CHECK(a.write_calls_functions);
  CHECK(a.functions.size() == 6);  // coalesce() is no function call
  for (const object_name& f : {rel("lower"), rel("count"), rel("upper"),
                               rel("pg_catalog", "length"), rel("app", "bucket"), rel("sum")}) {
    CHECK(std::find(a.functions.begin(), a.functions.end(), f) != a.functions.end());
  }
  // A function in FROM is a call; alone it reads no relation.
  const cache_analysis f = of("SELECT * FROM generate_series(1, 10) g");
  CHECK(f.functions == std::vector<object_name>{rel("generate_series")});
  CHECK(f.reason == uncacheable::no_relation);
  const cache_analysis g = of("SELECT * FROM t, report.summary(t.id)");
  CHECK(g.reason == uncacheable::none);
  CHECK(g.reads == std::vector<object_name>{rel("t")});
  CHECK(g.functions == std::vector<object_name>{rel("report", "summary")});
  // Operators are not functions.
  const cache_analysis o = of("SELECT a + b FROM t WHERE a = 1 AND b IS NOT NULL");
  CHECK(o.functions.empty());
  CHECK_FALSE(o.write_calls_functions);
}

TEST_CASE("cache analysis: one reason per kind of uncacheable read") {
  check_reason("", uncacheable::not_a_read);
  check_reason("SELECT FROM WHERE", uncacheable::parse_error);
  check_reason("SELECT 1; SELECT 2", uncacheable::several_statements);
  check_reason("SELECT * FROM t FOR UPDATE", uncacheable::locking_clause);
  check_reason("SELECT * FROM t FOR SHARE OF t SKIP LOCKED", uncacheable::locking_clause);
  check_reason("SELECT * FROM (SELECT * FROM t FOR KEY SHARE) s", uncacheable::locking_clause);
  check_reason("SELECT * INTO new_t FROM t", uncacheable::select_into);
  check_reason("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
               uncacheable::data_modifying_cte);
  check_reason("SELECT * FROM t TABLESAMPLE SYSTEM (10)", uncacheable::sample_or_tablesample);
  check_reason("SELECT * FROM pg_temp.scratch", uncacheable::temp_relation);
  check_reason("SELECT * FROM pg_temp_3.scratch", uncacheable::temp_relation);
  check_reason("SELECT 1", uncacheable::no_relation);
  check_reason("VALUES (1, 'a'), (2, 'b')", uncacheable::no_relation);
  check_reason("SELECT * FROM unnest(ARRAY[1, 2])", uncacheable::no_relation);
  check_reason("WITH v AS (VALUES (1)) SELECT * FROM v", uncacheable::no_relation);
  for (const char* sql : {"EXPLAIN SELECT * FROM t", "SHOW search_path", "FETCH 10 FROM c",
                          "DECLARE c CURSOR FOR SELECT * FROM t", "COPY t TO STDOUT",
                          "PREPARE p AS SELECT * FROM t", "EXECUTE p", "CLOSE c", "MOVE NEXT c"}) {
    check_reason(sql, uncacheable::cursor_or_utility);
  }
  for (const char* sql : {"INSERT INTO t VALUES (1)", "BEGIN", "SET search_path = a",
                          "CREATE TABLE x (a int)", "LOCK TABLE t", "TRUNCATE t"}) {
    check_reason(sql, uncacheable::not_a_read);
  }
}

TEST_CASE("cache analysis: time functions") {
  for (const char* sql :
       {"SELECT now() FROM t", "SELECT * FROM t WHERE ts > pg_catalog.now() - interval '1 day'",
        "SELECT CURRENT_TIMESTAMP FROM t", "SELECT * FROM t WHERE d = CURRENT_DATE",
        "SELECT CURRENT_TIME(2) FROM t", "SELECT LOCALTIME FROM t", "SELECT LOCALTIMESTAMP FROM t",
        "SELECT statement_timestamp(), x FROM t", "SELECT transaction_timestamp() FROM t",
        "SELECT clock_timestamp() FROM t", "SELECT timeofday() FROM t",
        "SELECT age(born) FROM people", "SELECT * FROM t ORDER BY ts < now()",
        "SELECT * FROM t WHERE ts > 'now'::timestamptz", "SELECT * FROM t WHERE d = date 'Today'",
        "SELECT * FROM t WHERE ts < 'tomorrow 10:00'"}) {
    check_reason(sql, uncacheable::time_function);
  }
  // age() with two arguments is a difference, not the clock.
  check_reason("SELECT age(finished, started) FROM runs", uncacheable::none);
  check_reason("SELECT * FROM t WHERE note = 'known'", uncacheable::none);
}

TEST_CASE("cache analysis: session functions") {
  for (const char* sql : {"SELECT nextval('s')",
                          "SELECT currval('s') FROM t",
                          "SELECT lastval()",
                          "SELECT setval('s', 10)",
                          "SELECT pg_backend_pid()",
                          "SELECT inet_client_addr() FROM t",
                          "SELECT inet_server_port()",
                          "SELECT txid_current()",
                          "SELECT pg_current_xact_id()",
                          "SELECT pg_current_wal_lsn()",
                          "SELECT random() FROM t",
                          "SELECT gen_random_uuid()",
                          "SELECT pg_sleep(1)",
                          "SELECT set_config('app.x', '1', false)",
                          "SELECT pg_advisory_lock(1)",
                          "SELECT pg_try_advisory_xact_lock(1)",
                          "SELECT pg_notify('c', 'x')",
                          "SELECT lo_import('/tmp/x')",
                          "SELECT * FROM dblink('db', 'SELECT 1') AS t(a int)",
                          "SELECT pg_read_file('x')",
                          "SELECT current_query()",
                          "SELECT * FROM t WHERE id = pg_catalog.nextval('s')"}) {
    INFO("sql: ", sql);
    const cache_analysis a = analyze_for_cache(sql);
    CHECK(a.reason == uncacheable::session_function);
    CHECK_FALSE(a.read_only);  // sequences, locks, notifications, settings: not a pure read
    CHECK(a.write_calls_functions);
  }
  // dblink may write this database through another connection.
  CHECK(of("SELECT dblink_exec('db', 'DELETE FROM t')").invalidates_database);
  CHECK_FALSE(of("SELECT nextval('s')").invalidates_database);
}

TEST_CASE("cache analysis: system catalogs") {
  for (const char* sql :
       {"SELECT * FROM pg_catalog.pg_class", "SELECT * FROM information_schema.tables",
        "SELECT * FROM pg_class", "SELECT * FROM pg_toast.pg_toast_1234",
        "SELECT * FROM t JOIN pg_namespace n ON n.oid = t.ns",
        "SELECT * FROM t WHERE rel = 't'::regclass", "SELECT CAST('int4' AS regtype) FROM t",
        "SELECT * FROM t WHERE rel = ANY('{a,b}'::regclass[])"}) {
    check_reason(sql, uncacheable::system_catalog);
  }
  CHECK(of("SELECT * FROM pg_class").reads == std::vector<object_name>{rel("pg_class")});
  // Only the schema prefix counts when qualified.
  check_reason("SELECT * FROM app.pg_like_name", uncacheable::none);
}

TEST_CASE("cache analysis: the most telling reason wins") {
  check_reason("SELECT now() FROM pg_class FOR UPDATE", uncacheable::locking_clause);
  check_reason("SELECT now()", uncacheable::time_function);  // not no_relation
  check_reason("SELECT nextval('s'), now()", uncacheable::session_function);
  check_reason("SELECT * FROM pg_temp.x, pg_class", uncacheable::temp_relation);
  check_reason("SELECT 1; INSERT INTO t VALUES (1)", uncacheable::several_statements);
}

TEST_CASE("cache analysis: parse errors report nothing and write nothing") {
  for (const char* sql :
       {"SELEC 1", "INSERT INTO t VALUES (", "SELECT 1; DROP TABL t", "SELECT 'unterminated"}) {
    INFO("sql: ", sql);
    const cache_analysis a = analyze_for_cache(sql);
    CHECK(a.reason == uncacheable::parse_error);
    CHECK_FALSE(a.read_only);
    CHECK_FALSE(a.invalidates_database);
    CHECK(a.writes.empty());
    CHECK(a.reads.empty());
    CHECK(a.canonical_low == 0);
    CHECK(a.canonical_high == 0);
  }
}

TEST_CASE("cache analysis: INSERT, UPDATE, DELETE, MERGE write their targets") {
  const cache_analysis i = of("INSERT INTO app.t (a) SELECT b FROM src WHERE c > 0");
  CHECK(i.reason == uncacheable::not_a_read);
  CHECK(i.writes == std::vector<object_name>{rel("app", "t")});
  CHECK(i.reads == std::vector<object_name>{rel("src")});
  CHECK_FALSE(i.read_only);
  CHECK_FALSE(i.invalidates_database);
  CHECK_FALSE(i.write_calls_functions);

  const cache_analysis u = of("UPDATE t SET a = u.a FROM u WHERE t.id = u.id");
  CHECK(u.writes == std::vector<object_name>{rel("t")});
  CHECK(u.reads == std::vector<object_name>{rel("u")});
  CHECK_FALSE(u.read_only);

  const cache_analysis d = of("DELETE FROM t USING u WHERE t.id = u.id RETURNING t.*");
  CHECK(d.writes == std::vector<object_name>{rel("t")});
  CHECK(d.reads == std::vector<object_name>{rel("u")});

  const cache_analysis m =
      of("MERGE INTO target t USING source s ON t.id = s.id "
         "WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)");
  CHECK(m.writes == std::vector<object_name>{rel("target")});
  CHECK(m.reads == std::vector<object_name>{rel("source")});
  CHECK_FALSE(m.read_only);

  const cache_analysis c =
      of("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET n = t.n + 1");
  CHECK(c.writes == std::vector<object_name>{rel("t")});
  CHECK(c.reads.empty());

  // A write that calls a function: the function may write anything.
  const cache_analysis f = of("UPDATE t SET a = audit.touch(a)");
  CHECK(f.write_calls_functions);
  CHECK(f.functions == std::vector<object_name>{rel("audit", "touch")});
  CHECK_FALSE(f.invalidates_database);

  // WITH in a write: its bodies are read, its names are not.
  const cache_analysis w = of("WITH x AS (SELECT id FROM s) DELETE FROM t WHERE id IN (TABLE x)");
  CHECK(w.writes == std::vector<object_name>{rel("t")});
  CHECK(w.reads == std::vector<object_name>{rel("s")});
}

TEST_CASE("cache analysis: data-modifying CTEs write, whatever they return") {
  const cache_analysis a = of("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d");
  CHECK(a.reason == uncacheable::data_modifying_cte);
  CHECK(a.writes == std::vector<object_name>{rel("t")});
  CHECK(a.reads.empty());
  CHECK_FALSE(a.read_only);

  const cache_analysis b =
      of("WITH moved AS (DELETE FROM queue WHERE id = 1 RETURNING *), "
         "ins AS (INSERT INTO done SELECT * FROM moved RETURNING id) "
         "UPDATE stats SET n = n + 1 FROM ins");
  CHECK(same_names(b.writes, {rel("stats"), rel("done"), rel("queue")}));
  CHECK_FALSE(b.read_only);

  const cache_analysis c =
      of("WITH u AS (UPDATE t SET a = 1 WHERE id = 2 RETURNING id) SELECT * FROM other, u");
  CHECK(c.reason == uncacheable::data_modifying_cte);
  CHECK(c.writes == std::vector<object_name>{rel("t")});
  CHECK(c.reads == std::vector<object_name>{rel("other")});
}

TEST_CASE("cache analysis: SELECT INTO and CREATE TABLE AS create a table") {
  const cache_analysis s = of("SELECT * INTO archive FROM t WHERE old");
  CHECK(s.reason == uncacheable::select_into);
  CHECK(s.writes == std::vector<object_name>{rel("archive")});
  CHECK(s.reads == std::vector<object_name>{rel("t")});
  CHECK_FALSE(s.read_only);
  CHECK(s.invalidates_database);

  const cache_analysis c = of("CREATE TABLE archive AS SELECT * FROM t");
  CHECK(c.reason == uncacheable::not_a_read);
  CHECK(c.writes == std::vector<object_name>{rel("archive")});
  CHECK(c.invalidates_database);
  CHECK_FALSE(c.read_only);

  CHECK(of("CREATE MATERIALIZED VIEW mv AS SELECT 1").writes ==
        std::vector<object_name>{rel("mv")});
}

TEST_CASE("cache analysis: TRUNCATE, COPY, REFRESH") {
  const cache_analysis t = of("TRUNCATE a, s.b CASCADE");
  CHECK(t.writes == std::vector<object_name>{rel("a"), rel("s", "b")});
  CHECK(t.truncate_cascade);
  CHECK_FALSE(t.read_only);
  CHECK_FALSE(t.invalidates_database);
  CHECK_FALSE(of("TRUNCATE TABLE a RESTART IDENTITY").truncate_cascade);

  const cache_analysis in = of("COPY t (a, b) FROM STDIN WITH (FORMAT csv)");
  CHECK(in.reason == uncacheable::not_a_read);
  CHECK(in.writes == std::vector<object_name>{rel("t")});
  CHECK_FALSE(in.read_only);
  CHECK_FALSE(in.invalidates_database);

  const cache_analysis prog = of("COPY t FROM PROGRAM 'cat /tmp/x'");
  CHECK(prog.writes == std::vector<object_name>{rel("t")});
  CHECK(prog.invalidates_database);

  const cache_analysis out = of("COPY t TO STDOUT");
  CHECK(out.reason == uncacheable::cursor_or_utility);
  CHECK(out.read_only);
  CHECK(out.writes.empty());
  CHECK(out.reads == std::vector<object_name>{rel("t")});

  const cache_analysis q = of("COPY (SELECT * FROM t JOIN u USING (id)) TO STDOUT");
  CHECK(q.reason == uncacheable::cursor_or_utility);
  CHECK(q.read_only);
  CHECK(same_names(q.reads, {rel("t"), rel("u")}));

  const cache_analysis qw = of("COPY (DELETE FROM t RETURNING *) TO STDOUT");
  CHECK(qw.writes == std::vector<object_name>{rel("t")});
  CHECK_FALSE(qw.read_only);

  const cache_analysis r = of("REFRESH MATERIALIZED VIEW CONCURRENTLY app.mv");
  CHECK(r.writes == std::vector<object_name>{rel("app", "mv")});
  CHECK_FALSE(r.read_only);
  CHECK_FALSE(r.invalidates_database);
}

TEST_CASE("cache analysis: DDL invalidates the database, naming targets where it can") {
  struct ddl_case {
    const char* sql;
    std::vector<object_name> writes;
  };
  const ddl_case cases[] = {
      {"ALTER TABLE t ADD COLUMN c int", {rel("t")}},
      {"ALTER TABLE s.t RENAME TO u", {rel("s", "t")}},
      {"ALTER TABLE t RENAME COLUMN a TO b", {rel("t")}},
      {"ALTER TABLE t ENABLE ROW LEVEL SECURITY", {rel("t")}},
      {"DROP TABLE a, s.b CASCADE", {rel("a"), rel("s", "b")}},
      {"DROP VIEW IF EXISTS v", {rel("v")}},
      {"DROP MATERIALIZED VIEW mv", {rel("mv")}},
      {"DROP SEQUENCE sq", {rel("sq")}},
      {"CREATE OR REPLACE VIEW v AS SELECT * FROM t", {rel("v")}},
      {"CREATE TABLE n (a int)", {rel("n")}},
      {"CREATE INDEX ON t (a)", {rel("t")}},
      {"CREATE POLICY p ON t USING (owner = current_user)", {rel("t")}},
      {"DROP POLICY p ON t", {}},
      {"CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING", {rel("t")}},
      {"CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", {rel("t")}},
      {"CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", {}},
      {"GRANT SELECT ON t TO bob", {rel("t")}},
      {"REVOKE ALL ON TABLE t FROM bob", {rel("t")}},
      {"ALTER ROLE bob SET search_path = x", {}},
      {"ALTER USER bob WITH PASSWORD 'x'", {}},
      {"COMMENT ON TABLE t IS 'x'", {}},
      {"SECURITY LABEL ON TABLE t IS 'x'", {}},
      {"ALTER EXTENSION hstore UPDATE", {}},
      {"IMPORT FOREIGN SCHEMA remote FROM SERVER s INTO local", {}},
      {"DO $$ BEGIN DELETE FROM t; END $$", {}},
      {"CREATE TEMP TABLE tmp (a int)", {rel("tmp")}},
      {"ALTER SYSTEM SET work_mem = '1GB'", {}},
      {"LOAD 'auto_explain'", {}},
  };
  for (const ddl_case& c : cases) {
    INFO("sql: ", c.sql);
    const cache_analysis a = analyze_for_cache(c.sql);
    CHECK(a.reason == uncacheable::not_a_read);
    CHECK(a.invalidates_database);
    CHECK_FALSE(a.read_only);
    CHECK(a.writes == c.writes);
  }
}

TEST_CASE("cache analysis: CALL and EXECUTE may write anything") {
  const cache_analysis c = of("CALL app.process(1)");
  CHECK(c.invalidates_database);
  CHECK_FALSE(c.read_only);
  CHECK(c.write_calls_functions);
  CHECK(c.functions == std::vector<object_name>{rel("app", "process")});
  const cache_analysis e = of("EXECUTE stmt(1, 2)");
  CHECK(e.invalidates_database);
  CHECK_FALSE(e.read_only);
  CHECK(of("COMMIT PREPARED 'tx1'").invalidates_database);
  CHECK_FALSE(of("ROLLBACK PREPARED 'tx1'").invalidates_database);
}

TEST_CASE("cache analysis: LOCK and maintenance write nothing but are not reads") {
  for (const char* sql :
       {"LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "VACUUM t", "ANALYZE t", "CLUSTER t USING t_pkey",
        "REINDEX TABLE t", "CHECKPOINT", "NOTIFY chan, 'x'", "SET CONSTRAINTS ALL IMMEDIATE"}) {
    INFO("sql: ", sql);
    const cache_analysis a = analyze_for_cache(sql);
    CHECK(a.reason == uncacheable::not_a_read);
    CHECK(a.writes.empty());
    CHECK_FALSE(a.invalidates_database);
    CHECK_FALSE(a.read_only);
  }
}

TEST_CASE("cache analysis: session and transaction control are read-only") {
  for (const char* sql : {"BEGIN",
                          "START TRANSACTION READ ONLY",
                          "COMMIT",
                          "ROLLBACK",
                          "SAVEPOINT s",
                          "RELEASE SAVEPOINT s",
                          "ROLLBACK TO SAVEPOINT s",
                          "SET search_path = a, b",
                          "SET LOCAL statement_timeout = 0",
                          "RESET search_path",
                          "SET ROLE admin",
                          "SHOW TimeZone",
                          "DEALLOCATE ALL",
                          "DISCARD PLANS",
                          "LISTEN chan",
                          "UNLISTEN *",
                          "EXPLAIN SELECT * FROM t",
                          "EXPLAIN (ANALYZE false) DELETE FROM t",
                          "DECLARE c CURSOR FOR SELECT * FROM t",
                          "FETCH ALL FROM c",
                          "CLOSE ALL",
                          "PREPARE p AS DELETE FROM t",
                          "COPY t TO STDOUT",
                          "SELECT 1",
                          "-- nothing",
                          ""}) {
    INFO("sql: ", sql);
    const cache_analysis a = analyze_for_cache(sql);
    CHECK(a.read_only);
    CHECK(a.writes.empty());
    CHECK_FALSE(a.invalidates_database);
  }
}

TEST_CASE("cache analysis: EXPLAIN ANALYZE and cursors run their statement") {
  const cache_analysis e = of("EXPLAIN ANALYZE DELETE FROM t WHERE id = 1");
  CHECK(e.reason == uncacheable::cursor_or_utility);
  CHECK(e.writes == std::vector<object_name>{rel("t")});
  CHECK_FALSE(e.read_only);
  const cache_analysis e2 = of("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1");
  CHECK(e2.writes == std::vector<object_name>{rel("t")});
  CHECK(of("EXPLAIN (ANALYZE) SELECT * FROM t").read_only);
  const cache_analysis d = of("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE");
  CHECK(d.reason == uncacheable::cursor_or_utility);
  CHECK_FALSE(d.read_only);
}

TEST_CASE("cache analysis: leaving READ COMMITTED") {
  for (const char* sql :
       {"BEGIN ISOLATION LEVEL REPEATABLE READ", "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET default_transaction_isolation = 'repeatable read'",
        "SET default_transaction_isolation TO serializable",
        "SET transaction_isolation = 'serializable'",
        "SET default_transaction_isolation TO DEFAULT", "RESET default_transaction_isolation",
        "RESET ALL", "DISCARD ALL",
        "SELECT set_config('default_transaction_isolation', 'serializable', false)",
        "SELECT set_config($1, $2, false)"}) {
    INFO("sql: ", sql);
    const cache_analysis a = analyze_for_cache(sql);
    CHECK(a.leaves_read_committed);
    CHECK_FALSE(a.invalidates_database);
  }
  for (const char* sql :
       {"BEGIN", "BEGIN ISOLATION LEVEL READ COMMITTED", "BEGIN READ WRITE",
        "START TRANSACTION ISOLATION LEVEL READ UNCOMMITTED",
        "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET default_transaction_isolation = 'read committed'", "SET search_path = x",
        "RESET search_path", "SELECT set_config('app.tenant', '7', false)", "SELECT 1"}) {
    INFO("sql: ", sql);
    CHECK_FALSE(analyze_for_cache(sql).leaves_read_committed);
  }
}

TEST_CASE("cache analysis: DO, CALL, EXECUTE and DDL that runs queries run code") {
  for (const char* sql :
       {"DO $$BEGIN PERFORM 1; END$$", "CALL p(1)", "EXECUTE q(2)",
        "BEGIN; DO $$BEGIN NULL; END$$; COMMIT", "CREATE TABLE t2 AS SELECT set_tenant(7)",
        "CREATE TABLE t3 AS EXECUTE q", "CREATE MATERIALIZED VIEW mv AS SELECT f()",
        "ALTER TABLE t ADD c int DEFAULT f()", "CREATE EXTENSION hstore"}) {
    INFO("sql: ", sql);
    const cache_analysis a = analyze_for_cache(sql);
    CHECK(a.runs_code);
    CHECK(a.invalidates_database);
  }
  for (const char* sql :
       {"CREATE TABLE t (a int)", "DROP TABLE t", "CREATE INDEX i ON t (a)",
        "GRANT SELECT ON t TO x", "CREATE VIEW v AS SELECT 1", "SELECT 1", "UPDATE t SET a = 1"}) {
    INFO("sql: ", sql);
    CHECK_FALSE(analyze_for_cache(sql).runs_code);
  }
}

TEST_CASE("cache analysis: statements that change settings") {
  for (const char* sql :
       {"SET LOCAL app.tenant = 'b'", "SET search_path = x", "RESET ALL", "RESET TimeZone",
        "DISCARD ALL", "DISCARD TEMP", "BEGIN; SET LOCAL x.y = 1"}) {
    INFO("sql: ", sql);
    const cache_analysis a = analyze_for_cache(sql);
    CHECK(a.changes_settings);
    CHECK(a.read_only);
  }
  for (const char* sql : {"BEGIN", "SELECT 1", "SHOW search_path", "COMMIT"}) {
    INFO("sql: ", sql);
    CHECK_FALSE(analyze_for_cache(sql).changes_settings);
  }
  // A function call: not read-only, which stops hits by itself.
  CHECK_FALSE(of("SELECT set_config('app.tenant', 'b', true)").read_only);
}

TEST_CASE("cache analysis: several statements still report every write") {
  const cache_analysis a =
      of("BEGIN; UPDATE a SET x = 1; DELETE FROM b; TRUNCATE c CASCADE; COMMIT");
  CHECK(a.reason == uncacheable::several_statements);
  CHECK(a.writes == std::vector<object_name>{rel("a"), rel("b"), rel("c")});
  CHECK(a.truncate_cascade);
  CHECK_FALSE(a.read_only);
  CHECK_FALSE(a.invalidates_database);

  const cache_analysis r = of("SELECT 1; SELECT * FROM t; SHOW x");
  CHECK(r.reason == uncacheable::several_statements);
  CHECK(r.read_only);
  CHECK(r.writes.empty());

  const cache_analysis ddl = of("SELECT 1; DROP TABLE t");
  CHECK(ddl.invalidates_database);
  CHECK(ddl.writes == std::vector<object_name>{rel("t")});
}

TEST_CASE("cache analysis: canonical hash ignores spelling, not meaning") {
  CHECK(
      same_canonical("SELECT a, b FROM t WHERE id = 1", "  select A,b\n\tFROM T  where ID=1 ;  "));
  CHECK(same_canonical("SELECT a FROM t WHERE id = $1 -- trailing comment",
                       "/* leading */ SELECT a /* inner */ FROM t WHERE id = $1"));
  CHECK(same_canonical("SELECT * FROM t WHERE a = -1", "SELECT * FROM t WHERE a = - /* x */ 1"));
  CHECK(same_canonical("SELECT * FROM t WHERE a <> 2", "SELECT * FROM t WHERE a != 2"));

  // Constants.
  CHECK_FALSE(same_canonical("SELECT * FROM t WHERE id = 1", "SELECT * FROM t WHERE id = 2"));
  CHECK_FALSE(same_canonical("SELECT * FROM t WHERE s = 'a'", "SELECT * FROM t WHERE s = 'b'"));
  CHECK_FALSE(same_canonical("SELECT * FROM t WHERE a = 1 AND b = 2",
                             "SELECT * FROM t WHERE a = 2 AND b = 1"));
  CHECK_FALSE(same_canonical("SELECT * FROM t LIMIT 10", "SELECT * FROM t LIMIT 20"));
  CHECK_FALSE(same_canonical("SELECT 1.5 FROM t", "SELECT 1.50 FROM t"));  // numeric scale shows
  CHECK_FALSE(same_canonical("SELECT * FROM t WHERE b = true", "SELECT * FROM t WHERE b = false"));
  CHECK_FALSE(same_canonical("SELECT * FROM t WHERE s = ''", "SELECT * FROM t WHERE s IS NULL"));
  // Integers <= 0, which libpg_query 15-4.0.0's JSON omits.
  CHECK_FALSE(same_canonical("SELECT * FROM t WHERE a = -1", "SELECT * FROM t WHERE a = -2"));
  CHECK_FALSE(same_canonical("SELECT * FROM t WHERE a = 0", "SELECT * FROM t WHERE a = -1"));
  CHECK(same_canonical("SELECT * FROM t WHERE a = 0", "SELECT * FROM t WHERE a = -0"));
  // Parameters, names, quoting, aliases, structure.
  CHECK_FALSE(same_canonical("SELECT * FROM t WHERE a = $1 AND b = $2",
                             "SELECT * FROM t WHERE a = $2 AND b = $1"));
  CHECK_FALSE(same_canonical("SELECT * FROM t", "SELECT * FROM \"T\""));
  CHECK_FALSE(same_canonical("SELECT a AS x FROM t", "SELECT a AS y FROM t"));
  CHECK_FALSE(same_canonical("SELECT * FROM a.t", "SELECT * FROM b.t"));
  CHECK_FALSE(same_canonical("SELECT * FROM t ORDER BY a", "SELECT * FROM t ORDER BY a DESC"));
  CHECK_FALSE(same_canonical("SELECT a FROM t", "SELECT a FROM t; SELECT a FROM t"));
}

TEST_CASE("cache analysis: text that is not UTF-8 and embedded NULs") {
  const std::string latin1 = "SELECT * FROM caf\xe9 WHERE n = 'd\xe9j\xe0'";
  const cache_analysis a = analyze_for_cache(latin1);
  CHECK(a.reason == uncacheable::none);
  CHECK(a.reads == std::vector<object_name>{rel("caf\xe9")});
  const cache_analysis b = analyze_for_cache("SELECT * FROM caf\xe9 WHERE n = 'd\xe9ja'");
  CHECK((a.canonical_low != b.canonical_low || a.canonical_high != b.canonical_high));

  // WITH names compare as the tree spells them, before decoding.
  CHECK(analyze_for_cache("WITH \xe9t AS (SELECT * FROM base) SELECT * FROM \xe9t").reads ==
        std::vector<object_name>{rel("base")});

  const std::string with_nul("SELECT * FROM t\0; DROP TABLE t", 30);
  const cache_analysis n = analyze_for_cache(with_nul);
  CHECK(n.reason == uncacheable::none);
  CHECK_FALSE(n.invalidates_database);
}

TEST_CASE("cache analysis: deep expressions do not exhaust the stack") {
  std::string sql = "SELECT * FROM t WHERE a = 0";
  for (int i = 0; i < 2000; ++i) sql += " OR a = " + std::to_string(i);
  const cache_analysis a = analyze_for_cache(sql);
  CHECK(a.reason == uncacheable::none);
  CHECK(a.reads == std::vector<object_name>{rel("t")});

  // Left-deep operator chains and nested subqueries: whatever the parser
  // accepts is walked without recursion.
  std::string chain = "SELECT x";
  for (int i = 0; i < 5000; ++i) chain += " + x";
  const cache_analysis c = analyze_for_cache(chain + " FROM t");
  CHECK((c.reason == uncacheable::none || c.reason == uncacheable::parse_error));
  std::string nested = "SELECT * FROM t";
  for (int i = 0; i < 100; ++i) nested = "SELECT * FROM (" + nested + ") s" + std::to_string(i);
  const cache_analysis n = analyze_for_cache(nested);
  CHECK((n.reason == uncacheable::none || n.reason == uncacheable::parse_error));
}

// ---- The memo.

namespace {
int computed = 0;
std::string length_of(std::string_view text) {
  ++computed;
  return std::to_string(text.size());
}
}  // namespace

TEST_CASE("text memo: the same text gives the same object") {
  text_memo<cache_analysis> memo(4, analyze_for_cache);
  const auto a = memo.get("SELECT * FROM t WHERE id = 1");
  const auto b = memo.get("SELECT * FROM t WHERE id = 1");
  CHECK(a == b);
  CHECK(a->reads == std::vector<object_name>{rel("t")});
  CHECK(memo.hits() == 1);
  CHECK(memo.misses() == 1);
  const auto c = memo.get("SELECT * FROM t WHERE id = 2");
  CHECK(c != a);
  CHECK(memo.size() == 2);
}

TEST_CASE("text memo: least recently used entries are evicted, results outlive them") {
  computed = 0;
  text_memo<std::string> memo(2, length_of);
  const auto a = memo.get("a");
  memo.get("bb");
  CHECK(memo.get("a") == a);  // "a" is now the most recent
  memo.get("ccc");            // evicts "bb"
  CHECK(memo.size() == 2);
  CHECK(computed == 3);
  CHECK(memo.get("a") == a);
  memo.get("bb");  // computed again, evicts "ccc"
  CHECK(computed == 4);
  CHECK(*a == "1");

  text_memo<std::string> none(0, length_of);
  const auto x = none.get("x");
  const auto y = none.get("x");
  CHECK(x != y);
  CHECK(*x == *y);
  CHECK(none.size() == 0);
  CHECK(none.misses() == 2);
}

TEST_CASE("a bind parameter that reads as the current time") {
  CHECK(parameter_names_current_time("now"));
  CHECK(parameter_names_current_time(" Today "));
  CHECK(parameter_names_current_time("tomorrow 10:00"));
  CHECK_FALSE(parameter_names_current_time("2026-12-02"));
  CHECK_FALSE(parameter_names_current_time("snow"));
}

TEST_CASE("settings that change what names and operators resolve to") {
  for (const char* sql :
       {"SET search_path = s, public", "SET LOCAL search_path TO s", "SET SCHEMA 's'",
        "RESET search_path", "SET ROLE bob", "SET LOCAL ROLE bob", "RESET ROLE",
        "SET SESSION AUTHORIZATION bob", "RESET ALL", "DISCARD ALL"}) {
    const cache_analysis a = of(sql);
    CHECK(a.changes_settings);
    CHECK(a.changes_resolution);
  }
  for (const char* sql : {"SET LOCAL app.tenant = 'x'", "SET statement_timeout = 0",
                          "RESET TimeZone", "DISCARD PLANS", "SELECT 1"}) {
    CHECK_FALSE(of(sql).changes_resolution);
  }
}
