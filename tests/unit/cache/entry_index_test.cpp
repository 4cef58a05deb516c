#include "cache/entry_index.hpp"

#include <random>
#include <set>

#include <doctest/doctest.h>

using namespace pgstash::cache;

namespace {

key k(std::uint64_t n) { return {n, n * 0x9e3779b97f4a7c15ull}; }

}  // namespace

TEST_CASE("index: a delta changes nothing until applied") {
  entry_index index;
  index_delta d(index);
  d.put(k(1), 100, 10);
  d.put(k(2), 50, 10);
  CHECK(d.entries() == 2);
  CHECK(d.bytes() == 150);
  CHECK(index.entries() == 0);
  CHECK_FALSE(index.find(k(1)));

  index.apply(d);
  CHECK(index.entries() == 2);
  CHECK(index.bytes() == 150);
  REQUIRE(index.find(k(1)));
  CHECK(index.find(k(1))->size == 100);
  CHECK(index.find(k(1))->last_use_ms == 10);
}

TEST_CASE("index: replace, erase and erase_all keep the totals right") {
  entry_index index;
  {
    index_delta d(index);
    for (std::uint64_t i = 0; i < 10; ++i) d.put(k(i), 10, 0);
    index.apply(d);
  }
  index_delta d(index);
  d.put(k(0), 25, 1);  // replaces
  d.erase(k(1));
  d.erase(k(1));       // twice is once
  d.erase(k(99));      // absent
  d.put(k(50), 5, 1);  // new, then erased in the same txn
  d.erase(k(50));
  CHECK(d.entries() == 9);
  CHECK(d.bytes() == 10 * 10 + 15 - 10);
  CHECK(d.changes(k(0)));
  CHECK_FALSE(d.changes(k(2)));
  index.apply(d);
  CHECK(index.entries() == 9);
  CHECK(index.bytes() == 105);
  CHECK_FALSE(index.find(k(1)));
  CHECK_FALSE(index.find(k(50)));

  index_delta all(index);
  all.erase_all();
  all.put(k(3), 7, 2);
  CHECK(all.changes(k(2)));  // gone with the rest
  CHECK(all.entries() == 1);
  CHECK(all.bytes() == 7);
  index.apply(all);
  CHECK(index.entries() == 1);
  CHECK(index.bytes() == 7);
  CHECK(index.find(k(3)));
}

TEST_CASE("index: hits and last use; a new result starts over") {
  entry_index index;
  index_delta d(index);
  d.put(k(1), 10, 100);
  index.apply(d);
  index.touch(k(1), 200);
  index.touch(k(1), 150);  // out of order: last use stays 200
  index.touch(k(2), 300);  // not indexed: nothing
  CHECK(index.find(k(1))->hits == 2);
  CHECK(index.find(k(1))->last_use_ms == 200);

  index_delta again(index);
  again.put(k(1), 10, 400);
  index.apply(again);
  CHECK(index.find(k(1))->hits == 0);
  CHECK(index.find(k(1))->last_use_ms == 400);
}

TEST_CASE("index: sampling reaches every entry; find_unless skips") {
  entry_index index;
  std::mt19937_64 rng(1);
  CHECK_FALSE(index.sample(rng));
  index_delta d(index);
  for (std::uint64_t i = 0; i < 40; ++i) d.put(k(i), 1, 0);
  index.apply(d);
  std::set<std::uint64_t> seen;
  for (int i = 0; i < 4000; ++i) seen.insert(index.sample(rng)->first.low);
  CHECK(seen.size() == 40);

  const auto found = index.find_unless([](const key& x) { return x.low != 17; });
  REQUIRE(found);
  CHECK(found->first == k(17));
  CHECK_FALSE(index.find_unless([](const key&) { return true; }));
}
