#include "proxy/in_flight.hpp"

#include <atomic>
#include <thread>

#include <doctest/doctest.h>

using pgstash::cache::key;
using pgstash::proxy::in_flight_results;

TEST_CASE("in_flight: one claim per key; waiters woken once at release") {
  in_flight_results flights;
  const key a{1, 2}, b{3, 4};
  auto first = flights.try_claim(a);
  REQUIRE(first);
  CHECK_FALSE(flights.try_claim(a));
  auto other = flights.try_claim(b);
  CHECK(other);
  CHECK(flights.claimed() == 2);

  int woken = 0;
  CHECK(flights.wait(a, [&] { ++woken; }));
  CHECK(flights.wait(a, [&] { ++woken; }));
  CHECK(woken == 0);
  first->release();
  CHECK(woken == 2);
  first.reset();  // a second release wakes nobody again
  CHECK(woken == 2);
  // Nothing in flight: the caller goes on at once.
  CHECK_FALSE(flights.wait(a, [&] { ++woken; }));
  CHECK(flights.try_claim(a));
}

TEST_CASE("in_flight: a claim dropped unreleased still wakes its waiters") {
  in_flight_results flights;
  const key k{5, 6};
  bool woken = false;
  {
    auto claim = flights.try_claim(k);
    CHECK(flights.wait(k, [&] { woken = true; }));
  }
  CHECK(woken);
  CHECK(flights.claimed() == 0);
}

TEST_CASE("in_flight: released from another thread") {
  in_flight_results flights;
  const key k{7, 8};
  auto claim = flights.try_claim(k);
  std::atomic<int> woken = 0;
  for (int i = 0; i < 16; ++i) CHECK(flights.wait(k, [&] { ++woken; }));
  std::thread releaser([&] { claim->release(); });
  releaser.join();
  CHECK(woken == 16);
}
