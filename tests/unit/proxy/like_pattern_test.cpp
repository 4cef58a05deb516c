#include "proxy/like_pattern.hpp"

#include <doctest/doctest.h>

using pgstash::proxy::like_match;

TEST_CASE("LIKE patterns: literal text, % and _") {
  CHECK(like_match("select * from orders", "select * from orders"));
  CHECK_FALSE(like_match("select * from orders", "select * from order"));
  CHECK(like_match("select * from orders where id = 1", "%from orders%"));
  CHECK(like_match("select * from orders", "select%orders"));
  CHECK_FALSE(like_match("select * from order_items", "%from orders%"));
  CHECK(like_match("select 1", "select _"));
  CHECK_FALSE(like_match("select 12", "select _"));
  CHECK(like_match("", "%"));
  CHECK(like_match("", ""));
  CHECK_FALSE(like_match("x", ""));
  CHECK(like_match("abcabcabd", "%abd"));
  CHECK(like_match("aaa", "%%a%%"));
  // Case matters, as with LIKE.
  CHECK_FALSE(like_match("SELECT 1", "select%"));
}

TEST_CASE("LIKE patterns: a backslash makes % and _ literal") {
  CHECK(like_match("100%", "100\\%"));
  CHECK_FALSE(like_match("1000", "100\\%"));
  CHECK(like_match("a_b", "a\\_b"));
  CHECK_FALSE(like_match("axb", "a\\_b"));
  CHECK(like_match("ends with \\", "%\\"));
}
