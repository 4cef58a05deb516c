// TLS on both sides: clients to pgstash (listen.tls_*), pgstash to PostgreSQL
// (server.tls, server.tls_ca_file), and the SSLRequest negotiation itself.
#include <doctest/doctest.h>

#include "harness.hpp"

namespace pgstash::itest {
namespace {

std::vector<std::string> client_tls_config() {
  return {"listen.tls_cert_file = " + toml_string(cluster_server_cert()),
          "listen.tls_key_file = " + toml_string(cluster_server_key())};
}

// Whether the server sees this session's connection from pgstash as TLS.
std::string server_side_ssl(pg_conn& c) {
  return c.exec("select ssl from pg_stat_ssl where pid = pg_backend_pid()");
}

TEST_CASE("tls: clients can use TLS when listen.tls_cert_file is set") {
  pgstash_instance px(client_tls_config());

  pg_conn tls(px.conninfo("sslmode=require"));
  CHECK(PQsslInUse(tls.get()) == 1);
  CHECK(tls.exec("select 1") == "1");

  // Verifying pgstash's certificate against the CA that issued it, for 127.0.0.1.
  pg_conn verified(
      px.conninfo("sslmode=verify-full sslrootcert=" + cluster_value("PGSTASH_PG_CA")));
  CHECK(PQsslInUse(verified.get()) == 1);
  CHECK(verified.exec("select current_user") == "postgres");

  // A large reply over TLS arrives intact (records split across reads).
  CHECK(tls.exec("select sum(length(repeat('y', 5000))) from generate_series(1, 400)") ==
        "2000000");

  pg_conn plain(px.conninfo("sslmode=disable"));
  CHECK(PQsslInUse(plain.get()) == 0);
  CHECK(plain.exec("select 2") == "2");
}

TEST_CASE("tls: without listen TLS, sslmode=require fails and prefer falls back to plain") {
  pgstash_instance px;
  CHECK_THROWS_AS(pg_conn(px.conninfo("sslmode=require")), pg_error);
  pg_conn prefer(px.conninfo("sslmode=prefer"));
  CHECK(PQsslInUse(prefer.get()) == 0);
  CHECK(prefer.exec("select 1") == "1");
}

TEST_CASE("tls: server.tls verify-full with the right CA gives a TLS server connection") {
  pgstash_instance px({"server.tls = \"verify-full\"",
                       "server.tls_ca_file = " + toml_string(cluster_value("PGSTASH_PG_CA"))});
  pg_conn c(px.conninfo());
  CHECK(server_side_ssl(c) == "t");
  // Also for a role the server makes authenticate (SCRAM inside TLS).
  pg_conn scram(px.conninfo("user=pgstash_scram"));
  CHECK(server_side_ssl(scram) == "t");
}

TEST_CASE("tls: server.tls require and disable") {
  {
    pgstash_instance px({"server.tls = \"require\""});
    pg_conn c(px.conninfo());
    CHECK(server_side_ssl(c) == "t");
  }
  {
    pgstash_instance px({"server.tls = \"disable\""});
    pg_conn c(px.conninfo());
    CHECK(server_side_ssl(c) == "f");
  }
}

TEST_CASE("tls: server.tls verify-full with the wrong CA fails the client quickly") {
  temp_dir dir;
  command_result ca = run_command(
      {"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
       "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", dir.path() + "/wrong.key", "-out",
       dir.path() + "/wrong.crt", "-days", "2", "-subj", "/CN=not the pgstash test CA"},
      seconds(30));
  CAPTURE(ca.output);
  REQUIRE(ca.exit_code == 0);

  // A long connect timeout: the failure must come from the certificate check, not from it.
  pgstash_instance px({"server.tls = \"verify-full\"",
                       "server.tls_ca_file = " + toml_string(dir.path() + "/wrong.crt"),
                       "server.connect_timeout_ms = 30000"});
  const auto t0 = clock::now();
  pg_error e = pg_conn::connect_error(px.conninfo(), seconds(20));
  const double took = seconds_since(t0);
  CAPTURE(e.what());
  CAPTURE(took);
  CHECK(e.sqlstate == "08006");
  CHECK(took < 10.0);
  CHECK(px.alive());
}

TEST_CASE("tls: data after SSLRequest is refused, never answered with S") {
  pgstash_instance px(client_tls_config());

  // Control: a lone SSLRequest is accepted.
  {
    raw_conn c(px.port());
    REQUIRE(c.send(ssl_request()));
    auto answer = c.read_exact(1, seconds(5));
    REQUIRE(answer);
    CHECK(*answer == "S");
  }

  // SSLRequest and a plaintext StartupMessage in one write: a man in the middle could have
  // injected the latter, so it must not be processed as if it came over TLS.
  raw_conn c(px.port());
  REQUIRE(
      c.send(ssl_request() + startup_packet({{"user", "postgres"}, {"database", "pgstash_test"}})));
  auto first = c.read_exact(1, seconds(5));
  if (first) {
    CHECK(*first != "S");
    CHECK(*first == "E");
    if (*first == "E") {
      auto len = c.read_exact(4, seconds(5));
      REQUIRE(len);
      const auto* l = reinterpret_cast<const unsigned char*>(len->data());
      std::uint32_t n = (std::uint32_t{l[0]} << 24) | (std::uint32_t{l[1]} << 16) |
                        (std::uint32_t{l[2]} << 8) | std::uint32_t{l[3]};
      REQUIRE(n >= 4);
      REQUIRE(n < 10000);
      auto body = c.read_exact(n - 4, seconds(5));
      REQUIRE(body);
      CHECK(parse_error_fields(*body)['C'] == "08P01");
    }
  }
  // Either way, the connection ends.
  CHECK(c.wait_closed(seconds(5)));

  // pgstash is still serving TLS clients.
  pg_conn tls(px.conninfo("sslmode=require"));
  CHECK(tls.exec("select 1") == "1");
}

TEST_CASE("tls: password authentication inside client TLS") {
  std::vector<std::string> cfg = client_tls_config();
  cfg.push_back("auth.method = \"scram-sha-256\"");
  pgstash_instance px(cfg);
  // libpq's default channel_binding=prefer: over TLS it tells a server that offers no
  // SCRAM-SHA-256-PLUS that it could have bound ("y" flag); pgstash must accept that.
  pg_conn prefer(px.conninfo("sslmode=require user=pgstash_scram password=scram-secret-1"));
  CHECK(PQsslInUse(prefer.get()) == 1);
  CHECK(prefer.exec("select current_user") == "pgstash_scram");
  pg_conn no_binding(px.conninfo(
      "sslmode=require channel_binding=disable user=pgstash_md5 password=md5-secret-1"));
  CHECK(no_binding.exec("select current_user") == "pgstash_md5");
  pg_error wrong = pg_conn::connect_error(
      px.conninfo("sslmode=require user=pgstash_scram password=scram-secret-2"));
  CHECK(wrong.sqlstate == "28P01");
}

TEST_CASE("tls: GSSENCRequest is declined and the startup goes on in plaintext") {
  pgstash_instance px(client_tls_config());
  raw_conn c(px.port());
  REQUIRE(c.send(be32(8) + be32(80877104)));
  auto answer = c.read_exact(1, seconds(5));
  REQUIRE(answer);
  CHECK(*answer == "N");
  c.login("postgres", "pgstash_test");
  REQUIRE(c.send(query_frame("select 1")));
  auto reply = c.read_until_ready();
  CHECK(reply.front().tag == 'T');
}

TEST_CASE("tls: a failed TLS handshake ends only that client") {
  pgstash_instance px(client_tls_config());
  pg_conn b(px.conninfo("sslmode=require"));
  {  // Garbage instead of a ClientHello.
    raw_conn c(px.port());
    REQUIRE(c.send(ssl_request()));
    REQUIRE(c.read_exact(1, seconds(5)) == std::optional<std::string>("S"));
    REQUIRE(c.send(std::string(300, '\x16') + "not a TLS record"));
    CHECK(c.wait_closed(seconds(5)));
  }
  {  // A plaintext startup packet instead of a ClientHello.
    raw_conn c(px.port());
    REQUIRE(c.send(ssl_request()));
    REQUIRE(c.read_exact(1, seconds(5)) == std::optional<std::string>("S"));
    REQUIRE(c.send(startup_packet({{"user", "postgres"}, {"database", "pgstash_test"}})));
    refusal r = read_refusal(c, seconds(5));
    CHECK(r.closed);
    if (r.first) CHECK(r.first->tag != 'R');  // never authenticated in plaintext
  }
  CHECK(b.exec("select 1") == "1");
  pg_conn again(px.conninfo("sslmode=require"));
  CHECK(PQsslInUse(again.get()) == 1);
}

TEST_CASE("tls: large messages in both directions over client TLS") {
  pgstash_instance px(client_tls_config());
  pg_conn c(px.conninfo("sslmode=require"));
  REQUIRE(PQsslInUse(c.get()) == 1);
  c.exec("create temp table itest_tls_copy(t text)");
  const auto deadline = clock::now() + seconds(60);
  REQUIRE(PQsendQuery(c.get(), "copy itest_tls_copy from stdin"));
  result_ptr r = c.next_result(deadline);
  REQUIRE(PQresultStatus(r.get()) == PGRES_COPY_IN);
  std::string row = std::string(511, 't') + "\n";
  std::string chunk;
  while (chunk.size() < (1u << 20)) chunk += row;
  for (int i = 0; i < 8; ++i)
    REQUIRE(PQputCopyData(c.get(), chunk.data(), static_cast<int>(chunk.size())) == 1);
  REQUIRE(PQputCopyEnd(c.get(), nullptr) == 1);
  r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_COMMAND_OK);
  CHECK_FALSE(c.next_result(deadline));
  const std::string rows = std::to_string(8 * (chunk.size() / row.size()));
  CHECK(c.exec("select count(*) from itest_tls_copy where length(t) = 511") == rows);
  // One 3 MB value back.
  CHECK(
      c.exec("select length(string_agg(t, '')) from (select t from itest_tls_copy limit 6000) s") ==
      std::to_string(6000 * 511));
}

}  // namespace
}  // namespace pgstash::itest
