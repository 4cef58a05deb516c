// auth.user/auth.query: clients missing from every file log in with the
// secret PostgreSQL keeps for them, looked up through pgstash's own pool and
// kept for auth.query_cache_ms.
#include <doctest/doctest.h>

#include "harness.hpp"
#include <unistd.h>

namespace pgstash::itest {
namespace {

// Roles the test creates are its own (ctest runs cases side by side on one
// cluster), and are dropped when it ends.
class scratch_role {
 public:
  explicit scratch_role(const std::string& stem, const std::string& options)
      : name_(stem + "_" + std::to_string(getpid())) {
    run("drop role if exists " + name_);
    run("create role " + name_ + " " + options);
  }
  ~scratch_role() {
    try {
      run("drop role if exists " + name_);
    } catch (const pg_error& e) {
      MESSAGE("role left behind: ", e.what());
    }
  }
  const std::string& name() const { return name_; }
  static void run(const std::string& sql) {
    pg_conn direct(direct_conninfo());
    direct.exec("set client_min_messages = warning; " + sql);
  }

 private:
  std::string name_;
};

std::vector<std::string> auth_query_options(const std::string& method,
                                            std::vector<std::string> more = {}) {
  // No auth file at all: every secret comes from the server. auth.user is
  // `postgres`, which the test cluster trusts over TCP.
  more.insert(more.begin(),
              {"auth.method = \"" + method + "\"", "auth.file = \"\"", "auth.user = \"postgres\""});
  return more;
}

std::string log_in_as(const pgstash_instance& px, const std::string& user,
                      const std::string& password) {
  pg_conn c(px.conninfo("user=" + user + " password=" + password));
  return c.exec("select current_user");
}

pg_error refusal(const pgstash_instance& px, const std::string& user, const std::string& password,
                 std::string_view database = "pgstash_test") {
  return pg_conn::connect_error(
      px.conninfo("user=" + user + " password=" + password + " dbname=" + std::string(database)));
}

TEST_CASE("auth_query: a user in no file logs in with the secret PostgreSQL keeps") {
  SUBCASE("scram-sha-256: the verifier from pg_shadow proves the client, then the server") {
    pgstash_instance px(auth_query_options("scram-sha-256"));
    // pgstash_scram needs SCRAM on the server too: pgstash proves it with the client's key.
    CHECK(log_in_as(px, "pgstash_scram", "scram-secret-1") == "pgstash_scram");
    CHECK(log_in_as(px, "pgstash_scram", "scram-secret-1") == "pgstash_scram");
    CHECK(refusal(px, "pgstash_scram", "scram-secret-2").sqlstate == "28P01");
    // An md5 hash cannot answer SCRAM, as in PostgreSQL.
    CHECK(refusal(px, "pgstash_md5", "md5-secret-1").sqlstate == "28P01");
    CHECK(refusal(px, "nobody_here", "x").sqlstate == "28P01");
  }
  SUBCASE("md5: the hash from pg_shadow proves the client, then the server") {
    pgstash_instance px(auth_query_options("md5"));
    CHECK(log_in_as(px, "pgstash_md5", "md5-secret-1") == "pgstash_md5");
    CHECK(refusal(px, "pgstash_md5", "md5-secret-2").sqlstate == "28P01");
    // md5 against a SCRAM verifier falls back to SCRAM.
    CHECK(log_in_as(px, "pgstash_scram", "scram-secret-1") == "pgstash_scram");
  }
  SUBCASE("expired and NOLOGIN roles are refused") {
    scratch_role expired("aq_expired", "login password 'aq-secret' valid until '2001-01-01'");
    scratch_role cannot("aq_nologin", "nologin password 'aq-secret'");
    scratch_role fine("aq_fine", "login password 'aq-secret'");
    pgstash_instance px(auth_query_options("scram-sha-256"));
    CHECK(log_in_as(px, fine.name(), "aq-secret") == fine.name());
    CHECK(refusal(px, expired.name(), "aq-secret").sqlstate == "28P01");
    CHECK(refusal(px, cannot.name(), "aq-secret").sqlstate == "28P01");
  }
  SUBCASE("an ordinary auth.user, through the README's SECURITY DEFINER function") {
    scratch_role auth_user("aq_auth", "login");
    const std::string lookup = "aq_readme_lookup_" + std::to_string(getpid());
    pg_conn direct(direct_conninfo("dbname=pgstash_test"));
    direct.exec("create or replace function " + lookup +
                "(who text, out usename name, out passwd text) security definer "
                "set search_path = pg_catalog language sql as "
                "$$ select usename, case when valuntil < now() then null else passwd end "
                "from pg_shadow where usename = who $$");
    direct.exec("revoke all on function " + lookup + "(text) from public");
    direct.exec("grant execute on function " + lookup + "(text) to " + auth_user.name());
    {
      pgstash_instance px(auth_query_options(
          "scram-sha-256", {"auth.user = " + toml_string(auth_user.name()),
                            "auth.query = " + toml_string("SELECT * FROM " + lookup + "($1)")}));
      CHECK(log_in_as(px, "pgstash_scram", "scram-secret-1") == "pgstash_scram");
    }
    {
      // The same role reading pg_shadow itself is refused by the server.
      pgstash_instance px(
          auth_query_options("scram-sha-256", {"auth.user = " + toml_string(auth_user.name())}));
      CHECK(refusal(px, "pgstash_scram", "scram-secret-1").sqlstate == "28000");
      CHECK(px.log().find("permission denied") != std::string::npos);
    }
    direct.exec("drop function " + lookup);
  }
  SUBCASE("the console knows only the auth file's users") {
    pgstash_instance px(auth_query_options("scram-sha-256", {"admin.users = [\"pgstash_scram\"]"}));
    CHECK(refusal(px, "pgstash_scram", "scram-secret-1", "pgstash").sqlstate == "28P01");
  }
}

TEST_CASE(
    "auth_query: a secret found is kept for auth.query_cache_ms, and a failed login drops it") {
  scratch_role user("aq_cached", "login password 'first'");
  // A function as the query, as an operator without a superuser auth.user would write it;
  // it also counts the look-ups.
  const std::string calls = "aq_calls_" + std::to_string(getpid());
  const std::string lookup = "aq_lookup_" + std::to_string(getpid());
  pg_conn direct(direct_conninfo());
  direct.exec("set client_min_messages = warning; drop table if exists " + calls +
              "; create table " + calls + " (name text)");
  direct.exec("create or replace function " + lookup +
              "(who text, out usename name, out passwd text) security definer language sql as "
              "$$ insert into " +
              calls +
              " values (who); "
              "select usename, passwd from pg_shadow where usename = who $$");
  auto looked_up = [&] { return std::stoi(direct.exec("select count(*) from " + calls)); };

  pgstash_instance px(auth_query_options(
      "scram-sha-256", {"auth.query = " + toml_string("select * from " + lookup + "($1)"),
                        "auth.query_cache_ms = 600000"}));
  CHECK(log_in_as(px, user.name(), "first") == user.name());
  CHECK(looked_up() == 1);
  CHECK(log_in_as(px, user.name(), "first") == user.name());
  CHECK(looked_up() == 1);

  // Changed on the server: the kept verifier still has the old password, so the new one is
  // refused once, which drops it: the new password works from the next try.
  scratch_role::run("alter role " + user.name() + " password 'second'");
  CHECK(refusal(px, user.name(), "second").sqlstate == "28P01");
  CHECK(looked_up() == 1);
  CHECK(log_in_as(px, user.name(), "second") == user.name());
  CHECK(looked_up() == 2);
  CHECK(refusal(px, user.name(), "first").sqlstate == "28P01");

  // What was not found is not kept: a role created later logs in at once.
  const std::string later_name = "aq_later_" + std::to_string(getpid());
  CHECK(refusal(px, later_name, "third").sqlstate == "28P01");
  scratch_role later("aq_later", "login password 'third'");
  REQUIRE(later.name() == later_name);
  CHECK(log_in_as(px, later_name, "third") == later_name);

  direct.exec("drop function " + lookup + "; drop table " + calls);
}

TEST_CASE("auth_query: a look-up that fails refuses that login, and pgstash stays up") {
  SUBCASE("the query fails") {
    pgstash_instance px(auth_query_options("scram-sha-256", {"auth.query = \"select 1/0, $1\""}));
    pg_error e = refusal(px, "pgstash_scram", "scram-secret-1");
    CAPTURE(e.what());
    CHECK(e.sqlstate == "28000");
    CHECK(std::string(e.what()).find("could not look up the password of user") !=
          std::string::npos);
    CHECK(px.log().find("division by zero") != std::string::npos);
    // Every login gets its answer; the pool's connection went back usable.
    CHECK(refusal(px, "pgstash_md5", "md5-secret-1").sqlstate == "28000");
    CHECK(px.alive());
  }
  SUBCASE("the query returns one column") {
    pgstash_instance px(auth_query_options("scram-sha-256", {"auth.query = \"select $1::text\""}));
    CHECK(refusal(px, "pgstash_scram", "scram-secret-1").sqlstate == "28000");
    CHECK(px.log().find("must return (name, secret)") != std::string::npos);
  }
  SUBCASE("the query returns a row for another name") {
    pgstash_instance px(
        auth_query_options("scram-sha-256", {"auth.query = \"select 'pgstash_scram'::name, passwd "
                                             "from pg_shadow where usename = $1\""}));
    CHECK(log_in_as(px, "pgstash_scram", "scram-secret-1") == "pgstash_scram");
    CHECK(refusal(px, "pgstash_md5", "scram-secret-1").sqlstate == "28000");
    CHECK(px.log().find("a row for another name") != std::string::npos);
  }
  SUBCASE("auth.user cannot log in") {
    // pgstash_clear needs a password on the server, and no file gives pgstash one.
    pgstash_instance px(auth_query_options("scram-sha-256", {"auth.user = \"pgstash_clear\""}));
    pg_error e = refusal(px, "pgstash_scram", "scram-secret-1");
    CAPTURE(e.what());
    // The client is not told why: it has not logged in.
    CHECK(e.sqlstate == "28000");
    CHECK(std::string(e.what()).find("pgstash_clear") == std::string::npos);
    CHECK(px.log().find("auth.query for user \"pgstash_scram\" as \"pgstash_clear\"") !=
          std::string::npos);
  }
  SUBCASE("auth.user logs in with its secret from the auth file; file users need no look-up") {
    temp_dir dir;
    const std::string userlist = dir.write_file(
        "userlist.txt", "\"pgstash_clear\" \"clear-secret-1\"\n\"postgres\" \"postgres-secret\"\n");
    pgstash_instance px(auth_query_options(
        "scram-sha-256", {"auth.user = \"pgstash_clear\"", "auth.file = " + toml_string(userlist),
                          "auth.query = \"select 1/0, $1\""}));
    // The file's user logs in without the (failing) query...
    CHECK(log_in_as(px, "postgres", "postgres-secret") == "postgres");
    // ...and pgstash_clear could log in to run it: the failure is the query's own.
    CHECK(refusal(px, "pgstash_scram", "scram-secret-1").sqlstate == "28000");
    CHECK(px.log().find("division by zero") != std::string::npos);
  }
}

}  // namespace
}  // namespace pgstash::itest
