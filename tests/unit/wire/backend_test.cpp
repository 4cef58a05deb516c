#include "wire/backend.hpp"

#include <doctest/doctest.h>

#include "test_bytes.hpp"
#include "wire/errc.hpp"

namespace pgstash::wire {
namespace {

using namespace std::literals;
using test::be32;
using test::cstr;

TEST_CASE("AuthenticationRequest: codes without data") {
  authentication_request m;
  for (auto code : {auth_code::ok, auth_code::kerberos_v5, auth_code::cleartext_password,
                    auth_code::gss, auth_code::sspi}) {
    REQUIRE(!parse_authentication(be32(static_cast<std::uint32_t>(code)), m));
    CHECK(m.code == code);
    CHECK(parse_authentication(be32(static_cast<std::uint32_t>(code)) + "x", m) ==
          errc::trailing_bytes);
  }
  CHECK(parse_authentication("\0\0\0\4"sv, m) == errc::bad_value);
  CHECK(parse_authentication("\0\0\0\x0d"sv, m) == errc::bad_value);
  CHECK(parse_authentication("\0\0\0"sv, m) == errc::truncated);
}

TEST_CASE("AuthenticationRequest: md5, SASL, SASLContinue, SASLFinal") {
  authentication_request m;
  REQUIRE(!parse_authentication("\0\0\0\5\x01\x02\x03\x04"sv, m));
  CHECK(m.code == auth_code::md5_password);
  CHECK(m.md5_salt == "\x01\x02\x03\x04");
  CHECK(parse_authentication("\0\0\0\5\1\2\3"sv, m) == errc::truncated);
  CHECK(parse_authentication("\0\0\0\5\1\2\3\4\5"sv, m) == errc::trailing_bytes);

  REQUIRE(!parse_authentication("\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"sv, m));
  CHECK(m.code == auth_code::sasl);
  CHECK(m.mechanisms == std::vector<std::string_view>{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"});
  CHECK(parse_authentication("\0\0\0\x0aSCRAM-SHA-256\0"sv, m) == errc::missing_terminator);
  CHECK(parse_authentication("\0\0\0\x0a\0"sv, m) == errc::bad_value);
  CHECK(parse_authentication("\0\0\0\x0aX\0\0\0"sv, m) == errc::trailing_bytes);

  REQUIRE(!parse_authentication("\0\0\0\x0br=abc,s=c2FsdA==,i=4096"sv, m));
  CHECK(m.code == auth_code::sasl_continue);
  CHECK(m.data == "r=abc,s=c2FsdA==,i=4096");
  REQUIRE(!parse_authentication("\0\0\0\x0cv=sig"sv, m));
  CHECK(m.code == auth_code::sasl_final);
  CHECK(m.data == "v=sig");
}

TEST_CASE("ParameterStatus, BackendKeyData, ReadyForQuery") {
  parameter_status ps;
  REQUIRE(!parse_parameter_status("TimeZone\0UTC\0"sv, ps));
  CHECK(ps.name == "TimeZone");
  CHECK(ps.value == "UTC");
  CHECK(parse_parameter_status("TimeZone\0UTC"sv, ps) == errc::missing_terminator);

  backend_key_data k;
  REQUIRE(!parse_backend_key_data("\x00\x00\x04\xd2\x80\x00\x00\x01"sv, k));
  CHECK(k.process_id == 1234);
  CHECK(k.secret_key == 0x80000001);
  CHECK(parse_backend_key_data("\0\0\0\1\0\0\0"sv, k) == errc::truncated);
  CHECK(parse_backend_key_data("\0\0\0\1\0\0\0\2\0"sv, k) == errc::trailing_bytes);

  ready_for_query r;
  for (char s : {'I', 'T', 'E'}) {
    REQUIRE(!parse_ready_for_query(std::string(1, s), r));
    CHECK(r.status == s);
  }
  CHECK(parse_ready_for_query("X", r) == errc::bad_value);
  CHECK(parse_ready_for_query("", r) == errc::truncated);
  CHECK(parse_ready_for_query("II", r) == errc::trailing_bytes);
}

TEST_CASE("RowDescription") {
  const std::string body =
      "\x00\x02"
      "id\0\x00\x00\x40\x01\x00\x01\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00"
      "name\0\x00\x00\x00\x00\x00\x00\x00\x00\x04\x13\xff\xff\x00\x00\x00\x44\x00\x01"s;
  row_description m;
  REQUIRE(!parse_row_description(body, m));
  REQUIRE(m.fields.size() == 2);
  CHECK(m.fields[0].name == "id");
  CHECK(m.fields[0].table_oid == 0x4001);
  CHECK(m.fields[0].column == 1);
  CHECK(m.fields[0].type_oid == 23);
  CHECK(m.fields[0].type_size == 4);
  CHECK(m.fields[0].type_modifier == -1);
  CHECK(m.fields[0].format == 0);
  CHECK(m.fields[1].name == "name");
  CHECK(m.fields[1].table_oid == 0);
  CHECK(m.fields[1].type_oid == 1043);
  CHECK(m.fields[1].type_size == -1);
  CHECK(m.fields[1].type_modifier == 68);
  CHECK(m.fields[1].format == 1);

  CHECK(parse_row_description(body.substr(0, body.size() - 1), m) == errc::truncated);
  CHECK(parse_row_description("\x00\x03"s + body.substr(2), m) == errc::bad_count);
  CHECK(parse_row_description(body.substr(0, body.size() - 1) + "\x02"s, m) == errc::bad_value);
  CHECK(parse_row_description(body + "\0"s, m) == errc::trailing_bytes);
  REQUIRE(!parse_row_description("\x00\x00"sv, m));
  CHECK(m.fields.empty());
}

TEST_CASE("DataRow") {
  data_row m;
  REQUIRE(
      !parse_data_row("\x00\x03\x00\x00\x00\x01"
                      "7\xff\xff\xff\xff\x00\x00\x00\x00"sv,
                      m));
  REQUIRE(m.values.size() == 3);
  CHECK(m.values[0] == "7");
  CHECK(!m.values[1]);
  CHECK(m.values[2] == "");
  CHECK(parse_data_row("\x00\x01\xff\xff\xff\xfe"sv, m) == errc::bad_count);
  CHECK(parse_data_row("\x00\x01\x00\x00\x00\x02x"sv, m) == errc::truncated);
  CHECK(parse_data_row("\x00\x02\x00\x00\x00\x00"sv, m) == errc::bad_count);
  CHECK(parse_data_row("\x00\x01\x00\x00\x00\x00\x00"sv, m) == errc::trailing_bytes);
  CHECK(parse_data_row("\x00"sv, m) == errc::truncated);
}

TEST_CASE("CommandComplete") {
  command_complete m;
  REQUIRE(!parse_command_complete("INSERT 0 1\0"sv, m));
  CHECK(m.tag == "INSERT 0 1");
  CHECK(parse_command_complete("SELECT 1"sv, m) == errc::missing_terminator);
  CHECK(parse_command_complete("SELECT 1\0\0"sv, m) == errc::trailing_bytes);
}

TEST_CASE("ErrorResponse / NoticeResponse fields") {
  error_fields m;
  REQUIRE(
      !parse_error_fields("SERROR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0P15\0\0"sv, m));
  REQUIRE(m.fields.size() == 5);
  CHECK(m.fields[0] == std::pair<char, std::string_view>{'S', "ERROR"});
  CHECK(m.get('C') == "42P01");
  CHECK(m.get('M') == "relation \"t\" does not exist");
  CHECK(m.get('P') == "15");
  CHECK(!m.get('D'));
  REQUIRE(!parse_error_fields("\0"sv, m));
  CHECK(m.fields.empty());
  CHECK(parse_error_fields("SERROR\0"sv, m) == errc::missing_terminator);
  CHECK(parse_error_fields("SERROR"sv, m) == errc::missing_terminator);
  CHECK(parse_error_fields(""sv, m) == errc::missing_terminator);
  CHECK(parse_error_fields("SERROR\0\0x"sv, m) == errc::trailing_bytes);
}

TEST_CASE("NotificationResponse") {
  notification_response m;
  REQUIRE(
      !parse_notification_response("\x00\x00\x00\x2a"
                                   "chan\0hello\0"sv,
                                   m));
  CHECK(m.process_id == 42);
  CHECK(m.channel == "chan");
  CHECK(m.payload == "hello");
  CHECK(parse_notification_response("\x00\x00\x00\x2a"
                                    "chan\0hello"sv,
                                    m) == errc::missing_terminator);
  CHECK(parse_notification_response("\x00\x00\x00"sv, m) == errc::truncated);
}

TEST_CASE("ParameterDescription") {
  parameter_description m;
  REQUIRE(!parse_parameter_description("\x00\x02\x00\x00\x00\x17\x00\x00\x00\x19"sv, m));
  CHECK(m.type_oids == std::vector<std::uint32_t>{23, 25});
  CHECK(parse_parameter_description("\x00\x02\x00\x00\x00\x17"sv, m) == errc::bad_count);
  CHECK(parse_parameter_description("\x00\x00\x00"sv, m) == errc::trailing_bytes);
}

TEST_CASE("CopyIn/Out/BothResponse") {
  copy_response m;
  REQUIRE(!parse_copy_response("\x01\x00\x02\x00\x01\x00\x01"sv, m));
  CHECK(m.format == 1);
  CHECK(m.column_formats == std::vector<std::int16_t>{1, 1});
  CHECK(parse_copy_response("\x02\x00\x00"sv, m) == errc::bad_value);
  CHECK(parse_copy_response("\x00\x00\x01\x00\x03"sv, m) == errc::bad_value);
  CHECK(parse_copy_response("\x00\x00\x01\x00"sv, m) == errc::bad_count);
  CHECK(parse_copy_response("\x00\x00\x00\x00"sv, m) == errc::trailing_bytes);
}

TEST_CASE("FunctionCallResponse") {
  function_call_response m;
  REQUIRE(!parse_function_call_response("\x00\x00\x00\x02hi"sv, m));
  CHECK(m.result == "hi");
  REQUIRE(!parse_function_call_response("\xff\xff\xff\xff"sv, m));
  CHECK(!m.result);
  CHECK(parse_function_call_response("\x00\x00\x00\x02h"sv, m) == errc::truncated);
  CHECK(parse_function_call_response("\x00\x00\x00\x01hi"sv, m) == errc::trailing_bytes);
}

TEST_CASE("NegotiateProtocolVersion") {
  negotiate_protocol_version m;
  REQUIRE(!parse_negotiate_protocol_version("\x00\x00\x00\x00\x00\x00\x00\x01_pq_.x\0"sv, m));
  CHECK(m.newest_version == 0);
  CHECK(m.unrecognized_options == std::vector<std::string_view>{"_pq_.x"});
  CHECK(parse_negotiate_protocol_version(be32(0) + be32(0xffffffff), m) == errc::bad_count);
  CHECK(parse_negotiate_protocol_version(be32(0) + be32(3) + cstr("a"), m) == errc::bad_count);
  CHECK(parse_negotiate_protocol_version(be32(0) + be32(2) + cstr("a") + "b", m) ==
        errc::missing_terminator);
  CHECK(parse_negotiate_protocol_version(be32(0) + be32(0) + "x", m) == errc::trailing_bytes);
}

}  // namespace
}  // namespace pgstash::wire
