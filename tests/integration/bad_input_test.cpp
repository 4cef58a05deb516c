// Hostile or broken clients on raw sockets, against a live pgstash that keeps
// serving a well-behaved libpq client throughout. pgstash must answer what it
// refuses with an ErrorResponse (08P01 for framing) or a close, never hang
// the connection, never crash, and never let memory run away.
#include <chrono>
#include <cstdlib>
#include <memory>
#include <random>

#include <doctest/doctest.h>

#include "harness.hpp"
#include <signal.h>

namespace pgstash::itest {
namespace {

constexpr long k_rss_slack_kb = 64 * 1024;

// A pgstash with small message limits, plus client B, connected and working.
struct live_pgstash {
  live_pgstash()
      : px({"limits.max_message_size = 1048576", "pool.query_wait_timeout_ms = 10000"}),
        b(px.conninfo("application_name=itest_b")) {
    REQUIRE(b.exec("select 1") == "1");
    rss0 = px.rss_kb();
    REQUIRE(rss0 > 0);
  }

  // B still works, pgstash is alive and its memory is bounded.
  void check_healthy(const std::string& after) {
    CAPTURE(after);
    REQUIRE(px.alive());
    CHECK(b.exec("select 1") == "1");
    const long rss = px.rss_kb();
    CAPTURE(rss0);
    CAPTURE(rss);
    CHECK(rss - rss0 < k_rss_slack_kb);
  }

  // Ends with a fresh libpq client and a liveness check of the process.
  void check_still_serving() {
    pg_conn fresh(px.conninfo(), seconds(10));
    CHECK(fresh.exec("select 'fresh'") == "fresh");
    CHECK(b.exec("select 2") == "2");
    CHECK(::kill(px.pid(), 0) == 0);
    CHECK(px.alive());
  }

