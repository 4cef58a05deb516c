#include "proxy/peer_cancel.hpp"

#include <doctest/doctest.h>

using namespace pgstash::proxy;

TEST_CASE("peer_cancel: a cancel key's secret carries the peer id that handed it out") {
  CHECK(cancel_secret(0xdeadbeef, 0) == 0xdeadbeef);
  CHECK(cancel_secret(0xdeadbeef, 1) == 0x01adbeef);
  CHECK(cancel_secret(0xdeadbeef, 255) == 0xffadbeef);
  for (std::uint32_t peer : {1u, 7u, 128u, 255u}) {
    CAPTURE(peer);
    CHECK(peer_of_cancel_secret(cancel_secret(0x12345678, peer)) == peer);
    CHECK(peer_of_cancel_secret(cancel_secret(0xffffffff, peer)) == peer);
  }
}
