// Client authentication against the auth file, the credentials pgstash then
// presents to the server, database routing, and the client limit.
#include <doctest/doctest.h>

#include "harness.hpp"

namespace pgstash::itest {
namespace {

// The server role's stored secret (SCRAM verifier or md5 hash), read directly.
std::string stored_secret(const std::string& role) {
  pg_conn direct(direct_conninfo());
  return direct.exec("select rolpassword from pg_authid where rolname = '" + role + "'");
}

void check_role_reaches_server(const pgstash_instance& px, const std::string& user,
                               const std::string& password) {
  CAPTURE(user);
  pg_conn c(px.conninfo("user=" + user + (password.empty() ? "" : " password=" + password)));
  CHECK(c.exec("select current_user") == user);
  CHECK(c.exec("select current_database()") == "pgstash_test");
}

TEST_CASE("auth: trust lets every role in and pgstash logs in to the server for it") {
  pgstash_instance px;
  // pgstash answers the server's scram-sha-256, md5 and password requests from the userlist.
  check_role_reaches_server(px, "postgres", "");
  check_role_reaches_server(px, "pgstash_scram", "");
  check_role_reaches_server(px, "pgstash_md5", "");
  check_role_reaches_server(px, "pgstash_clear", "");
}

TEST_CASE("auth: md5 client authentication") {
  pgstash_instance px({"auth.method = \"md5\""});
  check_role_reaches_server(px, "pgstash_md5", "md5-secret-1");
  check_role_reaches_server(px, "pgstash_scram", "scram-secret-1");
  check_role_reaches_server(px, "pgstash_clear", "clear-secret-1");
  check_role_reaches_server(px, "postgres", "postgres-secret");

  pg_error wrong = pg_conn::connect_error(px.conninfo("user=pgstash_md5 password=nope"));
  CHECK(wrong.sqlstate == "28P01");
  CHECK(std::string(wrong.what()).find("pgstash_md5") != std::string::npos);

  // No password at all: libpq gives up client-side; pgstash must not have let it in.
  CHECK_THROWS_AS(pg_conn(px.conninfo("user=pgstash_md5")), pg_error);

  // A user missing from the auth file.
  pg_error unknown = pg_conn::connect_error(px.conninfo("user=nobody_here password=x"));
  CHECK(unknown.sqlstate == "28P01");
}

TEST_CASE("auth: scram-sha-256 client authentication") {
  pgstash_instance px({"auth.method = \"scram-sha-256\""});
  check_role_reaches_server(px, "pgstash_scram", "scram-secret-1");
  check_role_reaches_server(px, "pgstash_md5", "md5-secret-1");
  check_role_reaches_server(px, "pgstash_clear", "clear-secret-1");

  pg_error wrong =
      pg_conn::connect_error(px.conninfo("user=pgstash_scram password=scram-secret-2"));
  CHECK(wrong.sqlstate == "28P01");
  pg_error wrong2 = pg_conn::connect_error(px.conninfo("user=pgstash_clear password=nope"));
  CHECK(wrong2.sqlstate == "28P01");
}

// The salt pgstash offers `user` in its SCRAM server-first message.
std::string scram_salt_offered(int port, const std::string& user) {
  raw_conn c(port);
  REQUIRE(c.send(startup_packet({{"user", user}, {"database", "pgstash_test"}})));
  auto m = c.read_message(seconds(5));
  REQUIRE(m);
  REQUIRE(m->body.substr(0, 4) == be32(10));
  const std::string client_first = "n,,n=,r=rOprNGfwEbeRWgbNEkqO";
  REQUIRE(c.send(frame('p', cstr("SCRAM-SHA-256") + be32(client_first.size()) + client_first)));
  m = c.read_message(seconds(5));
  REQUIRE(m);
  REQUIRE(m->tag == 'R');
  REQUIRE(m->body.substr(0, 4) == be32(11));  // AuthenticationSASLContinue
  const std::string server_first = m->body.substr(4);
  const auto at = server_first.find(",s=");
  REQUIRE(at != std::string::npos);
  return server_first.substr(at + 3, server_first.find(',', at + 3) - at - 3);
}

TEST_CASE("auth: an unknown user goes through the same exchange as a known one") {
  // As PostgreSQL: refusing an unknown name before asking for a password would tell a client
  // which users exist.
  pgstash_instance px({"auth.method = \"scram-sha-256\""});
  for (const std::string user : {"pgstash_scram", "nobody_here", "pgstash_md5"}) {
    CAPTURE(user);
    raw_conn c(px.port());
    REQUIRE(c.send(startup_packet({{"user", user}, {"database", "pgstash_test"}})));
    auto m = c.read_message(seconds(5));
    REQUIRE(m);
    CHECK(m->tag == 'R');
    CHECK(m->body.substr(0, 4) == be32(10));  // AuthenticationSASL
  }
  // The salt is the same at every try, as a stored verifier's is, and differs across users.
  const std::string salt = scram_salt_offered(px.port(), "nobody_here");
  CHECK(scram_salt_offered(px.port(), "nobody_here") == salt);
  CHECK(scram_salt_offered(px.port(), "nobody_else") != salt);
  CHECK(scram_salt_offered(px.port(), "pgstash_clear") ==
        scram_salt_offered(px.port(), "pgstash_clear"));
  // And the exchange fails at its end, as a wrong password does.
  pg_error e = pg_conn::connect_error(px.conninfo("user=nobody_here password=x"));
  CHECK(e.sqlstate == "28P01");
  // Under md5 too, as PostgreSQL with password_encryption = 'scram-sha-256': a user with no
  // md5 hash is asked for SCRAM.
  pgstash_instance md5({"auth.method = \"md5\""});
  raw_conn c(md5.port());
  REQUIRE(c.send(startup_packet({{"user", "nobody_here"}, {"database", "pgstash_test"}})));
  auto m = c.read_message(seconds(5));
  REQUIRE(m);
  CHECK(m->tag == 'R');
  CHECK(m->body.substr(0, 4) == be32(10));
}

TEST_CASE("auth: userlist holding the server's SCRAM verifier") {
  const std::string verifier = stored_secret("pgstash_scram");
  REQUIRE(verifier.rfind("SCRAM-SHA-256$", 0) == 0);
  temp_dir dir;
  const std::string userlist =
      dir.write_file("userlist.txt", "\"pgstash_scram\" \"" + verifier + "\"\n");
  pgstash_instance px({"auth.method = \"scram-sha-256\"", "auth.file = " + toml_string(userlist)});

  // pgstash checks the client's proof against the verifier, then proves itself to the server
  // with the ClientKey recovered from that proof: it never knew the password.
  check_role_reaches_server(px, "pgstash_scram", "scram-secret-1");
  // Twice: the second login must work the same (fresh keys, maybe a reused connection).
  check_role_reaches_server(px, "pgstash_scram", "scram-secret-1");
  pg_error wrong =
      pg_conn::connect_error(px.conninfo("user=pgstash_scram password=scram-secret-x"));
  CHECK(wrong.sqlstate == "28P01");
}

TEST_CASE("auth: md5 client authentication against a userlist md5 hash") {
  const std::string hash = stored_secret("pgstash_md5");
  REQUIRE(hash.rfind("md5", 0) == 0);
  REQUIRE(hash.size() == 35);
  temp_dir dir;
  const std::string userlist = dir.write_file("userlist.txt", "\"pgstash_md5\" \"" + hash + "\"\n");
  pgstash_instance px({"auth.method = \"md5\"", "auth.file = " + toml_string(userlist)});

  // Client side: md5 against the stored hash. Server side: md5 again, from the hash.
  check_role_reaches_server(px, "pgstash_md5", "md5-secret-1");
  pg_error wrong = pg_conn::connect_error(px.conninfo("user=pgstash_md5 password=md5-secret-2"));
  CHECK(wrong.sqlstate == "28P01");
}

TEST_CASE("auth: an unknown database is refused by the server, through pgstash") {
  pgstash_instance px;
  const std::string db = "no_such_db_" + unique_suffix();
  pg_error e = pg_conn::connect_error(px.conninfo("dbname=" + db));
  CHECK(e.sqlstate == "3D000");
  CHECK(std::string(e.what()).find(db) != std::string::npos);
  // pgstash is fine afterwards.
  pg_conn ok(px.conninfo());
  CHECK(ok.exec("select 1") == "1");
}

TEST_CASE("auth: [databases] maps client names to server databases") {
  pgstash_instance px({"databases.appdb = \"pgstash_test\""});
  pg_conn c(px.conninfo("dbname=appdb"));
  CHECK(c.exec("select current_database()") == "pgstash_test");

  // Not in the table: pgstash refuses it itself (the server would have no idea what "other" is,
  // and "postgres" would exist there).
  pg_error other = pg_conn::connect_error(px.conninfo("dbname=other"));
  CHECK(other.sqlstate == "3D000");
  CHECK(std::string(other.what()).find("\"other\"") != std::string::npos);
  // pgstash's own errors name the pgstash session in their DETAIL.
  CHECK(std::string(other.what()).find("pgstash session c:") != std::string::npos);
  pg_error pg = pg_conn::connect_error(px.conninfo("dbname=postgres"));
  CHECK(pg.sqlstate == "3D000");
  // Server names are not client names either, unless mapped.
  pg_error direct = pg_conn::connect_error(px.conninfo("dbname=pgstash_test"));
  CHECK(direct.sqlstate == "3D000");
}

TEST_CASE("auth: listen.max_client_conn refuses the client beyond the limit") {
  pgstash_instance px({"listen.max_client_conn = 2"});
  auto a = std::make_unique<pg_conn>(px.conninfo());
  pg_conn b(px.conninfo());
  CHECK(a->exec("select 1") == "1");
  pg_error third = pg_conn::connect_error(px.conninfo());
  CHECK(third.sqlstate == "53300");
  CHECK(std::string(third.what()).find("pgstash session c:") != std::string::npos);
  CHECK(b.exec("select 2") == "2");

  // A slot frees up when a client leaves.
  a.reset();
  bool got_in = eventually(
      [&] {
        try {
          pg_conn c(px.conninfo());
          return c.exec("select 3") == "3";
        } catch (const pg_error&) {
          return false;
        }
      },
      seconds(5));
  CHECK(got_in);
}

TEST_CASE("auth: pgstash --check-config reports an unknown key with file and line") {
  const std::string bin = require_env("PGSTASH_BIN");
  temp_dir dir;
  const std::string bad = dir.write_file("bad.toml",
                                         "[listen]\n"
                                         "port = 6543\n"
                                         "\n"
                                         "[pool]\n"
                                         "size = 5\n"
                                         "sise_typo = 7\n");
  command_result r = run_command({bin, "--check-config", bad}, seconds(20));
  CAPTURE(r.output);
  CHECK_FALSE(r.timed_out);
  CHECK(r.exit_code != 0);
  CHECK(r.exit_code != -1);
  CHECK(r.output.find(bad + ":6") != std::string::npos);
  CHECK(r.output.find("sise_typo") != std::string::npos);

  // Control: the same file without the typo passes.
  const std::string good = dir.write_file("good.toml",
                                          "[listen]\n"
                                          "port = 6543\n"
                                          "\n"
                                          "[pool]\n"
                                          "size = 5\n");
  command_result ok = run_command({bin, "--check-config", good}, seconds(20));
  CAPTURE(ok.output);
  CHECK(ok.exit_code == 0);
}

TEST_CASE("auth: a SCRAM verifier in the userlist with md5 and trust client auth") {
  const std::string verifier = stored_secret("pgstash_scram");
  temp_dir dir;
  const std::string userlist =
      dir.write_file("userlist.txt", "\"pgstash_scram\" \"" + verifier + "\"\n");
  {
    // md5 cannot be checked against a verifier: pgstash asks for SCRAM instead, as PostgreSQL does.
    pgstash_instance px({"auth.method = \"md5\"", "auth.file = " + toml_string(userlist)});
    check_role_reaches_server(px, "pgstash_scram", "scram-secret-1");
    pg_error wrong = pg_conn::connect_error(px.conninfo("user=pgstash_scram password=nope"));
    CHECK(wrong.sqlstate == "28P01");
  }
  {
    // Under trust the client proves nothing, so pgstash has nothing to log in to the server
    // with: a clean 28P01, not a hang.
    pgstash_instance px({"auth.file = " + toml_string(userlist)});
    pg_error e = pg_conn::connect_error(px.conninfo("user=pgstash_scram"), seconds(10));
    CAPTURE(e.what());
    CHECK(e.sqlstate == "28P01");
    pg_conn other(px.conninfo());
    CHECK(other.exec("select 1") == "1");
  }
}

}  // namespace
}  // namespace pgstash::itest
