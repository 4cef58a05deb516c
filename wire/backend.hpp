// Parsing of what servers send. Same conventions as frontend.hpp: bodies
// without tag and length, views into the body, a typed error on any
// mismatch.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace pgstash::wire {

// AuthenticationRequest subtypes ('R' messages).
enum class auth_code : std::uint32_t {
  ok = 0,
  kerberos_v5 = 2,
  cleartext_password = 3,
  md5_password = 5,
  gss = 7,
  gss_continue = 8,
  sspi = 9,
  sasl = 10,
  sasl_continue = 11,
  sasl_final = 12,
};

struct authentication_request {
  auth_code code = auth_code::ok;
  std::string_view md5_salt;                 // 4 bytes, md5_password only
  std::vector<std::string_view> mechanisms;  // sasl only
  std::string_view data;                     // sasl_continue/sasl_final/gss_continue
};
std::error_code parse_authentication(std::string_view body, authentication_request& out);

struct parameter_status {
  std::string_view name;
  std::string_view value;
};
std::error_code parse_parameter_status(std::string_view body, parameter_status& out);

struct backend_key_data {
  std::uint32_t process_id = 0;
  std::uint32_t secret_key = 0;
};
std::error_code parse_backend_key_data(std::string_view body, backend_key_data& out);

struct ready_for_query {
  char status = 'I';  // 'I' idle, 'T' in transaction, 'E' failed transaction
};
std::error_code parse_ready_for_query(std::string_view body, ready_for_query& out);

struct row_field {
  std::string_view name;
  std::uint32_t table_oid = 0;
  std::int16_t column = 0;
  std::uint32_t type_oid = 0;
  std::int16_t type_size = 0;
  std::int32_t type_modifier = 0;
  std::int16_t format = 0;
};
struct row_description {
  std::vector<row_field> fields;
};
std::error_code parse_row_description(std::string_view body, row_description& out);

struct data_row {
  std::vector<std::optional<std::string_view>> values;  // nullopt = NULL
};
std::error_code parse_data_row(std::string_view body, data_row& out);

struct command_complete {
  std::string_view tag;  // e.g. "SELECT 3", "INSERT 0 1"
};
std::error_code parse_command_complete(std::string_view body, command_complete& out);

// ErrorResponse and NoticeResponse: every field, in order.
struct error_fields {
  std::vector<std::pair<char, std::string_view>> fields;
  // The field with this code ('S','V','C','M','D','H','P','p','q','W','s',
  // 't','c','d','n','F','L','R'), or nullopt.
  std::optional<std::string_view> get(char code) const;
};
std::error_code parse_error_fields(std::string_view body, error_fields& out);

struct notification_response {
  std::uint32_t process_id = 0;
  std::string_view channel;
  std::string_view payload;
};
std::error_code parse_notification_response(std::string_view body, notification_response& out);

struct parameter_description {
  std::vector<std::uint32_t> type_oids;
};
std::error_code parse_parameter_description(std::string_view body, parameter_description& out);

// CopyInResponse, CopyOutResponse and CopyBothResponse.
struct copy_response {
  std::int8_t format = 0;  // overall: 0 text, 1 binary
  std::vector<std::int16_t> column_formats;
};
std::error_code parse_copy_response(std::string_view body, copy_response& out);

struct function_call_response {
  std::optional<std::string_view> result;  // nullopt = NULL
};
std::error_code parse_function_call_response(std::string_view body, function_call_response& out);

struct negotiate_protocol_version {
  // The newest protocol version the server supports for the requested
  // major version, as a full version word (major << 16 | minor): PostgreSQL
  // sends 196608 (3.0), whatever the documentation's "minor" suggests.
  std::uint32_t newest_version = 0;
  std::vector<std::string_view> unrecognized_options;
};
std::error_code parse_negotiate_protocol_version(std::string_view body,
                                                 negotiate_protocol_version& out);

// ParseComplete, BindComplete, CloseComplete, NoData, EmptyQueryResponse,
// PortalSuspended and CopyDone have empty bodies: use parse_empty().

}  // namespace pgstash::wire
