#include "invalidation/stream_checkpoint.hpp"

#include <doctest/doctest.h>

#include "invalidation/generations.hpp"

using namespace pgstash::invalidation;

TEST_CASE("stream checkpoint: a generation table and its databases round-trip") {
  generations table;
  const std::uint64_t ids[] = {relation_id("app", "orders"), database_id("app")};
  table.bump(ids);
  table.bump({ids, 1});

  stream_checkpoint c;
  c.databases.push_back({"app", "pgstash_16384", "7301234567890123456/1", 0x16b3740, "16390/812"});
  c.databases.push_back({"", "", "", 0, ""});
  c.generations = table.snapshot();
  const std::string bytes = encode(c);
  const std::optional<stream_checkpoint> back = decode_checkpoint(bytes);
  REQUIRE(back);
  CHECK(*back == c);

  generations restored;
  REQUIRE(restored.restore(back->generations));
  std::vector<pgstash::cache::dependency> now, then;
  table.capture(ids, now);
  restored.capture(ids, then);
  CHECK(now == then);
  CHECK(now[0].generation == 2);
}

TEST_CASE("stream checkpoint: anything else is refused whole") {
  stream_checkpoint c;
  c.databases.push_back({"app", "slot", "1/1", 42, "1/2"});
  c.generations = {1, 2, 3};
  const std::string bytes = encode(c);
  for (std::size_t cut = 0; cut < bytes.size(); ++cut)
    CHECK_FALSE(decode_checkpoint(std::string_view(bytes).substr(0, cut)));
  CHECK_FALSE(decode_checkpoint(bytes + "x"));
  std::string other = bytes;
  other[26] = '1';  // another version's magic
  CHECK_FALSE(decode_checkpoint(other));

  generations table;
  CHECK_FALSE(table.restore(c.generations));  // not a whole table
}
