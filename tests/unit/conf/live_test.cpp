#include "conf/live.hpp"

#include <doctest/doctest.h>

namespace {

using pgstash::conf::held;
using pgstash::conf::live;

TEST_CASE("a held snapshot changes only at refresh(), and then only if the value was replaced") {
  live<int> value(1);
  held<int> mine(value);
  CHECK(*mine == 1);
  const int* before = &*mine;

  mine.refresh();
  CHECK(&*mine == before);  // not replaced: still the same snapshot

  value.replace(2);
  CHECK(*mine == 1);  // a reference into it stays valid until the owner refreshes
  CHECK(*value.get() == 2);
  mine.refresh();
  CHECK(*mine == 2);

  value.replace(3);
  value.replace(4);
  mine.refresh();
  CHECK(*mine == 4);
}

TEST_CASE("live::version changes at every replace()") {
  live<int> value(1);
  const auto v0 = value.version();
  value.replace(1);
  const auto v1 = value.version();
  CHECK(v1 != v0);
  value.replace(5);
  CHECK(value.version() != v1);
}

}  // namespace
