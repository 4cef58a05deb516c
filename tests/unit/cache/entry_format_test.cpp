#include "cache/entry_format.hpp"

#include <string>
#include <vector>

#include <doctest/doctest.h>

using namespace pgstash::cache;

TEST_CASE("format: keys round-trip through their 16 bytes") {
  const key k{0x0123456789abcdefull, 0xfedcba9876543210ull};
  const key_bytes b = encode_key(k);
  CHECK(decode_key(as_view(b)) == k);
  CHECK(encode_key(key{1, 2}) != encode_key(key{2, 1}));
}

TEST_CASE("format: an entry round-trips") {
  const entry_header h{1'000, 61'000, 5, true};
  const std::vector<dependency> deps{{7, 1}, {9, 123456789012345ull}};
  const std::string label = "SELECT 1";
  const std::string body = "zstd!";
  std::string value(encoded_size(deps.size(), label.size(), body.size()), '\0');
  encode_entry(h, deps, label, body, value.data());

  // LMDB aligns values to 2 bytes only: decode from an odd address.
  std::string shifted = " " + value;
  const auto e = decode_entry(std::string_view(shifted).substr(1));
  REQUIRE(e);
  CHECK(e->header.created_ms == 1'000);
  CHECK(e->header.expires_ms == 61'000);
  CHECK(e->header.response_size == 5);
  CHECK(e->header.compressed);
  CHECK(e->deps() == deps);
  CHECK(e->label == label);
  CHECK(e->body == body);
  CHECK(e->header.expired_at(61'000));
  CHECK_FALSE(e->header.expired_at(60'999));
  CHECK_FALSE(entry_header{}.expired_at(1ll << 62));  // 0: never
}

TEST_CASE("format: malformed values are refused") {
  const std::vector<dependency> deps{{1, 1}};
  std::string value(encoded_size(1, 3, 4), '\0');
  encode_entry({0, 0, 4, false}, deps, "abc", "body", value.data());
  REQUIRE(decode_entry(value));

  CHECK_FALSE(decode_entry(""));
  CHECK_FALSE(decode_entry(std::string_view(value).substr(0, 31)));  // short header
  CHECK_FALSE(decode_entry(std::string_view(value).substr(0, 40)));  // cut in the dependencies
  CHECK_FALSE(decode_entry(value + "x"));  // body longer than the response size
  std::string bad = value;
  bad[0] = 2;  // another format
  CHECK_FALSE(decode_entry(bad));
  bad = value;
  bad[4] = bad[5] = bad[6] = bad[7] = '\xff';  // 4 billion dependencies
  CHECK_FALSE(decode_entry(bad));
  bad = value;
  bad[2] = bad[3] = '\xff';  // a label longer than the value
  CHECK_FALSE(decode_entry(bad));
}
