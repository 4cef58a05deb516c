// The catalog look-ups of invalidation/catalog.hpp against the real
// PostgreSQL of the `postgres` fixture (scripts/pg_test_cluster.sh), with no
// pgstash in between. Each case makes its objects in a fresh schema (and
// roles, servers, ... with unique names) and drops them at the end.
//
// Environment: PGSTASH_TEST_CLUSTER_DIR (the cluster's env file is read from it).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "invalidation/catalog.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <libpq-fe.h>

#include "invalidation/catalog_service.hpp"

namespace {

using namespace pgstash::invalidation;
using verdict = read_facts::verdict;
using strings = std::vector<std::string>;

std::string cluster_value(const std::string& key) {
  static const std::map<std::string, std::string> env = [] {
    const char* dir = std::getenv("PGSTASH_TEST_CLUSTER_DIR");
    if (!dir || !*dir)
      throw std::runtime_error("PGSTASH_TEST_CLUSTER_DIR is not set: run through ctest");
    std::ifstream in(std::string(dir) + "/env");
    if (!in) throw std::runtime_error(std::string(dir) + "/env not found: is the cluster up?");
    std::map<std::string, std::string> out;
    for (std::string line; std::getline(in, line);)
      if (auto eq = line.find('='); eq != std::string::npos && eq > 0)
        out[line.substr(0, eq)] = line.substr(eq + 1);
    return out;
  }();
  auto it = env.find(key);
  if (it == env.end()) throw std::runtime_error("cluster env has no " + key);
  return it->second;
}

std::string conninfo(const std::string& extra = {}) {
  return "host=" + cluster_value("PGSTASH_PG_HOST") + " port=" + cluster_value("PGSTASH_PG_PORT") +
         " dbname=pgstash_test user=postgres sslmode=disable gssencmode=disable " + extra;
}

std::string unique_suffix() {
  static std::mt19937_64 rng(std::random_device{}());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return std::string(buf, 10);
}

// A plain libpq session of the test itself (to create objects, or to hold a
// temporary table).
class session {
 public:
  session() : conn_(PQconnectdb(conninfo("options='-c client_min_messages=warning'").c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK)
      throw std::runtime_error(std::string("connect: ") + PQerrorMessage(conn_));
  }
  ~session() { PQfinish(conn_); }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  // Runs `sql` (any number of statements); throws on error.
  void run(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    const auto status = PQresultStatus(r);
    const std::string error = PQresultErrorMessage(r);
    PQclear(r);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
      throw std::runtime_error("SQL failed: " + error + "in: " + sql);
  }
  // Runs `sql` and returns the first column of the first row.
  std::string scalar(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    std::string out = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return out;
  }

 private:
  PGconn* conn_;
};

// A fresh schema for one test case; dropped (with everything in it) at the end.
struct scratch {
  scratch() : name("cat_" + unique_suffix()) {
    db.run("CREATE SCHEMA " + name);
    db.run("GRANT USAGE ON SCHEMA " + name + " TO PUBLIC");
  }
  ~scratch() {
    try {
      db.run("DROP SCHEMA " + name + " CASCADE");
    } catch (const std::exception& e) {
      MESSAGE("cleanup: " << e.what());
    }
  }
  // `sql` with every "S." replaced by the schema's name and a dot.
  void run(std::string sql) {
    for (std::size_t at = 0; (at = sql.find("S.", at)) != std::string::npos;) {
      if (at > 0 && (std::isalnum(static_cast<unsigned char>(sql[at - 1])) || sql[at - 1] == '_')) {
        at += 2;
        continue;
      }
      sql.replace(at, 2, name + ".");
      at += name.size() + 1;
    }
    db.run(sql);
  }
  object_name qualified(const std::string& relname) const { return {name, relname}; }

