#include "invalidation/wal_barrier.hpp"

#include <chrono>

#include <doctest/doctest.h>

using namespace pgstash::invalidation;
using namespace std::chrono_literals;

namespace {

using clock_type = wal_barrier::clock;
const clock_type::time_point t0 = clock_type::now();

}  // namespace

TEST_CASE("parse_lsn: PostgreSQL's text form of a WAL position") {
  CHECK(parse_lsn("0/0") == 0u);
  CHECK(parse_lsn("16/B374D848") == ((0x16ull << 32) | 0xB374D848ull));
  CHECK(parse_lsn("FFFFFFFF/FFFFFFFF") == ~0ull);
  CHECK_FALSE(parse_lsn(""));
  CHECK_FALSE(parse_lsn("16B374D848"));
  CHECK_FALSE(parse_lsn("/1"));
  CHECK_FALSE(parse_lsn("1/"));
  CHECK_FALSE(parse_lsn("1/G"));
  CHECK_FALSE(parse_lsn("100000000/0"));
  CHECK_FALSE(parse_lsn("1/2 "));
}

TEST_CASE("last_record_end: a page header is no record's end") {
  CHECK(last_record_end(0x1000028, 8192) == 0x1000000);  // long header, segment start
  CHECK(last_record_end(0x1002018, 8192) == 0x1002000);  // short header
  CHECK(last_record_end(0x1002028, 8192) == 0x1002000);  // no record ends 16 bytes in
  CHECK(last_record_end(0x1002030, 8192) == 0x1002030);  // a record ends here
  CHECK(last_record_end(0x1002018, 0) == 0x1002018);
}

TEST_CASE(
    "wal_barrier: a read is proven only by a poll sent after it, once its position is applied") {
  int wanted = 0;
  wal_barrier b([&] { ++wanted; });
  CHECK_FALSE(b.passed(t0));
  CHECK_FALSE(b.poll_due());

  int woken = 0;
  CHECK_FALSE(b.wait(t0, t0 + 1s, [&] { ++woken; }));
  CHECK(wanted == 1);
  CHECK(b.poll_due());

  b.poll_sent(t0 + 1ms);
  CHECK_FALSE(b.poll_due());
  b.polled(500);
  CHECK(b.behind_since() == t0 + 1ms);
  CHECK(woken == 0);
  b.applied(499);
  CHECK(woken == 0);
  CHECK_FALSE(b.passed(t0));
  b.applied(500);
  CHECK(woken == 1);
  CHECK_FALSE(b.behind_since());
  CHECK(b.passed(t0));
  CHECK(b.passed(t0 + 1ms));
  // A read that arrived after the poll was sent is not covered by it.
  CHECK_FALSE(b.passed(t0 + 2ms));
  CHECK_FALSE(b.wait(t0 + 2ms, t0 + 1s, [&] { ++woken; }));
  CHECK(b.poll_due());
  // A later read proven by an earlier-arrived one's check passes at once.
  CHECK(b.wait(t0, t0 + 1s, [&] { ++woken; }));
}

TEST_CASE("wal_barrier: reads that arrive while a poll runs wait for the next poll") {
  int wanted = 0;
  wal_barrier b([&] { ++wanted; });
  int first = 0, second = 0;
  b.wait(t0, t0 + 1s, [&] { ++first; });
  b.poll_sent(t0 + 1ms);
  b.wait(t0 + 2ms, t0 + 1s, [&] { ++second; });
  CHECK(wanted == 1);  // a poll runs: the second waiter does not ask for one
  CHECK_FALSE(b.poll_due());
  b.polled(100);  // already applied? not yet
  CHECK(b.poll_due());
  b.poll_sent(t0 + 3ms);
  b.polled(200);
  b.applied(150);
  CHECK(first == 1);
  CHECK(second == 0);
  b.applied(200);
  CHECK(second == 1);
  CHECK(b.passed(t0 + 3ms));
}

TEST_CASE("wal_barrier: a position already applied proves its poll when it is read") {
  wal_barrier b;
  b.applied(1000);
  int woken = 0;
  b.wait(t0, t0 + 1s, [&] { ++woken; });
  b.poll_sent(t0 + 1ms);
  b.polled(1000);
  CHECK(woken == 1);
  CHECK_FALSE(b.behind_since());
}

TEST_CASE("wal_barrier: a stream that stops wakes its waiters unproven and forgets its positions") {
  wal_barrier b;
  int woken = 0;
  b.wait(t0, t0 + 1s, [&] { ++woken; });
  b.poll_sent(t0 + 1ms);
  b.polled(700);
  b.applied(600);
  b.reset();
  CHECK(woken == 1);
  CHECK_FALSE(b.passed(t0));
  CHECK_FALSE(b.behind_since());
  // The new stream's positions start again; the old poll proves nothing.
  b.applied(800);
  CHECK_FALSE(b.passed(t0));
  // A read that arrived before the forgotten poll was sent wants a new one.
  b.wait(t0, t0 + 1s, [&] { ++woken; });
  CHECK(b.poll_due());
}

TEST_CASE("wal_barrier: a waiter that gave up is dropped without a call") {
  wal_barrier b;
  int woken = 0;
  b.wait(t0, t0 + 10ms, [&] { ++woken; });
  b.wait(t0, t0 + 1s, [&] { ++woken; });
  b.expire(t0 + 20ms);
  b.poll_sent(t0 + 21ms);
  b.polled(1);
  b.applied(1);
  CHECK(woken == 1);
}
