// Parsing of what clients send. Each parse_* takes the body of one frame
// (as returned by decode_frame: no tag, no length word) and fills a view
// struct whose string_views point into that body: the body must outlive
// the view. A message that does not match its layout exactly yields an
// errc and leaves `out` untouched, never a partial result. Two-byte counts
// are unsigned, as PostgreSQL reads them (a Bind may carry 65535
// parameters); every count is checked against the bytes left.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

namespace pgstash::wire {

inline constexpr std::uint32_t k_protocol_3_0 = 196608;  // 3 << 16
inline constexpr std::uint32_t k_ssl_request_code = 80877103;
inline constexpr std::uint32_t k_gssenc_request_code = 80877104;
inline constexpr std::uint32_t k_cancel_request_code = 80877102;

struct startup_message {
  std::uint32_t protocol = k_protocol_3_0;  // major << 16 | minor
  // In packet order; "user" is guaranteed present after a successful parse.
  std::vector<std::pair<std::string_view, std::string_view>> parameters;
  // The value of `name` (the last one if repeated, as PostgreSQL takes
  // it), or nullopt.
  std::optional<std::string_view> get(std::string_view name) const;
};
struct ssl_request {};
struct gssenc_request {};
struct cancel_request {
  std::uint32_t process_id = 0;
  std::uint32_t secret_key = 0;
};
using startup_packet = std::variant<startup_message, ssl_request, gssenc_request, cancel_request>;

// The request code or protocol version a startup-phase body begins with;
// 0 if the body is shorter than 4 bytes.
std::uint32_t startup_code(std::string_view body);
// True for the codes of SSLRequest, GSSENCRequest and CancelRequest.
bool is_special_request_code(std::uint32_t code);

// What the startup parameter "replication" asks for.
enum class replication_mode { none, physical, logical };
// The parameter's value as PostgreSQL reads it: "database" (logical), or a
// boolean ("true"/"false", "on"/"off", "yes"/"no", "1"/"0", unambiguous
// prefixes, any case). nullopt if it is neither.
std::optional<replication_mode> parse_replication(std::string_view value);

// Body of a startup-phase frame. Accepts protocol major version 3 with any
// minor version (the caller answers NegotiateProtocolVersion for minor > 0
// or for `_pq_.` options).
std::error_code parse_startup_packet(std::string_view body, startup_packet& out);

struct query_message {
  std::string_view sql;
};
std::error_code parse_query(std::string_view body, query_message& out);

struct parse_message {
  std::string_view statement;  // "" = unnamed
  std::string_view query;
  std::vector<std::uint32_t> parameter_types;  // OIDs, 0 = unspecified
};
std::error_code parse_parse(std::string_view body, parse_message& out);

struct bind_message {
  std::string_view portal;
  std::string_view statement;
  std::vector<std::int16_t> parameter_formats;              // each 0 (text) or 1 (binary)
  std::vector<std::optional<std::string_view>> parameters;  // nullopt = SQL NULL
  std::vector<std::int16_t> result_formats;
};
std::error_code parse_bind(std::string_view body, bind_message& out);

struct describe_message {
  char target = 'S';  // 'S' statement or 'P' portal
  std::string_view name;
};
std::error_code parse_describe(std::string_view body, describe_message& out);

struct execute_message {
  std::string_view portal;
  std::uint32_t max_rows = 0;  // 0 = no limit
};
std::error_code parse_execute(std::string_view body, execute_message& out);

struct close_message {
  char target = 'S';  // 'S' statement or 'P' portal
  std::string_view name;
};
std::error_code parse_close(std::string_view body, close_message& out);

struct function_call_message {
  std::uint32_t function_oid = 0;
  std::vector<std::int16_t> argument_formats;
  std::vector<std::optional<std::string_view>> arguments;
  std::int16_t result_format = 0;
};
std::error_code parse_function_call(std::string_view body, function_call_message& out);

struct copy_fail_message {
  std::string_view reason;
};
std::error_code parse_copy_fail(std::string_view body, copy_fail_message& out);

// Sync, Flush, CopyDone and Terminate have empty bodies.
std::error_code parse_empty(std::string_view body);

// The 'p' message in its three authentication roles.
struct password_message {
  std::string_view password;  // cleartext, or "md5" + 32 hex digits
};
std::error_code parse_password_message(std::string_view body, password_message& out);

struct sasl_initial_response {
  std::string_view mechanism;
  std::optional<std::string_view> data;  // nullopt when length is -1
};
std::error_code parse_sasl_initial_response(std::string_view body, sasl_initial_response& out);

struct sasl_response {
  std::string_view data;  // the whole body
};
std::error_code parse_sasl_response(std::string_view body, sasl_response& out);

}  // namespace pgstash::wire
