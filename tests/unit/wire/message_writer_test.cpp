// Builders against hand-written bytes, and back through the parsers.
#include "wire/message_writer.hpp"

#include <doctest/doctest.h>

#include "wire/backend.hpp"
#include "wire/framing.hpp"

namespace pgstash::wire {
namespace {

using namespace std::literals;

TEST_CASE("message_writer: primitives are big-endian, length back-patched") {
  std::string out = "prefix";
  message_writer w(out);
  w.begin(backend_tag::data_row);
  w.put_int16(-2);
  w.put_int32(-1);
  w.put_uint32(0x01020304);
  w.put_byte('z');
  w.put_bytes("ab\0c"s);
  w.put_cstr("s");
  w.put_counted("xy");
  w.put_counted(std::nullopt);
  w.finish();
  CHECK(out ==
        "prefixD\x00\x00\x00\x1f\xff\xfe\xff\xff\xff\xff\x01\x02\x03\x04z"
        "ab\0cs\0\x00\x00\x00\x02xy\xff\xff\xff\xff"s);

  out.clear();
  w.begin_untagged();
  w.put_uint32(7);
  w.finish();
  w.begin(frontend_tag::sync);
  w.finish();
  CHECK(out == "\x00\x00\x00\x08\x00\x00\x00\x07S\x00\x00\x00\x04"s);
}

TEST_CASE("write_error and notice") {
  std::string out;
  write_error(out, "FATAL", "28P01", "password authentication failed");
  CHECK(out ==
        "E\x00\x00\x00\x3a"
        "SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed\0\0"s);
  out.clear();
  write_error(out, {{'S', "NOTICE"}, {'M', "hi"}}, true);
  CHECK(out == "N\x00\x00\x00\x11SNOTICE\0Mhi\0\0"s);

  error_fields f;
  REQUIRE(!parse_error_fields(std::string_view(out).substr(5), f));
  CHECK(f.get('M') == "hi");
}

TEST_CASE("authentication builders") {
  std::string out;
  write_authentication_ok(out);
  CHECK(out == "R\0\0\0\x08\0\0\0\0"s);
  out.clear();
  write_authentication_cleartext(out);
  CHECK(out == "R\0\0\0\x08\0\0\0\3"s);
  out.clear();
  write_authentication_md5(out, "\x01\x02\x03\x04");
  CHECK(out == "R\0\0\0\x0c\0\0\0\5\x01\x02\x03\x04"s);
  out.clear();
  write_authentication_sasl(out, {"SCRAM-SHA-256"});
  CHECK(out == "R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0"s);
  out.clear();
  write_authentication_sasl_continue(out, "r=a");
  CHECK(out == "R\0\0\0\x0b\0\0\0\x0br=a"s);
  out.clear();
  write_authentication_sasl_final(out, "v=b");
  CHECK(out == "R\0\0\0\x0b\0\0\0\x0cv=b"s);

  const auto f = decode_frame(out, phase::normal, 1 << 20);
  REQUIRE(f.status == decode_status::message);
  authentication_request a;
  REQUIRE(!parse_authentication(f.body, a));
  CHECK(a.code == auth_code::sasl_final);
  CHECK(a.data == "v=b");
}

TEST_CASE("session-start builders") {
  std::string out;
  write_parameter_status(out, "client_encoding", "UTF8");
  CHECK(out ==
        "S\0\0\0\x19"
        "client_encoding\0UTF8\0"s);
  out.clear();
  write_backend_key_data(out, 1234, 0xdeadbeef);
  CHECK(out == "K\0\0\0\x0c\x00\x00\x04\xd2\xde\xad\xbe\xef"s);
  out.clear();
  write_ready_for_query(out, 'T');
  CHECK(out == "Z\0\0\0\5T"s);
  out.clear();
  write_negotiate_protocol_version(out, 0, {"_pq_.a", "_pq_.b"});
  CHECK(out == "v\0\0\0\x1a\0\0\0\0\0\0\0\2_pq_.a\0_pq_.b\0"s);

  negotiate_protocol_version n;
  REQUIRE(!parse_negotiate_protocol_version(std::string_view(out).substr(5), n));
  CHECK(n.unrecognized_options == std::vector<std::string_view>{"_pq_.a", "_pq_.b"});
}

TEST_CASE("frontend builders") {
  std::string out;
  write_startup_message(out, {{"user", "u"}, {"database", "d"}});
  CHECK(out == "\0\0\0\x1b\0\3\0\0user\0u\0database\0d\0\0"s);
  out.clear();
  write_startup_message(out, {{"user", "u"}}, 3u << 16 | 1);
  CHECK(out == "\0\0\0\x10\0\3\0\1user\0u\0\0"s);
  out.clear();
  write_ssl_request(out);
  CHECK(out == "\0\0\0\x08\x04\xd2\x16\x2f"s);
  out.clear();
  write_gssenc_request(out);
  CHECK(out == "\0\0\0\x08\x04\xd2\x16\x30"s);
  out.clear();
  write_cancel_request(out, 1, 2);
  CHECK(out == "\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\1\0\0\0\2"s);
  out.clear();
  write_password_message(out, "md5x");
  CHECK(out == "p\0\0\0\x09md5x\0"s);
  out.clear();
  write_sasl_initial_response(out, "SCRAM-SHA-256", "n,,n=,r=x");
  CHECK(out ==
        "p\0\0\0\x1f"
        "SCRAM-SHA-256\0\0\0\0\x09n,,n=,r=x"s);
  out.clear();
  write_sasl_response(out, "c=biws");
  CHECK(out ==
        "p\0\0\0\x0a"
        "c=biws"s);
  out.clear();
  write_query(out, "select 1");
  CHECK(out == "Q\0\0\0\x0dselect 1\0"s);
  out.clear();
  write_terminate(out);
  CHECK(out == "X\0\0\0\4"s);
}

TEST_CASE("extended-protocol builders") {
  std::string out;
  write_parse(out, "s", "select $1", {23});
  CHECK(out == "P\0\0\0\x16s\0select $1\0\0\1\0\0\0\x17"s);
  out.clear();
  write_bind(out, "p", "s");
  CHECK(out == "B\0\0\0\x0ep\0s\0\0\0\0\0\0\0"s);
  out.clear();
  write_bind(out, "", "", {"ab", std::nullopt});
  // No format codes (all text), two values: "ab" and NULL (length -1), no result formats.
  CHECK(out == "B\0\0\0\x16\0\0\0\0\0\2\0\0\0\2ab\xff\xff\xff\xff\0\0"s);
  out.clear();
  write_execute(out, "p", 10);
  CHECK(out == "E\0\0\0\x0ap\0\0\0\0\x0a"s);
  out.clear();
  write_close(out, 'S', "s");
  CHECK(out == "C\0\0\0\x07Ss\0"s);
  out.clear();
  write_describe(out, 'P', "");
  CHECK(out == "D\0\0\0\x06P\0"s);
  out.clear();
  write_sync(out);
  CHECK(out == "S\0\0\0\4"s);
  out.clear();
  write_flush(out);
  CHECK(out == "H\0\0\0\4"s);
  out.clear();
  write_copy_fail(out, "gone");
  CHECK(out == "f\0\0\0\x09gone\0"s);
}

TEST_CASE("a Bind renamed keeps its portal and everything after the name") {
  // Portal "p", statement "client", two format codes, one parameter "xy",
  // one result format.
  const std::string body = "p\0client\0\0\1\0\1\0\1\0\0\0\2xy\0\1\0\1"s;
  std::string bind;
  write_frame(bind, 'B', body);
  CHECK(bind.substr(5) == body);
  std::string out;
  write_bind_renamed(out, bind, "pgstash_1");
  std::string expected;
  write_frame(expected, 'B', "p\0pgstash_1\0\0\1\0\1\0\1\0\0\0\2xy\0\1\0\1"s);
  CHECK(out == expected);
}

TEST_CASE("answers pgstash gives in the server's place") {
  std::string out;
  write_command_complete(out, "DEALLOCATE");
  CHECK(out == "C\0\0\0\x0f"
               "DEALLOCATE\0"s);
  out.clear();
  write_empty(out, backend_tag::parse_complete);
  CHECK(out == "1\0\0\0\4"s);
  out.clear();
  write_no_parameters(out);
  CHECK(out == "t\0\0\0\6\0\0"s);
}

TEST_CASE("a result set pgstash describes and sends itself") {
  std::string out;
  write_row_description(out, {{"db", 25, -1}, {"n", 20, 8}});
  CHECK(out == "T\0\0\0\x2f\0\2"
               "db\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0"
               "n\0\0\0\0\0\0\0\0\0\0\x14\0\x08\xff\xff\xff\xff\0\0"s);
  out.clear();
  write_data_row(out, {std::string("app"), std::nullopt});
  CHECK(out == "D\0\0\0\x11\0\2\0\0\0\3app\xff\xff\xff\xff"s);
}

}  // namespace
}  // namespace pgstash::wire
