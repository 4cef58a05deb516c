#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "wire/framing.hpp"

#include <doctest/doctest.h>

#include "test_bytes.hpp"
#include "wire/errc.hpp"
#include "wire/frontend.hpp"

namespace pgstash::wire {
namespace {

using namespace std::literals;
using test::be32;
using test::cstr;
using test::frame;
using test::packet;

constexpr std::uint32_t k_max = 1 << 20;

TEST_CASE("framing: a complete normal-phase frame") {
  const std::string in = "Q\x00\x00\x00\x0dSELECT 1\x00"s;
  const auto f = decode_frame(in, phase::normal, k_max);
  REQUIRE(f.status == decode_status::message);
  CHECK(f.header.tag == 'Q');
  CHECK(f.header.length == 13);
  CHECK(f.header.frame_size() == 14);
  CHECK(f.consumed == 14);
  CHECK(f.body == "SELECT 1\0"s);
  CHECK(!f.error);
}

TEST_CASE("framing: an empty body (length 4) is a whole frame") {
  const auto f = decode_frame("S\0\0\0\4"sv, phase::normal, k_max);
  REQUIRE(f.status == decode_status::message);
  CHECK(f.body.empty());
  CHECK(f.consumed == 5);
}

TEST_CASE("framing: a message fed one byte at a time") {
  for (const auto p : {phase::normal, phase::startup}) {
    const std::string in = p == phase::normal
                               ? frame('Q', cstr("select 1"))
                               : packet(be32(k_protocol_3_0) + cstr("user") + cstr("u") + '\0');
    for (std::size_t n = 0; n < in.size(); ++n) {
      const auto f = decode_frame(std::string_view(in).substr(0, n), p, k_max);
      CHECK(f.status == decode_status::need_more);
      CHECK(f.consumed == 0);
    }
    const auto f = decode_frame(in, p, k_max);
    REQUIRE(f.status == decode_status::message);
    CHECK(f.consumed == in.size());
  }
}

TEST_CASE("framing: two messages in one buffer") {
  const std::string in = frame('P', cstr("") + cstr("select $1") + "\0\0"s) + frame('S', "");
  std::string_view rest = in;
  auto f = decode_frame(rest, phase::normal, k_max);
  REQUIRE(f.status == decode_status::message);
  CHECK(f.header.tag == 'P');
  CHECK(f.body == "\0select $1\0\0\0"s);
  rest.remove_prefix(f.consumed);
  f = decode_frame(rest, phase::normal, k_max);
  REQUIRE(f.status == decode_status::message);
  CHECK(f.header.tag == 'S');
  CHECK(f.consumed == rest.size());
}

TEST_CASE("framing: a truncated length word needs more") {
  CHECK(decode_frame("Q\0\0"sv, phase::normal, k_max).status == decode_status::need_more);
  CHECK(decode_frame("\0\0\0"sv, phase::startup, k_max).status == decode_status::need_more);
  CHECK(decode_header("Q\0\0\0"sv, phase::normal, k_max).status == decode_status::need_more);
}

TEST_CASE("framing: a length below the minimum") {
  auto f = decode_frame("Q\0\0\0\3"sv, phase::normal, k_max);
  REQUIRE(f.status == decode_status::error);
  CHECK(f.error == errc::length_too_short);
  CHECK(f.consumed == 0);
  f = decode_frame("\0\0\0\7\0\0\0"sv, phase::startup, k_max);
  REQUIRE(f.status == decode_status::error);
  CHECK(f.error == errc::length_too_short);
}

TEST_CASE("framing: an oversize length") {
  auto f = decode_header("D" + be32(k_max + 1), phase::normal, k_max);
  REQUIRE(f.status == decode_status::error);
  CHECK(f.error == errc::message_too_large);
  CHECK(decode_header("D" + be32(k_max), phase::normal, k_max).status == decode_status::message);
  // Startup packets keep PostgreSQL's own cap whatever the configured max.
  f = decode_header(be32(k_max_startup_packet + 1), phase::startup, k_max);
  REQUIRE(f.status == decode_status::error);
  CHECK(f.error == errc::message_too_large);
  CHECK(decode_header(be32(k_max_startup_packet), phase::startup, k_max).status ==
        decode_status::message);
}

TEST_CASE("framing: the largest length word does not wrap frame_size") {
  const auto f = decode_frame("d\xff\xff\xff\xff"s, phase::normal, 0xffffffff);
  CHECK(f.status == decode_status::need_more);
  CHECK(f.header.frame_size() == 0x100000000ull);
}

TEST_CASE("framing: a NUL tag is rejected") {
  const auto f = decode_header("\0\0\0\0\4"sv, phase::normal, k_max);
  REQUIRE(f.status == decode_status::error);
  CHECK(f.error == errc::bad_value);
}

TEST_CASE("framing: decode_header reports the size before the body arrives") {
  const auto f = decode_header("d" + be32(1004), phase::normal, k_max);
  REQUIRE(f.status == decode_status::message);
  CHECK(f.header.frame_size() == 1005);
  CHECK(f.body.empty());
  CHECK(f.consumed == 0);
  // decode_frame on the same bytes waits, keeping the header.
  const auto g = decode_frame("d" + be32(1004) + "abc", phase::normal, k_max);
  CHECK(g.status == decode_status::need_more);
  CHECK(g.header.length == 1004);
}

TEST_CASE("framing: an SSLRequest followed by extra bytes consumes exactly 8") {
  const std::string in = "\0\0\0\x08\x04\xd2\x16\x2f"s + frame('Q', cstr("x"));
  const auto f = decode_frame(in, phase::startup, k_max);
  REQUIRE(f.status == decode_status::message);
  CHECK(f.header.tag == 0);
  CHECK(f.consumed == 8);
  CHECK(f.body.size() == 4);
  startup_packet sp;
  REQUIRE(!parse_startup_packet(f.body, sp));
  CHECK(std::holds_alternative<ssl_request>(sp));
  CHECK(std::string_view(in).substr(f.consumed) == frame('Q', cstr("x")));
}

TEST_CASE("errc: category and conversions") {
  const std::error_code ec = errc::missing_user;
  CHECK(ec.category() == wire_category());
  CHECK(std::string(ec.category().name()) == "pgstash.wire");
  CHECK(ec.message() == "startup packet has no user name");
  CHECK(ec == errc::missing_user);
  CHECK(ec != errc::bad_value);
  for (int e = 1; e <= static_cast<int>(errc::bad_value); ++e) {
    CHECK(make_error_code(static_cast<errc>(e)).message() != "unknown wire error");
  }
}

}  // namespace
}  // namespace pgstash::wire
