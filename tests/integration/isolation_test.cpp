// One bad client must not hurt the others: while well-behaved clients run
// pgbench-style transactions through a small transaction-mode pool, a hostile
// client keeps sending what the differential fuzzer's malformed mode sends
// (bad lengths, unknown tags, truncated and garbled extended-protocol
// frames, frames cut off by a disconnect, oversized frames, a vanishing
// client mid-pipeline). pgstash stays up, the others see no error, and its
// memory stays bounded.
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "harness.hpp"

namespace pgstash::itest {
namespace {

constexpr long k_rss_slack_kb = 64 * 1024;

std::string random_bytes(std::mt19937& rng, std::size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// One hostile burst on a fresh, logged-in connection.
void hostile_burst(int port, std::mt19937& rng) {
  raw_conn c(port);
  c.login("postgres", "pgstash_test");
  std::string out;
  switch (rng() % 9) {
    case 0:  // a length below 4
      out = std::string("Q") + be32(rng() % 4);
      break;
    case 1:  // beyond limits.max_message_size, header only
      out = std::string("P") + be32(0x7fffff00u);
      break;
    case 2:  // an unknown tag
      out = frame(static_cast<char>('a' + rng() % 3), random_bytes(rng, rng() % 100));
      break;
    case 3:  // a Bind that claims more parameters than it carries
      out = frame('P', cstr("") + cstr("select $1") + be16(0)) +
            frame('B', cstr("") + cstr("") + be16(0) + be16(3) + be32(4) + "ab") + frame('S', "");
      break;
    case 4:  // a Parse without its terminators
      out = frame('P', "s1") + frame('S', "");
      break;
    case 5:  // a pipeline whose client vanishes before its Sync
      out = frame('P', cstr("") + cstr("select pg_sleep(0.05)") + be16(0)) +
            frame('B', cstr("") + cstr("") + be16(0) + be16(0) + be16(0)) + frame('E', cstr("") + be32(0));
      break;
    case 6: {  // a large Query cut off half-way
      const std::string q = frame('Q', cstr("select '" + std::string(200000, 'x') + "'"));
      out = q.substr(0, q.size() / 2);
      break;
    }
    case 7:  // random frames
      for (int i = 0; i < 10; ++i) out += frame("QPBEDCHSdcf"[rng() % 11], random_bytes(rng, rng() % 64));
      break;
    default:  // a transaction left open
      out = frame('Q', cstr("begin; select 1"));
      break;
  }
  c.send(out);
  c.read_some(milliseconds(rng() % 2 ? 20 : 0));
  // Closing with whatever is in flight is part of the test.
}

TEST_CASE("isolation: a hostile client never hurts the others in transaction mode") {
  pgstash_instance px({"pool.mode = \"transaction\"", "pool.size = 4",
                       "pool.query_wait_timeout_ms = 10000", "limits.max_message_size = 1048576"});
  const std::string table = "itest_isolation_" + unique_suffix();
  {
    pg_conn setup(direct_conninfo());
    setup.exec("create table " + table + " (worker int primary key, balance bigint)");
    setup.exec("insert into " + table + " select g, 0 from generate_series(0, 7) g");
  }
  std::atomic<bool> stop = false;
  std::atomic<int> errors = 0;
  std::atomic<long> transactions = 0;
  std::vector<std::string> first_error(8);
  std::vector<std::thread> workers;
  for (int w = 0; w < 8; ++w) {
    workers.emplace_back([&, w] {
      try {
        pg_conn c(px.conninfo());
        const std::string id = std::to_string(w);
        long expected = 0;
        while (!stop) {
          // TPC-B's shape: a transaction of reads and writes, simple or extended.
          c.exec("begin");
          c.exec("update " + table + " set balance = balance + 1 where worker = " + id);
          ++expected;
          const std::string got = c.exec("select balance from " + table + " where worker = " + id);
          if (got != std::to_string(expected)) throw pg_error("", "balance " + got);
          c.exec("commit");
          ++transactions;
        }
      } catch (const std::exception& e) {
        first_error[w] = e.what();
        ++errors;
      }
    });
  }
  sleep_for(milliseconds(300));
  const long rss0 = px.rss_kb();
  long rss_max = rss0;
  std::mt19937 rng(std::random_device{}());
  int bursts = 0;
  const auto until = clock::now() + seconds(8);
  while (clock::now() < until) {
    hostile_burst(px.port(), rng);
    ++bursts;
    rss_max = std::max(rss_max, px.rss_kb());
  }
  stop = true;
  for (auto& t : workers) t.join();
  MESSAGE(bursts << " hostile bursts beside " << transactions.load() << " transactions");
  for (const auto& e : first_error) CHECK_MESSAGE(e.empty(), e);
  CHECK(errors == 0);
  CHECK(transactions > 100);
  REQUIRE(px.alive());
  CAPTURE(rss0);
  CAPTURE(rss_max);
  CHECK(rss_max - rss0 < k_rss_slack_kb);
  pg_conn fresh(px.conninfo());
  CHECK(fresh.exec("select count(*) from " + table) == "8");
  pg_conn(direct_conninfo()).exec("drop table " + table);
}

}  // namespace
}  // namespace pgstash::itest
