#include "wire/auth.hpp"

#include <doctest/doctest.h>

namespace pgstash::wire {
namespace {

using namespace std::string_literals;

// RFC 7677 section 3, and the same exchange with PostgreSQL's empty n=
// (expected values computed independently with Python's hashlib/hmac).
constexpr std::string_view k_client_nonce = "rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view k_server_nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr std::string_view k_salt_b64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
constexpr std::string_view k_server_first =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr std::string_view k_rfc_client_final =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr std::string_view k_rfc_server_final = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
constexpr std::string_view k_pg_client_final =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=";
constexpr std::string_view k_pg_server_final = "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=";
constexpr std::string_view k_pencil_secret =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

scram_secret pencil_secret() {
  return make_scram_secret("pencil", *base64_decode(k_salt_b64), 4096);
}

TEST_CASE("md5: known values") {
  // printf 'postgrespostgres' | md5sum
  CHECK(md5_password_hash("postgres", "postgres") == "md53175bce1d3201d16594cebf9d7eb3f9d");
  const auto salt = "\x01\x02\x03\x04"s;
  const auto expected = "md568be9ed08db75f318087ab337aaea044";
  CHECK(md5_salted_response("postgres", "postgres", salt) == expected);
  CHECK(md5_salted_response("postgres", "md53175bce1d3201d16594cebf9d7eb3f9d", salt) == expected);
}

TEST_CASE("base64: RFC 4648 vectors") {
  const std::pair<std::string, std::string> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [raw, text] : vectors) {
    CHECK(base64_encode(raw) == text);
    CHECK(base64_decode(text) == raw);
  }
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  CHECK(base64_decode(base64_encode(all)) == all);
}

TEST_CASE("base64: malformed input") {
  for (auto bad :
       {"Zg=", "Zg=a", "Z===", "====", "Zm9v\n", " Zm9", "Zm9", "Zm-v", "Zm9v====", "Zg==Zg=="}) {
    CHECK_MESSAGE(!base64_decode(bad), bad);
  }
}

TEST_CASE("SCRAM secret: make, format, parse") {
  const auto s = pencil_secret();
  CHECK(format_scram_secret(s) == k_pencil_secret);
  const auto parsed = parse_scram_secret(k_pencil_secret);
  REQUIRE(parsed);
  CHECK(parsed->iterations == 4096);
  CHECK(parsed->salt == s.salt);
  CHECK(parsed->stored_key == s.stored_key);
  CHECK(parsed->server_key == s.server_key);
  CHECK(format_scram_secret(*parsed) == k_pencil_secret);
}

TEST_CASE("SCRAM: a stable salt per user, and a stand-in verifier") {
  const std::string a = stable_salt("key-1", "alice");
  CHECK(a.size() == 16);
  CHECK(stable_salt("key-1", "alice") == a);
  CHECK(stable_salt("key-1", "bob") != a);
  CHECK(stable_salt("key-2", "alice") != a);
  const scram_secret s = stand_in_scram_secret(a);
  CHECK(s.salt == a);
  CHECK(s.iterations == 4096);
  // Random keys: no password derives them, and no two stand-ins share them.
  CHECK(stand_in_scram_secret(a).stored_key != s.stored_key);
  CHECK(make_scram_secret("", a, 4096).stored_key != s.stored_key);
}

TEST_CASE("SCRAM secret: malformed") {
  const std::string good(k_pencil_secret);
  const auto with = [&](std::string_view from, std::string_view to) {
    auto s = good;
    return s.replace(s.find(from), from.size(), to);
  };
  CHECK(!parse_scram_secret(with("SCRAM-SHA-256$", "SCRAM-SHA-1$")));
  CHECK(!parse_scram_secret(with("4096", "0")));
  CHECK(!parse_scram_secret(with("4096", "-1")));
  CHECK(!parse_scram_secret(with("4096", "4k")));
  CHECK(!parse_scram_secret(with("W22ZaJ0SNY7soEsUEjb6gQ==", "")));
  CHECK(!parse_scram_secret(with("WG5d8oPm", "WG5d")));  // StoredKey too short
  CHECK(!parse_scram_secret(with(":wfPL", "$wfPL")));
  CHECK(!parse_scram_secret(good + "$"));
  CHECK(!parse_scram_secret(good.substr(0, good.find(':', 20))));
  CHECK(!parse_scram_secret(""));
}

TEST_CASE("SCRAM server: RFC 7677 vector (n=user)") {
  scram_server server(pencil_secret(), std::string(k_server_nonce));
  CHECK(server.handle_client_first("n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == k_server_first);
  CHECK(server.handle_client_final(k_rfc_client_final) == k_rfc_server_final);
}

TEST_CASE("SCRAM server: PostgreSQL's empty n=") {
  scram_server server(pencil_secret(), std::string(k_server_nonce));
  CHECK(server.handle_client_first("n,,n=,r=rOprNGfwEbeRWgbNEkqO") == k_server_first);
  CHECK(server.handle_client_final(k_pg_client_final) == k_pg_server_final);
}

TEST_CASE("SCRAM client: PostgreSQL-style exchange, exact messages") {
  scram_client client("pencil", std::string(k_client_nonce));
  CHECK(client.client_first() == "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
  CHECK(!client.verify_server_final(k_pg_server_final));  // not before server-first
  CHECK(client.handle_server_first(k_server_first) == k_pg_client_final);
  CHECK(client.verify_server_final(k_pg_server_final));
  CHECK(!client.verify_server_final(k_rfc_server_final));
  CHECK(!client.verify_server_final("e=invalid-proof"));
  CHECK(!client.verify_server_final("v=" + base64_encode("short")));
}

TEST_CASE("SCRAM: client <-> server round trip, then with recovered keys") {
  const auto secret = make_scram_secret("s3cret", "0123456789abcdef", 4096);
  scram_server server(secret, "serverNONCE/+=");
  scram_client client("s3cret", "clientNONCE");
  const auto server_first = server.handle_client_first(client.client_first());
  REQUIRE(server_first);
  const auto client_final = client.handle_server_first(*server_first);
  REQUIRE(client_final);
  const auto server_final = server.handle_client_final(*client_final);
  REQUIRE(server_final);
  CHECK(client.verify_server_final(*server_final));
  // One exchange per server object.
  CHECK(!server.handle_client_final(*client_final));

  // pgstash logs in to a server holding the same verifier with the
  // ClientKey the first exchange revealed.
  scram_server upstream(secret, "upstreamNONCE");
  scram_client proxy(server.client_key(), secret.server_key, "proxyNONCE");
  const auto up_first = upstream.handle_client_first(proxy.client_first());
  REQUIRE(up_first);
  const auto up_final = proxy.handle_server_first(*up_first);
  REQUIRE(up_final);
  const auto up_server_final = upstream.handle_client_final(*up_final);
  REQUIRE(up_server_final);
  CHECK(proxy.verify_server_final(*up_server_final));
}

TEST_CASE("SCRAM: wrong password is rejected") {
  scram_server server(make_scram_secret("right", "salty", 4096), "srv");
  scram_client client("wrong", "cli");
  const auto server_first = server.handle_client_first(client.client_first());
  REQUIRE(server_first);
  const auto client_final = client.handle_server_first(*server_first);
  REQUIRE(client_final);
  CHECK(!server.handle_client_final(*client_final));
}

TEST_CASE("SCRAM server: one client-final per exchange") {
  scram_server server(pencil_secret(), std::string(k_server_nonce));
  REQUIRE(server.handle_client_first("n,,n=,r=rOprNGfwEbeRWgbNEkqO"));
  CHECK(!server.handle_client_final(k_rfc_client_final));  // proof for n=user
  CHECK(!server.handle_client_final(k_pg_client_final));   // right, but too late
}

TEST_CASE("SCRAM server: malformed or unsupported client messages") {
  const auto fresh = [] { return scram_server(pencil_secret(), std::string(k_server_nonce)); };
  for (auto bad : {"p=tls-server-end-point,,n=,r=abc", "n,a=admin,n=,r=abc", "n,,r=abc",
                   "n,,n=,r=", "n,,m=ext,n=,r=abc",
                   "n,,n=,r=a\x01"
                   "b",
                   "n,,n=,r=abc,bogus", "", "n,"}) {
    auto server = fresh();
    CHECK_MESSAGE(!server.handle_client_first(bad), bad);
  }
  // Extensions after the nonce are ignored, as PostgreSQL does.
  CHECK(fresh().handle_client_first("n,,n=,r=rOprNGfwEbeRWgbNEkqO,x=1") == k_server_first);

  auto no_first = fresh();
  CHECK(!no_first.handle_client_final(k_pg_client_final));

  const std::string final_msg(k_pg_client_final);
  const auto with = [&](std::string_view from, std::string_view to) {
    auto s = final_msg;
    return s.replace(s.find(from), from.size(), to);
  };
  for (const auto& bad :
       {with("c=biws", "c=eSws"), with("r=rOpr", "r=XOpr"), with(",p=qvT2", ",p=qvT3"),
        with(",p=", ",q="), final_msg.substr(0, final_msg.size() - 4), with("c=biws,", "")}) {
    auto server = fresh();
    REQUIRE(server.handle_client_first("n,,n=,r=rOprNGfwEbeRWgbNEkqO"));
    CHECK_MESSAGE(!server.handle_client_final(bad), bad);
  }
}

TEST_CASE("SCRAM server: GS2 flag y (client could bind, we offer no -PLUS)") {
  const auto secret = make_scram_secret("pw", "salt", 4096);
  scram_server server(secret, "srv");
  scram_client client("pw", "cli");
  REQUIRE(server.handle_client_first("y,,n=,r=cli"));
  // The client's final says c=biws ("n,,"), which must not match "y,,".
  const auto client_final = client.handle_server_first("r=clisrv,s=c2FsdA==,i=4096");
  REQUIRE(client_final);
  CHECK(!server.handle_client_final(*client_final));
}

TEST_CASE("SCRAM client: malformed server-first") {
  for (auto bad :
       {"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  // nonce not extended
        "r=XXprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
        "r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096",
        "r=rOprNGfwEbeRWgbNEkqOsrv,s=,i=4096", "r=rOprNGfwEbeRWgbNEkqOsrv,i=4096",
        "m=x,r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "e=oops", ""}) {
    scram_client client("pencil", std::string(k_client_nonce));
    CHECK_MESSAGE(!client.handle_server_first(bad), bad);
  }
}

}  // namespace
}  // namespace pgstash::wire
