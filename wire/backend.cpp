#include "wire/backend.hpp"

#include "wire/byte_reader.hpp"
#include "wire/errc.hpp"

namespace pgstash::wire {

using detail::byte_reader;
using detail::commit;

std::error_code parse_authentication(std::string_view body, authentication_request& out) {
  byte_reader r(body);
  authentication_request m;
  m.code = static_cast<auth_code>(r.uint32());
  if (r.ok()) {
    switch (m.code) {
      case auth_code::ok:
      case auth_code::kerberos_v5:
      case auth_code::cleartext_password:
      case auth_code::gss:
      case auth_code::sspi:
        break;
      case auth_code::md5_password:
        m.md5_salt = r.bytes(4);
        break;
      case auth_code::sasl:
        // Mechanism names, then an empty name as the list terminator.
        for (;;) {
          const auto name = r.cstr();
          if (!r.ok() || name.empty()) break;
          m.mechanisms.push_back(name);
        }
        if (r.ok() && m.mechanisms.empty()) r.fail(errc::bad_value);
        break;
      case auth_code::gss_continue:
      case auth_code::sasl_continue:
      case auth_code::sasl_final:
        m.data = r.rest();
        break;
      default:
        r.fail(errc::bad_value);
        break;
    }
  }
  return commit(r, m, out);
}

std::error_code parse_parameter_status(std::string_view body, parameter_status& out) {
  byte_reader r(body);
  parameter_status m;
  m.name = r.cstr();
  m.value = r.cstr();
  return commit(r, m, out);
}

std::error_code parse_backend_key_data(std::string_view body, backend_key_data& out) {
  byte_reader r(body);
  backend_key_data m;
  m.process_id = r.uint32();
  m.secret_key = r.uint32();
  return commit(r, m, out);
}

std::error_code parse_ready_for_query(std::string_view body, ready_for_query& out) {
  byte_reader r(body);
  ready_for_query m;
  m.status = r.byte();
  if (r.ok() && m.status != 'I' && m.status != 'T' && m.status != 'E') r.fail(errc::bad_value);
  return commit(r, m, out);
}

std::error_code parse_row_description(std::string_view body, row_description& out) {
  // Name terminator plus the fixed 18 bytes that follow it.
  constexpr std::size_t k_min_field_size = 1 + 4 + 2 + 4 + 2 + 4 + 2;
  byte_reader r(body);
  row_description m;
  const auto n = r.count16(k_min_field_size);
  m.fields.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    row_field f;
    f.name = r.cstr();
    f.table_oid = r.uint32();
    f.column = r.int16();
    f.type_oid = r.uint32();
    f.type_size = r.int16();
    f.type_modifier = r.int32();
    f.format = r.format();
    m.fields.push_back(f);
  }
  return commit(r, m, out);
}

std::error_code parse_data_row(std::string_view body, data_row& out) {
  byte_reader r(body);
  data_row m;
  const auto n = r.count16(4);
  m.values.reserve(n);
  for (std::size_t i = 0; i < n; ++i) m.values.push_back(r.counted());
  return commit(r, m, out);
}

std::error_code parse_command_complete(std::string_view body, command_complete& out) {
  byte_reader r(body);
  command_complete m;
  m.tag = r.cstr();
  return commit(r, m, out);
}

std::optional<std::string_view> error_fields::get(char code) const {
  for (const auto& [c, value] : fields) {
    if (c == code) return value;
  }
  return std::nullopt;
}

std::error_code parse_error_fields(std::string_view body, error_fields& out) {
  byte_reader r(body);
  error_fields m;
  for (;;) {
    // The list ends with a zero byte where the next field code would be.
    if (r.remaining() == 0) r.fail(errc::missing_terminator);
    const char code = r.byte();
    if (!r.ok() || code == 0) break;
    const auto value = r.cstr();
    m.fields.emplace_back(code, value);
  }
  return commit(r, m, out);
}

std::error_code parse_notification_response(std::string_view body, notification_response& out) {
  byte_reader r(body);
  notification_response m;
  m.process_id = r.uint32();
  m.channel = r.cstr();
  m.payload = r.cstr();
  return commit(r, m, out);
}

std::error_code parse_parameter_description(std::string_view body, parameter_description& out) {
  byte_reader r(body);
  parameter_description m;
  const auto n = r.count16(4);
  m.type_oids.reserve(n);
  for (std::size_t i = 0; i < n; ++i) m.type_oids.push_back(r.uint32());
  return commit(r, m, out);
}

std::error_code parse_copy_response(std::string_view body, copy_response& out) {
  byte_reader r(body);
  copy_response m;
  const char overall = r.byte();
  if (r.ok() && overall != 0 && overall != 1) r.fail(errc::bad_value);
  m.format = static_cast<std::int8_t>(overall);
  const auto n = r.count16(2);
  m.column_formats.reserve(n);
  for (std::size_t i = 0; i < n; ++i) m.column_formats.push_back(r.format());
  return commit(r, m, out);
}

std::error_code parse_function_call_response(std::string_view body, function_call_response& out) {
  byte_reader r(body);
  function_call_response m;
  m.result = r.counted();
  return commit(r, m, out);
}

std::error_code parse_negotiate_protocol_version(std::string_view body,
                                                 negotiate_protocol_version& out) {
  byte_reader r(body);
  negotiate_protocol_version m;
  m.newest_version = r.uint32();
  // Each option name is at least its terminator.
  const auto n = r.count32(1);
  m.unrecognized_options.reserve(n);
  for (std::size_t i = 0; i < n; ++i) m.unrecognized_options.push_back(r.cstr());
  return commit(r, m, out);
}

}  // namespace pgstash::wire
