#include "invalidation/generations.hpp"

#include <vector>

#include <doctest/doctest.h>

using namespace pgstash::invalidation;

TEST_CASE("row keys: a write of one key leaves the reads of other keys current") {
  generations table;
  const std::uint64_t t = relation_id("app", "accounts");
  const std::uint64_t key1 = row_key_id(t, "id", 1), key2 = row_key_id(t, "id", 2);
  auto read_of_key = [&](std::uint64_t key) {
    std::vector<dependency> deps;
    const std::uint64_t ids[] = {table_wide_id(t), key};
    table.capture(ids, deps);
    return deps;
  };
  auto read_of_table = [&] {
    std::vector<dependency> deps;
    table.capture({&t, 1}, deps);
    return deps;
  };

  auto one = read_of_key(key1), two = read_of_key(key2), all = read_of_table();
  const std::uint64_t write_of_key1[] = {t, key1};
  table.bump_rows(write_of_key1);
  CHECK_FALSE(table.still_current(one));
  CHECK(table.still_current(two));
  CHECK_FALSE(table.still_current(all));

  one = read_of_key(key1), all = read_of_table();
  table.bump({&t, 1});  // a write of the whole table reaches every read
  CHECK_FALSE(table.still_current(one));
  CHECK_FALSE(table.still_current(two));
  CHECK_FALSE(table.still_current(all));

  CHECK(row_key_id(t, "id", 1) != row_key_id(t, "id", -1));
  CHECK(row_key_id(t, "id", 1) != row_key_id(t, "other", 1));
  CHECK(row_key_id(t, "id", 1) != row_key_id(relation_id("app", "orders"), "id", 1));
}
