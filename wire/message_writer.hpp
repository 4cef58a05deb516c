// Builds protocol messages into a caller-owned byte string, back-patching
// the length word on finish() (PgBouncer's pktbuf_start_packet /
// finish_packet shape). Pure: sending is the caller's business.
//
//   std::string out;
//   message_writer w(out);
//   w.begin(backend_tag::ready_for_query);
//   w.put_byte('I');
//   w.finish();
//
// Several messages may be appended to the same string in sequence.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "wire/tags.hpp"

namespace pgstash::wire {

class message_writer {
 public:
  // `out` must outlive the writer; messages are appended to it.
  explicit message_writer(std::string& out) : out_(out) {}
  message_writer(const message_writer&) = delete;
  message_writer& operator=(const message_writer&) = delete;

  void begin(frontend_tag tag) { begin_tagged(static_cast<char>(tag)); }
  void begin(backend_tag tag) { begin_tagged(static_cast<char>(tag)); }
  // A startup-phase packet: length word only, no tag.
  void begin_untagged();

  void put_byte(char b);
  void put_int16(std::int16_t v);
  void put_int32(std::int32_t v);
  void put_uint32(std::uint32_t v);
  void put_bytes(std::string_view bytes);  // raw, no terminator
  void put_cstr(std::string_view s);       // bytes then NUL; REQUIRES: no NUL in s
  // A length-prefixed value: int32 length then bytes, or -1 for nullopt.
  void put_counted(std::optional<std::string_view> v);

  // Writes the length word of the message begun last.
  // REQUIRES: begin*() was called and not yet finished.
  void finish();

 private:
  void begin_tagged(char tag);
  std::string& out_;
  std::size_t length_at_ = 0;
};

// Builders for the messages pgstash itself originates. Each appends one
// complete message to `out`.

// ErrorResponse ('E') or, with notice = true, NoticeResponse ('N').
// Fields are written in the order given, then the terminator.
void write_error(std::string& out, const std::vector<std::pair<char, std::string>>& fields,
                 bool notice = false);
// The common case: severity (S and V), SQLSTATE and message.
void write_error(std::string& out, std::string_view severity, std::string_view sqlstate,
                 std::string_view message);

// An error in protocol 2.0's format ('E', then the text, NUL-terminated),
// which PostgreSQL still uses to refuse a client asking for a protocol
// older than 3.0.
void write_protocol2_error(std::string& out, std::string_view text);

void write_authentication_ok(std::string& out);
void write_authentication_cleartext(std::string& out);
void write_authentication_md5(std::string& out, std::string_view salt4);
void write_authentication_sasl(std::string& out, const std::vector<std::string_view>& mechanisms);
void write_authentication_sasl_continue(std::string& out, std::string_view data);
void write_authentication_sasl_final(std::string& out, std::string_view data);
void write_parameter_status(std::string& out, std::string_view name, std::string_view value);
void write_backend_key_data(std::string& out, std::uint32_t process_id, std::uint32_t secret_key);
void write_ready_for_query(std::string& out, char status);
void write_negotiate_protocol_version(std::string& out, std::uint32_t newest_version,
                                      const std::vector<std::string_view>& unrecognized);

void write_startup_message(std::string& out,
                           const std::vector<std::pair<std::string, std::string>>& parameters,
                           std::uint32_t protocol = 196608);
void write_ssl_request(std::string& out);
void write_gssenc_request(std::string& out);
void write_cancel_request(std::string& out, std::uint32_t process_id, std::uint32_t secret_key);
void write_password_message(std::string& out, std::string_view password);
void write_sasl_initial_response(std::string& out, std::string_view mechanism,
                                 std::string_view data);
void write_sasl_response(std::string& out, std::string_view data);
void write_query(std::string& out, std::string_view sql);
void write_terminate(std::string& out);
// Parse of `statement` ("" = unnamed) with the given parameter type OIDs.
void write_parse(std::string& out, std::string_view statement, std::string_view sql,
                 const std::vector<std::uint32_t>& parameter_types = {});
// Bind of `portal` to `statement` with the given text-format parameters
// (nullopt = NULL) and text results.
void write_bind(std::string& out, std::string_view portal, std::string_view statement,
                const std::vector<std::optional<std::string_view>>& parameters = {});
// The Bind frame `bind` (tag and length included, as received) naming
// `statement` instead. REQUIRES: `bind` is a well-formed Bind.
void write_bind_renamed(std::string& out, std::string_view bind, std::string_view statement);
// A frame with any tag and body, as received from a peer.
void write_frame(std::string& out, char tag, std::string_view body);
// Execute of `portal`; max_rows 0 = all.
void write_execute(std::string& out, std::string_view portal, std::int32_t max_rows = 0);
// Close or Describe of a statement ('S') or portal ('P').
void write_close(std::string& out, char target, std::string_view name);
void write_describe(std::string& out, char target, std::string_view name);
void write_sync(std::string& out);
void write_flush(std::string& out);
void write_copy_fail(std::string& out, std::string_view reason);

// Backend messages pgstash answers in the server's place.
void write_command_complete(std::string& out, std::string_view tag);
// A result column pgstash describes itself: text format, no table.
struct column_description {
  std::string_view name;  // REQUIRES: no NUL
  std::uint32_t type_oid;
  std::int16_t type_size;  // pg_type.typlen: -1 for varlena types
};
void write_row_description(std::string& out, const std::vector<column_description>& columns);
// A DataRow of text values; nullopt is NULL.
void write_data_row(std::string& out, const std::vector<std::optional<std::string>>& values);
// A message with no body: ParseComplete, BindComplete, CloseComplete, NoData.
void write_empty(std::string& out, backend_tag tag);
// ParameterDescription with no parameters.
void write_no_parameters(std::string& out);

}  // namespace pgstash::wire
