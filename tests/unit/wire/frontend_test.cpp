#include "wire/frontend.hpp"

#include <doctest/doctest.h>

#include "test_bytes.hpp"
#include "wire/errc.hpp"
#include "wire/framing.hpp"
#include "wire/message_writer.hpp"

namespace pgstash::wire {
namespace {

using namespace std::literals;
using test::be16;
using test::be32;
using test::cstr;

std::string startup_body(std::string_view params) {
  return be32(k_protocol_3_0) + std::string(params);
}

TEST_CASE("startup: StartupMessage") {
  const std::string body = "\x00\x03\x00\x00user\0alice\0database\0shop\0\0"s;
  startup_packet sp;
  REQUIRE(!parse_startup_packet(body, sp));
  const auto& m = std::get<startup_message>(sp);
  CHECK(m.protocol == k_protocol_3_0);
  REQUIRE(m.parameters.size() == 2);
  CHECK(m.parameters[0].first == "user");
  CHECK(m.parameters[0].second == "alice");
  CHECK(m.parameters[1].first == "database");
  CHECK(m.parameters[1].second == "shop");
  CHECK(m.get("user") == "alice");
  CHECK(m.get("database") == "shop");
  CHECK(!m.get("options"));
}

TEST_CASE("startup: any 3.x minor version, last repeated parameter wins") {
  const std::string body = "\x00\x03\x00\x02user\0a\0_pq_.x\0\0user\0b\0\0"s;
  startup_packet sp;
  REQUIRE(!parse_startup_packet(body, sp));
  const auto& m = std::get<startup_message>(sp);
  CHECK(m.protocol == (3u << 16 | 2));
  CHECK(m.get("_pq_.x") == "");
  CHECK(m.get("user") == "b");
}

TEST_CASE("startup: malformed StartupMessages") {
  startup_packet sp = ssl_request{};
  CHECK(parse_startup_packet(startup_body("database\0d\0\0"s), sp) == errc::missing_user);
  CHECK(parse_startup_packet(startup_body("user\0\0\0"s), sp) == errc::missing_user);
  CHECK(parse_startup_packet(startup_body("\0"s), sp) == errc::missing_user);
  // No list terminator, and a value with no NUL.
  CHECK(parse_startup_packet(startup_body("user\0u\0"s), sp) == errc::missing_terminator);
  CHECK(parse_startup_packet(startup_body("user\0u"s), sp) == errc::missing_terminator);
  CHECK(parse_startup_packet(startup_body(""), sp) == errc::missing_terminator);
  CHECK(parse_startup_packet(startup_body("user\0u\0\0x"s), sp) == errc::trailing_bytes);
  CHECK(parse_startup_packet(be32(2u << 16) + "user\0u\0\0"s, sp) == errc::unknown_startup_code);
  CHECK(parse_startup_packet(be32(80877105) + "user\0u\0\0"s, sp) == errc::unknown_startup_code);
  CHECK(parse_startup_packet("\0\3\0"sv, sp) == errc::truncated);
  // Failures leave `out` alone.
  CHECK(std::holds_alternative<ssl_request>(sp));
}

TEST_CASE("startup: SSLRequest, GSSENCRequest, CancelRequest") {
  startup_packet sp;
  REQUIRE(!parse_startup_packet("\x04\xd2\x16\x2f"sv, sp));
  CHECK(std::holds_alternative<ssl_request>(sp));
  REQUIRE(!parse_startup_packet("\x04\xd2\x16\x30"sv, sp));
  CHECK(std::holds_alternative<gssenc_request>(sp));
  REQUIRE(!parse_startup_packet("\x04\xd2\x16\x2e\x00\x00\x30\x39\xde\xad\xbe\xef"sv, sp));
  const auto& c = std::get<cancel_request>(sp);
  CHECK(c.process_id == 12345);
  CHECK(c.secret_key == 0xdeadbeef);

  CHECK(parse_startup_packet("\x04\xd2\x16\x2fx"sv, sp) == errc::trailing_bytes);
  CHECK(parse_startup_packet("\x04\xd2\x16\x30\0"sv, sp) == errc::trailing_bytes);
  CHECK(parse_startup_packet("\x04\xd2\x16\x2e\0\0\0\1\0\0\0"sv, sp) == errc::truncated);
  CHECK(parse_startup_packet("\x04\xd2\x16\x2e\0\0\0\1\0\0\0\2\0"sv, sp) == errc::trailing_bytes);
  CHECK(std::holds_alternative<cancel_request>(sp));  // failures leave `out` alone
}

TEST_CASE("startup: the code a startup body begins with") {
  CHECK(startup_code(startup_body("user\0u\0\0"s)) == k_protocol_3_0);
  CHECK(startup_code("\x04\xd2\x16\x2e\0\0"sv) == k_cancel_request_code);
  CHECK(startup_code("\x04\xd2\x16"sv) == 0);
  CHECK(is_special_request_code(k_ssl_request_code));
  CHECK(is_special_request_code(k_gssenc_request_code));
  CHECK(is_special_request_code(k_cancel_request_code));
  CHECK(!is_special_request_code(k_protocol_3_0));
  CHECK(!is_special_request_code(80877105));
}

TEST_CASE("startup: the replication parameter, read as PostgreSQL reads it") {
  CHECK(parse_replication("database") == replication_mode::logical);
  for (auto yes : {"true", "t", "TRUE", "yes", "y", "on", "1"}) {
    CAPTURE(yes);
    CHECK(parse_replication(yes) == replication_mode::physical);
  }
  for (auto no : {"false", "f", "no", "off", "of", "0"}) {
    CAPTURE(no);
    CHECK(parse_replication(no) == replication_mode::none);
  }
  for (auto bad : {"", "o", "Database", "2", "truth", "database "}) {
    CAPTURE(bad);
    CHECK(!parse_replication(bad));
  }
}

TEST_CASE("Query") {
  query_message m;
  REQUIRE(!parse_query("select 1\0"sv, m));
  CHECK(m.sql == "select 1");
  CHECK(parse_query("select 1"sv, m) == errc::missing_terminator);
  CHECK(parse_query("select 1\0\0"sv, m) == errc::trailing_bytes);
  CHECK(parse_query(""sv, m) == errc::missing_terminator);
}

TEST_CASE("Parse") {
  const std::string body = "s1\0select $1, $2\0\x00\x02\x00\x00\x00\x17\x00\x00\x00\x00"s;
  parse_message m;
  REQUIRE(!parse_parse(body, m));
  CHECK(m.statement == "s1");
  CHECK(m.query == "select $1, $2");
  CHECK(m.parameter_types == std::vector<std::uint32_t>{23, 0});

  CHECK(parse_parse("\0q\0\x00\x02\x00\x00\x00\x17"sv, m) == errc::bad_count);
  CHECK(parse_parse("\0q\0\x00\x00\x00"sv, m) == errc::trailing_bytes);
  CHECK(parse_parse("\0q\0\x00"sv, m) == errc::truncated);
  CHECK(parse_parse("\0q"sv, m) == errc::missing_terminator);
  CHECK(m.statement == "s1");  // untouched by the failures
}

TEST_CASE("Bind") {
  // Portal "p", statement "s", formats {1}, params {"42", NULL, ""},
  // result formats {0, 1}.
  const std::string body =
      "p\0s\0\x00\x01\x00\x01\x00\x03\x00\x00\x00\x02"
      "42\xff\xff\xff\xff\x00\x00\x00\x00\x00\x02\x00\x00\x00\x01"s;
  bind_message m;
  REQUIRE(!parse_bind(body, m));
  CHECK(m.portal == "p");
  CHECK(m.statement == "s");
  CHECK(m.parameter_formats == std::vector<std::int16_t>{1});
  REQUIRE(m.parameters.size() == 3);
  CHECK(m.parameters[0] == "42");
  CHECK(!m.parameters[1]);
  CHECK(m.parameters[2] == "");
  CHECK(m.result_formats == std::vector<std::int16_t>{0, 1});

  const std::string head = "\0\0"s;
  // Format code 2.
  CHECK(parse_bind(head + "\x00\x01\x00\x02\x00\x00\x00\x00"s, m) == errc::bad_value);
  // Length -2.
  CHECK(parse_bind(head + "\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00"s, m) == errc::bad_count);
  // Value runs past the end.
  CHECK(parse_bind(head + "\x00\x00\x00\x01\x00\x00\x00\x05xy"s, m) == errc::truncated);
  // Two formats for three parameters.
  CHECK(
      parse_bind(head + "\x00\x02\x00\x00\x00\x00\x00\x03"s + be32(0) + be32(0) + be32(0) + be16(0),
                 m) == errc::bad_count);
  // A count (65535, or -1 as int16) far beyond the body.
  CHECK(parse_bind(head + "\x00\x00\xff\xff\x00\x00"s, m) == errc::bad_count);
  CHECK(parse_bind(head + "\x00\x00\x00\x00\x00\x00\x00"s, m) == errc::trailing_bytes);
  CHECK(parse_bind(head + "\x00\x00\x00\x00\x00"s, m) == errc::truncated);
  CHECK(m.portal == "p");
}

TEST_CASE("Bind: more than 32767 parameters, as PostgreSQL allows") {
  std::string body = "\0\0"s + be16(0) + be16(40000);
  for (int i = 0; i < 40000; ++i) body += be32(0xffffffff);
  body += be16(0);
  bind_message m;
  REQUIRE(!parse_bind(body, m));
  CHECK(m.parameters.size() == 40000);
}

TEST_CASE("Describe and Close") {
  describe_message d;
  REQUIRE(!parse_describe("Sstmt\0"sv, d));
  CHECK(d.target == 'S');
  CHECK(d.name == "stmt");
  REQUIRE(!parse_describe("P\0"sv, d));
  CHECK(d.target == 'P');
  CHECK(d.name == "");
  CHECK(parse_describe("Xa\0"sv, d) == errc::bad_value);
  CHECK(parse_describe(""sv, d) == errc::truncated);
  CHECK(parse_describe("Sa"sv, d) == errc::missing_terminator);

  close_message c;
  REQUIRE(!parse_close("Pportal\0"sv, c));
  CHECK(c.target == 'P');
  CHECK(c.name == "portal");
  CHECK(parse_close("s\0"sv, c) == errc::bad_value);
  CHECK(parse_close("S\0\0"sv, c) == errc::trailing_bytes);
}

TEST_CASE("Execute") {
  execute_message m;
  REQUIRE(!parse_execute("p\0\x00\x00\x01\x00"sv, m));
  CHECK(m.portal == "p");
  CHECK(m.max_rows == 256);
  CHECK(parse_execute("\0\0\0\0"sv, m) == errc::truncated);
  CHECK(parse_execute("\0\0\0\0\0\0"sv, m) == errc::trailing_bytes);
}

TEST_CASE("FunctionCall") {
  // oid 1598, no formats, args {"x", NULL}, result binary.
  const std::string body =
      "\x00\x00\x06\x3e\x00\x00\x00\x02\x00\x00\x00\x01x\xff\xff\xff\xff\x00\x01"s;
  function_call_message m;
  REQUIRE(!parse_function_call(body, m));
  CHECK(m.function_oid == 1598);
  CHECK(m.argument_formats.empty());
  REQUIRE(m.arguments.size() == 2);
  CHECK(m.arguments[0] == "x");
  CHECK(!m.arguments[1]);
  CHECK(m.result_format == 1);
  CHECK(parse_function_call(body.substr(0, body.size() - 1) + "\x02"s, m) == errc::bad_value);
  CHECK(parse_function_call(body + "\0"s, m) == errc::trailing_bytes);
}

TEST_CASE("CopyFail, empty bodies, PasswordMessage") {
  copy_fail_message f;
  REQUIRE(!parse_copy_fail("oops\0"sv, f));
  CHECK(f.reason == "oops");
  CHECK(parse_copy_fail("oops"sv, f) == errc::missing_terminator);

  CHECK(!parse_empty(""));
  CHECK(parse_empty("\0"s) == errc::trailing_bytes);

  password_message p;
  REQUIRE(!parse_password_message("md5abc\0"sv, p));
  CHECK(p.password == "md5abc");
  CHECK(parse_password_message("secret"sv, p) == errc::missing_terminator);
  CHECK(parse_password_message("a\0b\0"sv, p) == errc::trailing_bytes);
}

TEST_CASE("SASLInitialResponse and SASLResponse") {
  sasl_initial_response m;
  REQUIRE(!parse_sasl_initial_response("SCRAM-SHA-256\0\x00\x00\x00\x03n,,"sv, m));
  CHECK(m.mechanism == "SCRAM-SHA-256");
  CHECK(m.data == "n,,");
  REQUIRE(!parse_sasl_initial_response("SCRAM-SHA-256\0\xff\xff\xff\xff"sv, m));
  CHECK(!m.data);
  CHECK(parse_sasl_initial_response("M\0\xff\xff\xff\xfe"sv, m) == errc::bad_count);
  CHECK(parse_sasl_initial_response("M\0\x00\x00\x00\x04n,,"sv, m) == errc::truncated);
  CHECK(parse_sasl_initial_response("M\0\x00\x00\x00\x01n,,"sv, m) == errc::trailing_bytes);

  sasl_response r;
  REQUIRE(!parse_sasl_response("c=biws,r=x,p=y", r));
  CHECK(r.data == "c=biws,r=x,p=y");
}

// Builders of frontend messages, parsed back through the framing layer.
TEST_CASE("frontend builders round-trip") {
  std::string out;
  write_startup_message(out, {{"user", "bob"}, {"database", "db"}});
  write_ssl_request(out);
  write_gssenc_request(out);
  write_cancel_request(out, 7, 0x01020304);
  std::string_view rest = out;
  const auto next = [&](phase p) {
    const auto f = decode_frame(rest, p, 1 << 20);
    REQUIRE(f.status == decode_status::message);
    rest.remove_prefix(f.consumed);
    return f;
  };
  startup_packet sp;
  REQUIRE(!parse_startup_packet(next(phase::startup).body, sp));
  CHECK(std::get<startup_message>(sp).get("database") == "db");
  REQUIRE(!parse_startup_packet(next(phase::startup).body, sp));
  CHECK(std::holds_alternative<ssl_request>(sp));
  REQUIRE(!parse_startup_packet(next(phase::startup).body, sp));
  CHECK(std::holds_alternative<gssenc_request>(sp));
  REQUIRE(!parse_startup_packet(next(phase::startup).body, sp));
  CHECK(std::get<cancel_request>(sp).secret_key == 0x01020304);
  CHECK(rest.empty());

  out.clear();
  write_query(out, "select 1");
  write_password_message(out, "pw");
  write_sasl_initial_response(out, "SCRAM-SHA-256", "n,,n=,r=abc");
  write_sasl_response(out, "c=biws");
  write_terminate(out);
  rest = out;
  auto f = next(phase::normal);
  query_message q;
  CHECK(f.header.tag == 'Q');
  REQUIRE(!parse_query(f.body, q));
  CHECK(q.sql == "select 1");
  f = next(phase::normal);
  password_message p;
  CHECK(f.header.tag == 'p');
  REQUIRE(!parse_password_message(f.body, p));
  CHECK(p.password == "pw");
  f = next(phase::normal);
  sasl_initial_response si;
  REQUIRE(!parse_sasl_initial_response(f.body, si));
  CHECK(si.mechanism == "SCRAM-SHA-256");
  CHECK(si.data == "n,,n=,r=abc");
  f = next(phase::normal);
  sasl_response sr;
  REQUIRE(!parse_sasl_response(f.body, sr));
  CHECK(sr.data == "c=biws");
  f = next(phase::normal);
  CHECK(f.header.tag == 'X');
  CHECK(!parse_empty(f.body));
  CHECK(rest.empty());
}

// Extended-protocol messages pgstash forwards (it writes them with the
// generic writer, e.g. when re-preparing statements on a new server).
TEST_CASE("message_writer round-trips Parse, Bind, Describe, Execute, Close") {
  std::string out;
  message_writer w(out);
  w.begin(frontend_tag::parse);
  w.put_cstr("s");
  w.put_cstr("select $1");
  w.put_int16(1);
  w.put_uint32(25);
  w.finish();
  w.begin(frontend_tag::bind);
  w.put_cstr("");
  w.put_cstr("s");
  w.put_int16(0);
  w.put_int16(2);
  w.put_counted("v");
  w.put_counted(std::nullopt);
  w.put_int16(1);
  w.put_int16(1);
  w.finish();
  w.begin(frontend_tag::describe);
  w.put_byte('P');
  w.put_cstr("");
  w.finish();
  w.begin(frontend_tag::execute);
  w.put_cstr("");
  w.put_uint32(0);
  w.finish();
  w.begin(frontend_tag::close);
  w.put_byte('S');
  w.put_cstr("s");
  w.finish();

  std::string_view rest = out;
  const auto next = [&](frontend_tag tag) {
    const auto f = decode_frame(rest, phase::normal, 1 << 20);
    REQUIRE(f.status == decode_status::message);
    CHECK(f.header.tag == static_cast<char>(tag));
    rest.remove_prefix(f.consumed);
    return f.body;
  };
  parse_message pm;
  REQUIRE(!parse_parse(next(frontend_tag::parse), pm));
  CHECK(pm.parameter_types == std::vector<std::uint32_t>{25});
  bind_message bm;
  REQUIRE(!parse_bind(next(frontend_tag::bind), bm));
  CHECK(bm.statement == "s");
  REQUIRE(bm.parameters.size() == 2);
  CHECK(bm.parameters[0] == "v");
  CHECK(!bm.parameters[1]);
  CHECK(bm.result_formats == std::vector<std::int16_t>{1});
  describe_message dm;
  REQUIRE(!parse_describe(next(frontend_tag::describe), dm));
  CHECK(dm.target == 'P');
  execute_message em;
  REQUIRE(!parse_execute(next(frontend_tag::execute), em));
  CHECK(em.max_rows == 0);
  close_message cm;
  REQUIRE(!parse_close(next(frontend_tag::close), cm));
  CHECK(cm.name == "s");
  CHECK(rest.empty());
}

}  // namespace
}  // namespace pgstash::wire