  pgstash_instance px;
  pg_conn b;
  long rss0 = 0;
};

std::mt19937 seeded_rng() {
  unsigned seed = std::random_device{}();
  if (const char* s = std::getenv("PGSTASH_TEST_SEED")) seed = static_cast<unsigned>(std::stoul(s));
  MESSAGE("random seed " << seed << " (set PGSTASH_TEST_SEED to replay)");
  return std::mt19937(seed);
}

std::string random_bytes(std::mt19937& rng, std::size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// pgstash must refuse: an ErrorResponse with one of `codes` and/or a close, within 5 s.
void check_refused(raw_conn& c, std::initializer_list<const char*> codes, const std::string& what) {
  CAPTURE(what);
  refusal r = read_refusal(c, seconds(5));
  CHECK(r.closed);
  if (r.first) {
    CAPTURE(r.first->tag);
    CHECK(r.first->tag == 'E');
    bool known = false;
    for (const char* code : codes) known |= r.sqlstate() == code;
    CAPTURE(r.sqlstate());
    CHECK(known);
  }
}

TEST_CASE("bad input: random bytes instead of a startup packet") {
  live_pgstash live;
  auto rng = seeded_rng();
  // Many at once, so that the waiting is shared.
  std::vector<std::unique_ptr<raw_conn>> conns;
  for (int i = 0; i < 60; ++i) {
    auto c = std::make_unique<raw_conn>(live.px.port());
    c->send(random_bytes(rng, 1 + rng() % 3000));
    conns.push_back(std::move(c));
  }
  for (auto& c : conns) c->read_some(milliseconds(20));
  conns.clear();
  live.check_healthy("random bytes");
  live.check_still_serving();
}

TEST_CASE("bad input: malformed startup packets") {
  live_pgstash live;
  const std::string good = startup_packet({{"user", "postgres"}, {"database", "pgstash_test"}});

  {  // Truncated, then gone.
    raw_conn c(live.px.port());
    REQUIRE(c.send(good.substr(0, 11)));
  }
  live.check_healthy("truncated startup packet");

  for (std::uint32_t len : {0u, 1u, 4u, 7u}) {
    raw_conn c(live.px.port());
    REQUIRE(c.send(be32(len) + be32(196608)));
    check_refused(c, {"08P01"}, "startup length " + std::to_string(len));
    live.check_healthy("startup length " + std::to_string(len));
  }

  {  // A length far beyond any sane startup packet: refuse at once rather than wait for it.
    raw_conn c(live.px.port());
    REQUIRE(c.send(be32(0x7fffffff) + be32(196608) + "user"));
    check_refused(c, {"08P01"}, "huge startup length");
    live.check_healthy("huge startup length");
  }

  {  // No user.
    raw_conn c(live.px.port());
    REQUIRE(c.send(startup_packet({{"database", "pgstash_test"}})));
    check_refused(c, {"28000", "08P01"}, "no user");
    live.check_healthy("no user");
  }

  {  // Missing final terminator.
    std::string body = be32(196608) + std::string("user\0postgres\0database\0pgstash_test", 35);
    raw_conn c(live.px.port());
    REQUIRE(c.send(be32(static_cast<std::uint32_t>(body.size() + 4)) + body));
    check_refused(c, {"08P01"}, "unterminated startup packet");
    live.check_healthy("unterminated startup packet");
  }

  {  // An unknown request code (protocol 2.0 is refused in 2.0's format: see below).
    raw_conn d(live.px.port());
    REQUIRE(d.send(be32(8) + be32(0x04d21234)));
    check_refused(d, {"0A000", "08P01"}, "unknown request code");
    live.check_healthy("bad protocol");
  }

  {  // A StartupMessage where a regular message is due: after login, 'Q' is expected.
    raw_conn c(live.px.port());
    c.login("postgres", "pgstash_test");
    REQUIRE(c.send(good));
    refusal r = read_refusal(c, seconds(5));
    CHECK(r.closed);
    live.check_healthy("startup packet after login");
  }
  live.check_still_serving();
}

// What a server answers a broken startup packet: the SQLSTATE of its
// ErrorResponse, "" if it closed without a word, or else all it sent.
std::string startup_outcome(int port, const std::string& bytes) {
  raw_conn c(port);
  c.send(bytes);
  std::string answer;
  const auto deadline = std::chrono::steady_clock::now() + seconds(5);
  while (!c.closed() && std::chrono::steady_clock::now() < deadline) answer += c.read_some(milliseconds(100));
  if (!c.closed()) return "still open";
  const bool one_v3_message =
      answer.size() >= 5 && answer[0] == 'E' && be32(static_cast<std::uint32_t>(answer.size() - 1)) == answer.substr(1, 4);
  if (one_v3_message) return parse_error_fields(std::string_view(answer).substr(5))['C'];
  return answer;
}

TEST_CASE("bad input: startup packets are refused as PostgreSQL refuses them") {
  live_pgstash live;
  const int postgres_port = std::stoi(cluster_value("PGSTASH_PG_PORT"));
  const std::string protocol_3 = be32(196608);
  const std::vector<std::pair<std::string, std::string>> cases = {
      // node-postgres' connect(); end() sends Terminate before any startup packet.
      {"terminate before startup", std::string("X\0\0\0\4", 5)},
      {"http request", "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"},
      {"length 0", be32(0) + protocol_3},
      {"length 7", be32(7) + protocol_3},
      {"huge length", be32(0x7fffffff) + protocol_3 + "user"},
      {"no user", startup_packet({{"database", "pgstash_test"}})},
      {"empty user", startup_packet({{"user", ""}})},
      {"no final terminator",
       be32(4 + 4 + 35) + protocol_3 + std::string("user\0postgres\0database\0pgstash_test", 35)},
      {"bytes after the terminator",
       be32(4 + 4 + 17) + protocol_3 + std::string("user\0postgres\0\0xyz", 17)},
      {"protocol 2.0", startup_packet({{"user", "postgres"}}, 2u << 16)},
      {"protocol 4.0", startup_packet({{"user", "postgres"}}, 4u << 16)},
      {"unknown request code", be32(8) + be32(0x04d21234)},
  };
  for (const auto& [what, bytes] : cases) {
    CAPTURE(what);
    const std::string expected = startup_outcome(postgres_port, bytes);
    REQUIRE(expected != "still open");
    CHECK(startup_outcome(live.px.port(), bytes) == expected);
  }
  live.check_still_serving();
}

TEST_CASE("bad input: an oversized frame after login") {
  live_pgstash live;
  raw_conn c(live.px.port());
  c.login("postgres", "pgstash_test");
  // Control: the hand-made session works.
  REQUIRE(c.send(query_frame("select 1")));
  auto reply = c.read_until_ready();
  CHECK(reply.front().tag == 'T');

  // Says 10 MB, limit is 1 MB: refused from the header alone.
  REQUIRE(c.send(std::string("Q") + be32(10u << 20) + std::string(1000, 'x')));
  check_refused(c, {"08P01"}, "10 MB frame");
  live.check_healthy("10 MB frame");

  // Just above the limit, with the whole frame actually sent.
  raw_conn d(live.px.port());
  d.login("postgres", "pgstash_test");
  std::string big = "select '" + std::string(1100000, 'y') + "'";
  d.send(query_frame(big), seconds(10));
  check_refused(d, {"08P01"}, "1.1 MB frame");
  live.check_healthy("1.1 MB frame");

  // Just under it is fine.
  raw_conn e(live.px.port());
  e.login("postgres", "pgstash_test");
  REQUIRE(e.send(query_frame("select length('" + std::string(1000000, 'z') + "')"), seconds(10)));
  auto ok = e.read_until_ready();
  REQUIRE(ok.size() >= 3);
  CHECK(ok.front().tag == 'T');
  live.check_healthy("1 MB frame");
  live.check_still_serving();
}

TEST_CASE("bad input: a frame length below 4 after login") {
  live_pgstash live;
  for (std::uint32_t len : {0u, 3u}) {
    raw_conn c(live.px.port());
    c.login("postgres", "pgstash_test");
    REQUIRE(c.send(std::string("Q") + be32(len) + "select 1"));
    check_refused(c, {"08P01"}, "frame length " + std::to_string(len));
    live.check_healthy("frame length " + std::to_string(len));
  }
  live.check_still_serving();
}

TEST_CASE("bad input: random frames after login") {
  live_pgstash live;
  auto rng = seeded_rng();
  const std::string tags = "QPBEDCHSXdcfFp";
  int frames = 0;
  for (int session = 0; session < 40; ++session) {
    raw_conn c(live.px.port());
    c.login("postgres", "pgstash_test");
    std::string out;
    const int n = 5 + static_cast<int>(rng() % 15);
    for (int i = 0; i < n; ++i, ++frames) {
      const char tag = rng() % 8 == 0 ? static_cast<char>(rng() & 0xff) : tags[rng() % tags.size()];
      const unsigned kind = rng() % 20;
      if (kind == 0) {  // length below 4
        out += tag + be32(rng() % 4);
      } else if (kind == 1) {  // beyond max_message_size, header only
        out += tag + be32(0x100000 + 1 + rng() % 0x7fefffff);
      } else if (kind < 5 && tag == 'Q') {  // something the server will run
        out += query_frame(rng() % 2 ? "select 1" : "begin; select pg_sleep(0.01)");
      } else {
        out += frame(tag, random_bytes(rng, rng() % 200));
      }
    }
    c.send(out);
    c.read_some(milliseconds(rng() % 2 ? 30 : 0));
    if (rng() % 3 == 0) c.send(frame('X', ""));
    // Closing with whatever is in flight is part of the test.
  }
  MESSAGE(frames << " random frames sent");
  live.check_healthy("random frames");
  live.check_still_serving();
}

}  // namespace
}  // namespace pgstash::itest