  session db;
  std::string name;
};

object_name bare(const std::string& name) { return {"", name}; }

const char* to_text(verdict v) {
  switch (v) {
    case verdict::cacheable: return "cacheable";
    case verdict::unknown_relation: return "unknown_relation";
    case verdict::system_catalog: return "system_catalog";
    case verdict::temporary: return "temporary";
    case verdict::sequence: return "sequence";
    case verdict::foreign_table: return "foreign_table";
    case verdict::other_kind: return "other_kind";
  }
  return "?";
}

bool contains(const strings& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

namespace pgstash::invalidation {
// For doctest's failure messages.
std::ostream& operator<<(std::ostream& os, const read_facts& r) {
  os << "{" << to_text(r.what) << ", {";
  for (const auto& n : r.depends_on) os << n << " ";
  return os << "}}";
}
std::ostream& operator<<(std::ostream& os, const write_facts& w) {
  os << "{known=" << w.known << ", {";
  for (const auto& n : w.affected) os << n << " ";
  return os << "}, triggers_or_rules=" << w.has_triggers_or_rules << "}";
}
std::ostream& operator<<(std::ostream& os, verdict v) { return os << to_text(v); }
std::ostream& operator<<(std::ostream& os, function_verdict v) {
  return os << (v == function_verdict::cacheable   ? "cacheable"
                : v == function_verdict::stable    ? "stable"
                : v == function_verdict::may_write ? "may_write"
                                                   : "unknown");
}
}  // namespace pgstash::invalidation

TEST_CASE("search_path_schemas parses as the server does and substitutes $user") {
  CHECK(search_path_schemas("\"$user\", public", "alice") == strings{"alice", "public"});
  CHECK(search_path_schemas("$user,public", "alice") == strings{"alice", "public"});
  CHECK(search_path_schemas("\"$user\", public", "") == strings{"public"});
  CHECK(search_path_schemas("  Public ,\"My \"\"Schema\"\"\",pg_temp ", "u") ==
        strings{"public", "My \"Schema\"", "pg_temp"});
  CHECK(search_path_schemas("", "u") == strings{});
  CHECK(search_path_schemas("   ", "u") == strings{});
  CHECK(search_path_schemas(std::string(70, 'A'), "u") == strings{std::string(63, 'a')});
  CHECK_FALSE(search_path_schemas("a,", "u"));
  CHECK_FALSE(search_path_schemas("a,,b", "u"));
  CHECK_FALSE(search_path_schemas("\"unterminated", "u"));
  CHECK_FALSE(search_path_schemas("a b", "u"));
}

TEST_CASE("a plain table, qualified or found through the search path") {
  scratch s;
  s.run("CREATE TABLE S.plain (a int)");
  catalog cat(conninfo());
  REQUIRE(cat.connected());

  const read_facts expected{verdict::cacheable, {"plain"}};
  CHECK(cat.read(s.name, "postgres", bare("plain")) == expected);
  CHECK(cat.read("public", "postgres", s.qualified("plain")) == expected);

  const write_facts w = cat.write(s.name, "postgres", bare("plain"));
  CHECK(w.known);
  CHECK(w.affected == strings{"plain"});
  CHECK_FALSE(w.has_triggers_or_rules);
}

TEST_CASE("an unknown relation") {
  scratch s;
  catalog cat(conninfo());
  const read_facts r = cat.read("public", "postgres", bare("no_such_relation_" + s.name));
  CHECK(r.what == verdict::unknown_relation);
  CHECK(r.depends_on.empty());
  CHECK_FALSE(cat.write("public", "postgres", bare("no_such_relation_" + s.name)).known);
  CHECK(cat.read("public", "postgres", {"no_such_schema_" + s.name, "pg_class"}).what ==
        verdict::unknown_relation);
  // A search_path the server would reject.
  CHECK(cat.read("a,,b", "postgres", bare("pg_class")).what == verdict::unknown_relation);
}

TEST_CASE("a table in another schema is found only when the search path has that schema") {
  scratch s;
  s.run("CREATE TABLE S.elsewhere (a int)");
  catalog cat(conninfo());
  CHECK(cat.read("\"$user\", public", "postgres", bare("elsewhere")).what ==
        verdict::unknown_relation);
  CHECK(cat.read("public, " + s.name, "postgres", bare("elsewhere")).what == verdict::cacheable);
  CHECK(cat.read("public, \"" + s.name + "\"", "postgres", bare("elsewhere")).what ==
        verdict::cacheable);
}

TEST_CASE("\"$user\" in the search path is the client's role, and USAGE decides") {
  scratch s;
  const std::string role = "cat_role_" + unique_suffix();
  s.db.run("CREATE ROLE " + role);
  s.db.run("CREATE SCHEMA " + role);
  struct cleanup {
    session& db;
    const std::string& role;
    ~cleanup() {
      try {
        db.run("DROP SCHEMA " + role + " CASCADE; DROP ROLE " + role);
      } catch (const std::exception& e) {
        MESSAGE("cleanup: " << e.what());
      }
    }
  } drop_role{s.db, role};
  // The role's own schema has a view `shadow` over a table; the shared schema
  // has a plain table of the same name.
  s.db.run("GRANT USAGE ON SCHEMA " + role + " TO " + role);
  s.db.run("CREATE TABLE " + role + ".user_base (a int)");
  s.db.run("CREATE VIEW " + role + ".shadow AS SELECT a FROM " + role + ".user_base");
  s.run("CREATE TABLE S.shadow (a int)");

  catalog cat(conninfo());
  const std::string path = "\"$user\", " + s.name;
  CHECK(cat.read(path, role, bare("shadow")) ==
        read_facts{verdict::cacheable, {"shadow", "user_base"}});
  // Another role: "$user" is a schema that does not exist.
  CHECK(cat.read(path, "postgres", bare("shadow")) == read_facts{verdict::cacheable, {"shadow"}});
  // Without USAGE on the role's schema, the server skips it.
  CHECK(cat.read(role + ", " + s.name, "pgstash_scram", bare("shadow")) ==
        read_facts{verdict::cacheable, {"shadow"}});
  CHECK(cat.read(role + ", " + s.name, role, bare("shadow")) ==
        read_facts{verdict::cacheable, {"shadow", "user_base"}});
  // Functions follow "$user" too.
  s.db.run("CREATE FUNCTION " + role + ".user_fn() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1'");
  CHECK(cat.function(path, role, bare("user_fn")) == function_verdict::cacheable);
  CHECK(cat.function(path, "postgres", bare("user_fn")) == function_verdict::unknown);
}

TEST_CASE("a view over a view over two tables depends on all of them") {
  scratch s;
  s.run(
      "CREATE TABLE S.t1 (a int); CREATE TABLE S.t2 (a int);"
      "CREATE VIEW S.inner_v AS SELECT t1.a FROM S.t1 JOIN S.t2 USING (a);"
      "CREATE VIEW S.outer_v AS SELECT a FROM S.inner_v WHERE a > 0;"
      // Relations read only in a subquery or a CTE count too.
      "CREATE TABLE S.t3 (a int);"
      "CREATE VIEW S.sub_v AS WITH c AS (SELECT a FROM S.t1) "
      "  SELECT a FROM c WHERE EXISTS (SELECT 1 FROM S.t3 WHERE t3.a = c.a)");
  catalog cat(conninfo());
  CHECK(cat.read(s.name, "postgres", bare("outer_v")) ==
        read_facts{verdict::cacheable, {"inner_v", "outer_v", "t1", "t2"}});
  CHECK(cat.read(s.name, "postgres", bare("sub_v")) ==
        read_facts{verdict::cacheable, {"sub_v", "t1", "t3"}});

  // A write through the (auto-updatable) view reaches the tables behind it.
  const write_facts w = cat.write(s.name, "postgres", bare("outer_v"));
  CHECK(w.known);
  CHECK(w.affected == strings{"inner_v", "outer_v", "t1", "t2"});
  CHECK_FALSE(w.has_triggers_or_rules);
}

TEST_CASE("partitioned tables: parent, partitions and sub-partitions") {
  scratch s;
  s.run(
      "CREATE TABLE S.measure (k int, v int) PARTITION BY RANGE (k);"
      "CREATE TABLE S.measure_lo PARTITION OF S.measure FOR VALUES FROM (0) TO (10);"
      "CREATE TABLE S.measure_hi PARTITION OF S.measure FOR VALUES FROM (10) TO (20)"
      "  PARTITION BY RANGE (k);"
      "CREATE TABLE S.measure_hi_a PARTITION OF S.measure_hi FOR VALUES FROM (10) TO (15)");
  catalog cat(conninfo());
  const strings all{"measure", "measure_hi", "measure_hi_a", "measure_lo"};
  CHECK(cat.read(s.name, "postgres", bare("measure")) == read_facts{verdict::cacheable, all});
  CHECK(cat.read(s.name, "postgres", bare("measure_lo")) ==
        read_facts{verdict::cacheable, {"measure", "measure_lo"}});
  CHECK(cat.read(s.name, "postgres", bare("measure_hi_a")) ==
        read_facts{verdict::cacheable, {"measure", "measure_hi", "measure_hi_a"}});
  CHECK(cat.read(s.name, "postgres", bare("measure_hi")) ==
        read_facts{verdict::cacheable, {"measure", "measure_hi", "measure_hi_a"}});

  const write_facts to_partition = cat.write(s.name, "postgres", bare("measure_lo"));
  CHECK(to_partition.affected == strings{"measure", "measure_lo"});
  CHECK(cat.write(s.name, "postgres", bare("measure")).affected == all);
  CHECK(cat.write(s.name, "postgres", bare("measure_hi_a")).affected ==
        strings{"measure", "measure_hi", "measure_hi_a"});
}

TEST_CASE("inheritance: parent and child") {
  scratch s;
  s.run(
      "CREATE TABLE S.animal (name text);"
      "CREATE TABLE S.dog (barks bool) INHERITS (S.animal);"
      "CREATE TABLE S.puppy () INHERITS (S.dog)");
  catalog cat(conninfo());
  CHECK(cat.read(s.name, "postgres", bare("animal")) ==
        read_facts{verdict::cacheable, {"animal", "dog", "puppy"}});
  CHECK(cat.read(s.name, "postgres", bare("dog")) ==
        read_facts{verdict::cacheable, {"animal", "dog", "puppy"}});
  CHECK(cat.read(s.name, "postgres", bare("puppy")) ==
        read_facts{verdict::cacheable, {"animal", "dog", "puppy"}});
  CHECK(cat.write(s.name, "postgres", bare("puppy")).affected ==
        strings{"animal", "dog", "puppy"});
  CHECK(cat.write(s.name, "postgres", bare("animal")).affected ==
        strings{"animal", "dog", "puppy"});
}

TEST_CASE("a materialized view depends only on itself") {
  scratch s;
  s.run(
      "CREATE TABLE S.src (a int);"
      "CREATE MATERIALIZED VIEW S.snapshot AS SELECT a, random() AS r FROM S.src");
  catalog cat(conninfo());
  CHECK(cat.read(s.name, "postgres", bare("snapshot")) ==
        read_facts{verdict::cacheable, {"snapshot"}});
  // A write to its source does not change it until REFRESH.
  CHECK(cat.write(s.name, "postgres", bare("src")).affected == strings{"src"});
}

TEST_CASE("sequences, and views reading them") {
  scratch s;
  s.run(
      "CREATE SEQUENCE S.counter;"
      "CREATE VIEW S.counter_v AS SELECT last_value FROM S.counter");
  catalog cat(conninfo());
  CHECK(cat.read(s.name, "postgres", bare("counter")).what == verdict::sequence);
  CHECK(cat.read(s.name, "postgres", bare("counter_v")).what == verdict::sequence);
}

TEST_CASE("temporary tables: pg_temp.x is temporary; a bare name any session's temp table could shadow is too") {
  scratch s;
  const std::string temp_name = "cat_temp_" + unique_suffix();
  // The client's temporary table, in the test's own session.
  s.db.run("CREATE TEMP TABLE " + temp_name + " (a int)");
  catalog cat(conninfo());

  // Without a look-up: the client's own temp schema is not the control connection's.
  CHECK(cat.read("public", "postgres", {"pg_temp", "no_such_" + temp_name}).what ==
        verdict::temporary);
  CHECK(cat.read("public", "postgres", {"pg_temp", temp_name}).what == verdict::temporary);
  CHECK(cat.read("public", "postgres", bare(temp_name)).what == verdict::temporary);
  CHECK(cat.read("pg_temp, public", "postgres", bare(temp_name)).what == verdict::temporary);
  // A real table of the same name is shadowed in the client's session: still temporary.
  s.run("CREATE TABLE S." + temp_name + " (a int)");
  CHECK(cat.read(s.name, "postgres", bare(temp_name)).what == verdict::temporary);
  CHECK(cat.read(s.name, "postgres", s.qualified(temp_name)).what == verdict::cacheable);
  // pg_temp_N is a real schema name.
  const std::string temp_schema = s.db.scalar("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()");
  REQUIRE_FALSE(temp_schema.empty());
  CHECK(cat.read("public", "postgres", {temp_schema, temp_name}).what == verdict::temporary);

  // Writes: the facts of every temporary relation of that name.
  const write_facts w = cat.write("public", "postgres", {"pg_temp", temp_name});
  CHECK(w.known);
  CHECK(w.affected == strings{temp_name});
  CHECK_FALSE(cat.write("public", "postgres", {"pg_temp", "no_such_" + temp_name}).known);
}

TEST_CASE("system catalogs, qualified or not, and views over them") {
  scratch s;
  s.run("CREATE VIEW S.relations AS SELECT relname FROM pg_catalog.pg_class");
  s.run("CREATE VIEW S.settings_v AS SELECT name FROM pg_settings");
  catalog cat(conninfo());
  CHECK(cat.read("public", "postgres", {"pg_catalog", "pg_class"}).what == verdict::system_catalog);
  CHECK(cat.read("public", "postgres", bare("pg_class")).what == verdict::system_catalog);
  // pg_catalog is searched before the path, unless the path places it.
  s.run("CREATE TABLE S.pg_class (a int)");
  CHECK(cat.read(s.name, "postgres", bare("pg_class")).what == verdict::system_catalog);
  CHECK(cat.read(s.name + ", pg_catalog", "postgres", bare("pg_class")).what == verdict::cacheable);
  CHECK(cat.read("public", "postgres", {"information_schema", "tables"}).what ==
        verdict::system_catalog);
  CHECK(cat.read(s.name, "postgres", bare("relations")).what == verdict::system_catalog);
  CHECK(cat.read(s.name, "postgres", bare("settings_v")).what == verdict::system_catalog);
}

TEST_CASE("foreign tables, also as a partition") {
  scratch s;
  const std::string wrapper = "cat_fdw_" + unique_suffix();
  // A wrapper with no handler: enough to create foreign tables, no extension needed.
  s.db.run("CREATE FOREIGN DATA WRAPPER " + wrapper);
  s.db.run("CREATE SERVER " + wrapper + "_srv FOREIGN DATA WRAPPER " + wrapper);
  struct cleanup {
    session& db;
    const std::string& wrapper;
    ~cleanup() {
      try {
        db.run("DROP FOREIGN DATA WRAPPER " + wrapper + " CASCADE");
      } catch (const std::exception& e) {
        MESSAGE("cleanup: " << e.what());
      }
    }
  } drop_wrapper{s.db, wrapper};
  s.run("CREATE FOREIGN TABLE S.remote (a int) SERVER " + wrapper + "_srv");
  s.run(
      "CREATE TABLE S.mixed (k int) PARTITION BY LIST (k);"
      "CREATE TABLE S.mixed_local PARTITION OF S.mixed FOR VALUES IN (1);"
      "CREATE FOREIGN TABLE S.mixed_remote PARTITION OF S.mixed FOR VALUES IN (2) SERVER " +
      wrapper + "_srv");
  catalog cat(conninfo());
  CHECK(cat.read(s.name, "postgres", bare("remote")).what == verdict::foreign_table);
  CHECK(cat.read(s.name, "postgres", bare("mixed")).what == verdict::foreign_table);
  CHECK(cat.read(s.name, "postgres", bare("mixed_local")).what == verdict::cacheable);
}

TEST_CASE("FK actions: CASCADE / SET NULL chains reach the referencing tables, NO ACTION does not") {
  scratch s;
  s.run(
      "CREATE TABLE S.a (id int PRIMARY KEY);"
      "CREATE TABLE S.b (id int PRIMARY KEY, a_id int REFERENCES S.a ON DELETE CASCADE);"
      "CREATE TABLE S.c (id int, b_id int REFERENCES S.b ON DELETE SET NULL);"
      "CREATE TABLE S.d (id int, a_id int REFERENCES S.a);"  // NO ACTION
      "CREATE TABLE S.e (id int, a_id int REFERENCES S.a ON UPDATE SET DEFAULT ON DELETE RESTRICT);"
      // A partitioned referencing table: its partitions are reached, and its ancestors.
      "CREATE TABLE S.f (id int, c_id int, b_id int REFERENCES S.b ON UPDATE CASCADE)"
      "  PARTITION BY RANGE (id);"
      "CREATE TABLE S.f1 PARTITION OF S.f FOR VALUES FROM (0) TO (10)");
  catalog cat(conninfo());
  const write_facts w = cat.write(s.name, "postgres", bare("a"));
  CHECK(w.known);
  CHECK(w.affected == strings{"a", "b", "c", "e", "f", "f1"});
  CHECK_FALSE(contains(w.affected, "d"));
  // The FK's own triggers are internal.
  CHECK_FALSE(w.has_triggers_or_rules);
  CHECK(cat.write(s.name, "postgres", bare("c")).affected == strings{"c"});
  CHECK(cat.write(s.name, "postgres", bare("b")).affected == strings{"b", "c", "f", "f1"});
  // Reads are not widened by FKs.
  CHECK(cat.read(s.name, "postgres", bare("a")).depends_on == strings{"a"});
}

TEST_CASE("a point key only where one value's rows are all a read sees and a write changes") {
  scratch s;
  const std::string other = "cat_" + unique_suffix();
  s.run(
      "CREATE TABLE S.keyed (id int PRIMARY KEY, v int);"
      "CREATE TABLE S.keyed8 (k bigint PRIMARY KEY, v int);"
      "CREATE TABLE S.by_text (id text PRIMARY KEY);"
      "CREATE TABLE S.two_keys (a int, b int, PRIMARY KEY (a, b));"
      "CREATE TABLE S.no_key (id int UNIQUE);"
      "CREATE TABLE S.tree (id int PRIMARY KEY, up int REFERENCES S.tree ON DELETE CASCADE);"
      "CREATE TABLE S.audit_log (id int);"
      "CREATE FUNCTION S.log_it() RETURNS trigger LANGUAGE plpgsql AS "
      "  $$BEGIN INSERT INTO " +
      s.name +
      ".audit_log VALUES (NEW.id); RETURN NEW; END$$;"
      "CREATE TABLE S.audited (id int PRIMARY KEY);"
      "CREATE TRIGGER log_it AFTER UPDATE ON S.audited FOR EACH ROW EXECUTE FUNCTION S.log_it();"
      "CREATE TABLE S.ruled (id int PRIMARY KEY);"
      "CREATE RULE keep AS ON DELETE TO S.ruled DO INSTEAD NOTHING;"
      "CREATE TABLE S.parent (id int PRIMARY KEY);"
      "CREATE TABLE S.child (extra int) INHERITS (S.parent);"
      "CREATE TABLE S.part (id int PRIMARY KEY) PARTITION BY RANGE (id);"
      "CREATE TABLE S.part1 PARTITION OF S.part FOR VALUES FROM (0) TO (10);"
      "CREATE VIEW S.keyed_v AS SELECT * FROM S.keyed;"
      // An FK action reaching a table of the same bare name, in another schema.
      "CREATE TABLE S.shared (id int PRIMARY KEY);"
      "CREATE SCHEMA " +
      other +
      ";"
      "CREATE TABLE " +
      other +
      ".shared (id int PRIMARY KEY, "
      "  s int REFERENCES " +
      s.name +
      ".shared ON DELETE CASCADE);"
      // A stored generated key moves when what it is made of is set.
      "CREATE TABLE S.generated (x int, id int GENERATED ALWAYS AS (x * 10) STORED PRIMARY KEY);"
      // FK actions in a loop: deleting a `loop_a` row deletes `loop_c` rows, whose deletion
      // sets other `loop_a` rows' c_id to NULL.
      "CREATE TABLE S.loop_a (id int PRIMARY KEY, c_id int);"
      "CREATE TABLE S.loop_c (id int PRIMARY KEY, a_id int REFERENCES S.loop_a ON DELETE CASCADE);"
      "ALTER TABLE S.loop_a ADD FOREIGN KEY (c_id) REFERENCES S.loop_c ON DELETE SET NULL;"
      "CREATE TABLE S.referenced (id int PRIMARY KEY);"
      "CREATE TABLE S.referencing (id int PRIMARY KEY, r int REFERENCES S.referenced ON DELETE "
      "CASCADE)");
  catalog cat(conninfo());
  auto both = [&](const std::string& table) {
    const std::string read = cat.read(s.name, "postgres", bare(table)).point_key;
    const std::string write = cat.write(s.name, "postgres", bare(table)).point_key;
    CHECK_MESSAGE(read == write, table);
    return read;
  };
  CHECK(both("keyed") == "id");
  CHECK(both("keyed8") == "k");
  CHECK(both("referencing") == "id");
  // The rows its FK actions delete are another table's.
  CHECK(both("referenced") == "id");
  CHECK(cat.write(s.name, "postgres", bare("referenced")).affected ==
        strings{"referenced", "referencing"});
  CHECK(cat.read("public", "postgres", s.qualified("keyed")).point_key == "id");
  for (const char* table : {"by_text", "two_keys", "no_key", "tree", "audited", "ruled", "parent",
                            "child", "part", "part1", "keyed_v", "generated"}) {
    CHECK_MESSAGE(both(table).empty(), table);
  }
  CHECK(cat.read(s.name, "postgres", bare("loop_a")).point_key == "id");
  CHECK(cat.write(s.name, "postgres", bare("loop_a")).point_key.empty());
  CHECK(cat.read(s.name, "postgres", bare("shared")).point_key == "id");
  CHECK(cat.write(s.name, "postgres", bare("shared")).point_key.empty());
  s.db.run("DROP SCHEMA " + other + " CASCADE");
}

TEST_CASE("triggers and rules make a write unbounded") {
  scratch s;
  s.run(
      "CREATE TABLE S.audited (a int);"
      "CREATE TABLE S.audit_log (a int);"
      "CREATE FUNCTION S.log_it() RETURNS trigger LANGUAGE plpgsql AS "
      "  $$BEGIN INSERT INTO " + s.name + ".audit_log VALUES (NEW.a); RETURN NEW; END$$;"
      "CREATE TRIGGER log_it AFTER INSERT ON S.audited FOR EACH ROW EXECUTE FUNCTION S.log_it();"
      "CREATE TABLE S.ruled (a int);"
      "CREATE RULE copy_it AS ON INSERT TO S.ruled DO ALSO INSERT INTO S.audit_log VALUES (NEW.a);"
      "CREATE TABLE S.plain (a int);"
      "CREATE VIEW S.plain_v AS SELECT a FROM S.plain;"
      // A trigger on a table an FK cascade reaches counts as well.
      "CREATE TABLE S.parent (id int PRIMARY KEY);"
      "CREATE TABLE S.child (p int REFERENCES S.parent ON DELETE CASCADE);"
      "CREATE TRIGGER log_child AFTER DELETE ON S.child FOR EACH ROW EXECUTE FUNCTION S.log_it();"
      // A row trigger on a partitioned table fires for writes to its partitions.
      "CREATE TABLE S.part (k int) PARTITION BY RANGE (k);"
      "CREATE TABLE S.part1 PARTITION OF S.part FOR VALUES FROM (0) TO (10);"
      "CREATE TRIGGER log_part AFTER INSERT ON S.part FOR EACH ROW EXECUTE FUNCTION S.log_it()");
  catalog cat(conninfo());
  CHECK(cat.write(s.name, "postgres", bare("audited")).has_triggers_or_rules);
  CHECK(cat.write(s.name, "postgres", bare("ruled")).has_triggers_or_rules);
  CHECK_FALSE(cat.write(s.name, "postgres", bare("plain")).has_triggers_or_rules);
  CHECK_FALSE(cat.write(s.name, "postgres", bare("plain_v")).has_triggers_or_rules);
  CHECK(cat.write(s.name, "postgres", bare("parent")).has_triggers_or_rules);
  CHECK(cat.write(s.name, "postgres", bare("part1")).has_triggers_or_rules);
  // Reads are unaffected.
  CHECK(cat.read(s.name, "postgres", bare("ruled")) == read_facts{verdict::cacheable, {"ruled"}});
}

TEST_CASE("function verdicts") {
  scratch s;
  s.run(
      "CREATE FUNCTION S.twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';"
      "CREATE FUNCTION S.roll() RETURNS float8 LANGUAGE sql VOLATILE AS 'SELECT random()';"
      "CREATE FUNCTION S.pick(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1';"
      "CREATE FUNCTION S.pick(text) RETURNS text LANGUAGE sql VOLATILE AS 'SELECT $1';"
      "CREATE FUNCTION S.stable_one() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1';"
      // A user function shadowing an allow-listed name is not allow-listed.
      "CREATE FUNCTION S.current_setting(int) RETURNS text LANGUAGE sql STABLE AS 'SELECT 1::text'");
  catalog cat(conninfo());
  const std::string path = "public, " + s.name;
  CHECK(cat.function(path, "postgres", bare("abs")) == function_verdict::cacheable);
  CHECK(cat.function(path, "postgres", {"pg_catalog", "abs"}) == function_verdict::cacheable);
  CHECK(cat.function(path, "postgres", bare("now")) == function_verdict::stable);
  CHECK(cat.function(path, "postgres", bare("random")) == function_verdict::may_write);
  CHECK(cat.function(path, "postgres", bare("twice")) == function_verdict::cacheable);
  CHECK(cat.function("public", "postgres", bare("twice")) == function_verdict::unknown);
  CHECK(cat.function("public", "postgres", s.qualified("twice")) == function_verdict::cacheable);
  CHECK(cat.function(path, "postgres", bare("roll")) == function_verdict::may_write);
  CHECK(cat.function(path, "postgres", bare("pick")) == function_verdict::may_write);
  // A user's STABLE function could call a volatile one: not trusted.
  CHECK(cat.function(path, "postgres", bare("stable_one")) == function_verdict::may_write);
  CHECK(cat.function(path, "postgres", bare("no_such_function_" + s.name)) ==
        function_verdict::unknown);
  CHECK(cat.function("public", "postgres", bare("current_setting")) == function_verdict::cacheable);
  CHECK(cat.function("public", "postgres", bare("current_user")) == function_verdict::cacheable);
  CHECK(cat.function(path, "postgres", bare("current_setting")) == function_verdict::may_write);
  CHECK(cat.function("public", "postgres", {"pg_temp", "twice"}) == function_verdict::may_write);
}

TEST_CASE("a view calling a function that is not cacheable is not cacheable") {
  scratch s;
  s.run(
      "CREATE TABLE S.base (a int, t timestamptz);"
      "CREATE FUNCTION S.twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';"
      "CREATE FUNCTION S.rows_elsewhere() RETURNS SETOF int LANGUAGE sql STABLE AS 'SELECT 1';"
      "CREATE VIEW S.pure AS SELECT S.twice(a), a + 1 AS b, count(*) OVER () FROM S.base "
      "  WHERE a IN (1, 2) AND current_setting('app.tenant', true) IS DISTINCT FROM 'x' "
      "  AND CURRENT_USER <> 'nobody';"
      "CREATE VIEW S.random_v AS SELECT a FROM S.base WHERE random() < 0.5;"
      "CREATE VIEW S.recent AS SELECT a FROM S.base WHERE t > now() - interval '1 day';"
      "CREATE VIEW S.today AS SELECT a FROM S.base WHERE t > CURRENT_DATE;"
      "CREATE VIEW S.sampled AS SELECT a FROM S.base TABLESAMPLE SYSTEM (50);"
      "CREATE VIEW S.from_fn AS SELECT * FROM S.rows_elsewhere() AS f(x);"
      "CREATE VIEW S.over_random AS SELECT a FROM S.random_v");
  catalog cat(conninfo());
  CHECK(cat.read(s.name, "postgres", bare("pure")) == read_facts{verdict::cacheable, {"base", "pure"}});
  for (const char* v : {"random_v", "recent", "today", "sampled", "from_fn", "over_random"}) {
    CAPTURE(v);
    CHECK(cat.read(s.name, "postgres", bare(v)).what == verdict::other_kind);
  }
}

TEST_CASE("the isolation level a login's transactions start at") {
  session db;
  const std::string role = "cat_iso_" + unique_suffix();
  db.run("CREATE ROLE " + role + " LOGIN");
  catalog cat(conninfo());
  CHECK(cat.isolation("postgres") == default_isolation::read_committed);
  CHECK(cat.isolation(role) == default_isolation::read_committed);
  db.run("ALTER ROLE " + role + " SET default_transaction_isolation = 'repeatable read'");
  CHECK(cat.isolation(role) == default_isolation::other);
  // The role's setting in this database wins over the role's own.
  db.run("ALTER ROLE " + role + " IN DATABASE " + db.scalar("SELECT current_database()") +
         " SET default_transaction_isolation = 'read uncommitted'");
  CHECK(cat.isolation(role) == default_isolation::read_committed);
  CHECK(cat.isolation("postgres") == default_isolation::read_committed);
  db.run("DROP ROLE " + role);
}

TEST_CASE("a lost connection is re-established on the next look-up") {
  scratch s;
  s.run("CREATE TABLE S.survivor (a int)");
  const std::string app = "cat_reconnect_" + unique_suffix();
  catalog cat(conninfo("application_name=" + app));
  REQUIRE(cat.connected());
  CHECK(cat.read(s.name, "postgres", bare("survivor")).what == verdict::cacheable);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // past the reconnect throttle
  s.db.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '" +
           app + "'");
  // The dead connection is noticed, replaced, and the look-up retried once.
  CHECK(cat.read(s.name, "postgres", bare("survivor")).what == verdict::cacheable);
  CHECK(cat.connected());
}

TEST_CASE("a catalog that cannot connect answers unknown, quickly") {
  // A port nothing listens on: the cluster's port + 1 is free often enough;
  // port 1 certainly is refused.
  const auto t0 = std::chrono::steady_clock::now();
  catalog cat("host=127.0.0.1 port=1 dbname=pgstash_test user=postgres sslmode=disable");
  CHECK_FALSE(cat.connected());
  CHECK(cat.read("public", "postgres", bare("pg_class")).what == verdict::unknown_relation);
  CHECK_FALSE(cat.write("public", "postgres", bare("pg_class")).known);
  CHECK(cat.function("public", "postgres", bare("abs")) == function_verdict::unknown);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
}

TEST_CASE("catalog_service memoizes, coalesces, forgets") {
  scratch s;
  s.run("CREATE TABLE S.memo (a int)");
  const std::string db = "pgstash_test";
  const std::string info = conninfo();
  catalog_service svc;
  CHECK_FALSE(svc.try_read(db, info, s.name, "postgres", bare("memo")));
  CHECK_FALSE(svc.try_read(db, info, s.name, "postgres", bare("memo")));  // coalesced
  svc.drain();
  auto r = svc.try_read(db, info, s.name, "postgres", bare("memo"));
  REQUIRE(r);
  CHECK(*r == read_facts{verdict::cacheable, {"memo"}});

  // The same name qualified is another question.
  CHECK_FALSE(svc.try_read(db, info, "public", "postgres", s.qualified("memo")));
  CHECK_FALSE(svc.try_write(db, info, s.name, "postgres", bare("memo")));
  CHECK_FALSE(svc.try_function(db, info, s.name, "postgres", bare("abs")));
  svc.drain();
  CHECK(svc.try_read(db, info, "public", "postgres", s.qualified("memo")) == r);
  // For a qualified name, search_path and user do not matter.
  CHECK(svc.try_read(db, info, "other, path", "someone", s.qualified("memo")) == r);
  auto w = svc.try_write(db, info, s.name, "postgres", bare("memo"));
  REQUIRE(w);
  CHECK(w->known);
  CHECK(w->affected == strings{"memo"});
  CHECK(svc.try_function(db, info, s.name, "postgres", bare("abs")) == function_verdict::cacheable);

  // New answers change none that was given: the version stays.
  const std::uint64_t version = svc.answers_version();
  // DDL: the memoized answer is gone; the next look-up sees the new catalog.
  s.run("DROP TABLE S.memo; CREATE VIEW S.memo AS SELECT relname FROM pg_class");
  CHECK(svc.try_read(db, info, s.name, "postgres", bare("memo")) == r);  // not forgotten yet
  CHECK(svc.answers_version() == version);
  svc.forget(db);
  CHECK(svc.answers_version() != version);
  CHECK_FALSE(svc.try_read(db, info, s.name, "postgres", bare("memo")));
  svc.drain();
  auto after = svc.try_read(db, info, s.name, "postgres", bare("memo"));
  REQUIRE(after);
  CHECK(after->what == verdict::system_catalog);
  // Another database's answers are not dropped.
  svc.forget("another_database");
  CHECK(svc.try_read(db, info, s.name, "postgres", bare("memo")) == after);
}

TEST_CASE("catalog_service keeps at most max_entries answers") {
  scratch s;
  catalog_service svc(2);
  const std::string info = conninfo();
  std::uint64_t version = svc.answers_version();
  for (const char* name : {"abs", "now", "random"}) {
    CHECK_FALSE(svc.try_function("pgstash_test", info, "public", "postgres", bare(name)));
    svc.drain();
    // The third answer evicts the first: a derivation from it is stale.
    CHECK((svc.answers_version() != version) == (std::string_view(name) == "random"));
    version = svc.answers_version();
  }
  CHECK(svc.try_function("pgstash_test", info, "public", "postgres", bare("random")) ==
        function_verdict::may_write);
  CHECK(svc.try_function("pgstash_test", info, "public", "postgres", bare("now")) ==
        function_verdict::stable);
  CHECK_FALSE(svc.try_function("pgstash_test", info, "public", "postgres", bare("abs")));
  svc.drain();
}

TEST_CASE("catalog_service with a bad conninfo answers unknown and does not hang") {
  const auto t0 = std::chrono::steady_clock::now();
  {
    catalog_service svc;
    const std::string bad = "host=127.0.0.1 port=1 dbname=nowhere sslmode=disable";
    CHECK_FALSE(svc.try_read("nowhere", bad, "public", "postgres", bare("t")));
    CHECK_FALSE(svc.try_write("nowhere", bad, "public", "postgres", bare("t")));
    CHECK_FALSE(svc.try_function("nowhere", bad, "public", "postgres", bare("abs")));
    svc.drain();
    const auto r = svc.try_read("nowhere", bad, "public", "postgres", bare("t"));
    REQUIRE(r);
    CHECK(r->what == verdict::unknown_relation);
    const auto w = svc.try_write("nowhere", bad, "public", "postgres", bare("t"));
    REQUIRE(w);
    CHECK_FALSE(w->known);
    CHECK(svc.try_function("nowhere", bad, "public", "postgres", bare("abs")) ==
          function_verdict::unknown);
    // Unknown answers are asked again after about a second (and still
    // returned meanwhile).
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    CHECK(svc.try_read("nowhere", bad, "public", "postgres", bare("t")) == r);
    svc.drain();
    // A garbage conninfo is no worse.
    CHECK_FALSE(svc.try_read("garbage", "this is = not a conninfo", "public", "postgres", bare("t")));
    svc.drain();
    CHECK(svc.try_read("garbage", "this is = not a conninfo", "public", "postgres", bare("t"))
              ->what == verdict::unknown_relation);
  }
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
}

TEST_CASE("catalog_service under concurrent callers") {
  scratch s;
  s.run("CREATE TABLE S.busy (a int)");
  catalog_service svc(64);
  const std::string info = conninfo();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        const std::string name = (i % 3 == 0) ? "busy" : "missing_" + std::to_string(i % 50);
        (void)svc.try_read("pgstash_test", info, s.name, "postgres", bare(name));
        (void)svc.try_write("pgstash_test", info, s.name, "postgres", bare(name));
        (void)svc.try_function("pgstash_test", info, s.name, "postgres", bare("abs"));
        if (t == 0 && i % 40 == 0) svc.forget("pgstash_test");
        if (i % 100 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }
  for (auto& th : threads) th.join();
  svc.drain();
  (void)svc.try_read("pgstash_test", info, s.name, "postgres", bare("busy"));
  svc.drain();
  CHECK(svc.try_read("pgstash_test", info, s.name, "postgres", bare("busy")) ==
        read_facts{verdict::cacheable, {"busy"}});
}
