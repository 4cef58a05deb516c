#include "wire/message_writer.hpp"

#include <cassert>
#include <initializer_list>

#include "wire/backend.hpp"
#include "wire/frontend.hpp"

namespace pgstash::wire {

void message_writer::begin_tagged(char tag) {
  out_.push_back(tag);
  begin_untagged();
}

void message_writer::begin_untagged() {
  length_at_ = out_.size();
  out_.append(4, '\0');  // back-patched by finish()
}

void message_writer::put_byte(char b) { out_.push_back(b); }

void message_writer::put_int16(std::int16_t v) {
  const auto u = static_cast<std::uint16_t>(v);
  out_.push_back(static_cast<char>(u >> 8));
  out_.push_back(static_cast<char>(u));
}

void message_writer::put_int32(std::int32_t v) { put_uint32(static_cast<std::uint32_t>(v)); }

void message_writer::put_uint32(std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out_.push_back(static_cast<char>(v >> shift));
}

void message_writer::put_bytes(std::string_view bytes) { out_.append(bytes); }

void message_writer::put_cstr(std::string_view s) {
  assert(s.find('\0') == std::string_view::npos);
  out_.append(s);
  out_.push_back('\0');
}

void message_writer::put_counted(std::optional<std::string_view> v) {
  if (!v) {
    put_int32(-1);
    return;
  }
  put_int32(static_cast<std::int32_t>(v->size()));
  put_bytes(*v);
}

void message_writer::finish() {
  const auto length = static_cast<std::uint32_t>(out_.size() - length_at_);
  for (int i = 0; i < 4; ++i) out_[length_at_ + i] = static_cast<char>(length >> (24 - 8 * i));
}

void write_error(std::string& out, const std::vector<std::pair<char, std::string>>& fields,
                 bool notice) {
  message_writer w(out);
  w.begin(notice ? backend_tag::notice_response : backend_tag::error_response);
  for (const auto& [code, value] : fields) {
    w.put_byte(code);
    w.put_cstr(value);
  }
  w.put_byte('\0');
  w.finish();
}

void write_error(std::string& out, std::string_view severity, std::string_view sqlstate,
                 std::string_view message) {
  // 'S' may be localized; 'V' (PostgreSQL 9.6+) is the fixed English one.
  write_error(out, {{'S', std::string(severity)},
                    {'V', std::string(severity)},
                    {'C', std::string(sqlstate)},
                    {'M', std::string(message)}});
}

namespace {

// An AuthenticationRequest: the subtype code, then `data` verbatim.
void write_authentication(std::string& out, auth_code code, std::string_view data = {}) {
  message_writer w(out);
  w.begin(backend_tag::authentication_request);
  w.put_uint32(static_cast<std::uint32_t>(code));
  w.put_bytes(data);
  w.finish();
}

}  // namespace

void write_protocol2_error(std::string& out, std::string_view text) {
  out += 'E';
  out += text;
  out += '\0';
}

void write_authentication_ok(std::string& out) { write_authentication(out, auth_code::ok); }

void write_authentication_cleartext(std::string& out) {
  write_authentication(out, auth_code::cleartext_password);
}

void write_authentication_md5(std::string& out, std::string_view salt4) {
  assert(salt4.size() == 4);
  write_authentication(out, auth_code::md5_password, salt4);
}

void write_authentication_sasl(std::string& out, const std::vector<std::string_view>& mechanisms) {
  message_writer w(out);
  w.begin(backend_tag::authentication_request);
  w.put_uint32(static_cast<std::uint32_t>(auth_code::sasl));
  for (auto m : mechanisms) w.put_cstr(m);
  w.put_byte('\0');
  w.finish();
}

void write_authentication_sasl_continue(std::string& out, std::string_view data) {
  write_authentication(out, auth_code::sasl_continue, data);
}

void write_authentication_sasl_final(std::string& out, std::string_view data) {
  write_authentication(out, auth_code::sasl_final, data);
}

void write_parameter_status(std::string& out, std::string_view name, std::string_view value) {
  message_writer w(out);
  w.begin(backend_tag::parameter_status);
  w.put_cstr(name);
  w.put_cstr(value);
  w.finish();
}

void write_backend_key_data(std::string& out, std::uint32_t process_id, std::uint32_t secret_key) {
  message_writer w(out);
  w.begin(backend_tag::backend_key_data);
  w.put_uint32(process_id);
  w.put_uint32(secret_key);
  w.finish();
}

void write_ready_for_query(std::string& out, char status) {
  message_writer w(out);
  w.begin(backend_tag::ready_for_query);
  w.put_byte(status);
  w.finish();
}

void write_negotiate_protocol_version(std::string& out, std::uint32_t newest_version,
                                      const std::vector<std::string_view>& unrecognized) {
  message_writer w(out);
  w.begin(backend_tag::negotiate_protocol_version);
  w.put_uint32(newest_version);
  w.put_int32(static_cast<std::int32_t>(unrecognized.size()));
  for (auto name : unrecognized) w.put_cstr(name);
  w.finish();
}

void write_startup_message(std::string& out,
                           const std::vector<std::pair<std::string, std::string>>& parameters,
                           std::uint32_t protocol) {
  message_writer w(out);
  w.begin_untagged();
  w.put_uint32(protocol);
  for (const auto& [name, value] : parameters) {
    w.put_cstr(name);
    w.put_cstr(value);
  }
  w.put_byte('\0');
  w.finish();
}

namespace {

// SSLRequest, GSSENCRequest and CancelRequest: a request code and its words.
void write_request(std::string& out, std::initializer_list<std::uint32_t> words) {
  message_writer w(out);
  w.begin_untagged();
  for (auto word : words) w.put_uint32(word);
  w.finish();
}

}  // namespace

void write_ssl_request(std::string& out) { write_request(out, {k_ssl_request_code}); }

void write_gssenc_request(std::string& out) { write_request(out, {k_gssenc_request_code}); }

void write_cancel_request(std::string& out, std::uint32_t process_id, std::uint32_t secret_key) {
  write_request(out, {k_cancel_request_code, process_id, secret_key});
}

void write_password_message(std::string& out, std::string_view password) {
  message_writer w(out);
  w.begin(frontend_tag::password_message);
  w.put_cstr(password);
  w.finish();
}

void write_sasl_initial_response(std::string& out, std::string_view mechanism,
                                 std::string_view data) {
  message_writer w(out);
  w.begin(frontend_tag::password_message);
  w.put_cstr(mechanism);
  w.put_counted(data);
  w.finish();
}

void write_sasl_response(std::string& out, std::string_view data) {
  message_writer w(out);
  w.begin(frontend_tag::password_message);
  w.put_bytes(data);
  w.finish();
}

void write_query(std::string& out, std::string_view sql) {
  message_writer w(out);
  w.begin(frontend_tag::query);
  w.put_cstr(sql);
  w.finish();
}

void write_terminate(std::string& out) {
  message_writer w(out);
  w.begin(frontend_tag::terminate);
  w.finish();
}

void write_parse(std::string& out, std::string_view statement, std::string_view sql,
                 const std::vector<std::uint32_t>& parameter_types) {
  message_writer w(out);
  w.begin(frontend_tag::parse);
  w.put_cstr(statement);
  w.put_cstr(sql);
  w.put_int16(static_cast<std::int16_t>(parameter_types.size()));
  for (std::uint32_t oid : parameter_types) w.put_uint32(oid);
  w.finish();
}

void write_bind(std::string& out, std::string_view portal, std::string_view statement,
                const std::vector<std::optional<std::string_view>>& parameters) {
  message_writer w(out);
  w.begin(frontend_tag::bind);
  w.put_cstr(portal);
  w.put_cstr(statement);
  w.put_int16(0);  // parameter format codes: all text
  w.put_int16(static_cast<std::int16_t>(parameters.size()));
  for (const auto& value : parameters) w.put_counted(value);
  w.put_int16(0);  // result format codes: all text
  w.finish();
}

void write_bind_renamed(std::string& out, std::string_view bind, std::string_view statement) {
  const std::string_view body = bind.substr(5);
  const std::size_t portal_end = body.find('\0');
  const std::size_t statement_end = body.find('\0', portal_end + 1);
  message_writer w(out);
  w.begin(frontend_tag::bind);
  w.put_bytes(body.substr(0, portal_end + 1));
  w.put_cstr(statement);
  w.put_bytes(body.substr(statement_end + 1));
  w.finish();
}

void write_frame(std::string& out, char tag, std::string_view body) {
  message_writer w(out);
  w.begin(static_cast<backend_tag>(tag));
  w.put_bytes(body);
  w.finish();
}

void write_execute(std::string& out, std::string_view portal, std::int32_t max_rows) {
  message_writer w(out);
  w.begin(frontend_tag::execute);
  w.put_cstr(portal);
  w.put_int32(max_rows);
  w.finish();
}

namespace {
void write_targeted(std::string& out, frontend_tag tag, char target, std::string_view name) {
  message_writer w(out);
  w.begin(tag);
  w.put_byte(target);
  w.put_cstr(name);
  w.finish();
}
}  // namespace

void write_close(std::string& out, char target, std::string_view name) {
  write_targeted(out, frontend_tag::close, target, name);
}

void write_describe(std::string& out, char target, std::string_view name) {
  write_targeted(out, frontend_tag::describe, target, name);
}

void write_sync(std::string& out) {
  message_writer w(out);
  w.begin(frontend_tag::sync);
  w.finish();
}

void write_flush(std::string& out) {
  message_writer w(out);
  w.begin(frontend_tag::flush);
  w.finish();
}

void write_copy_fail(std::string& out, std::string_view reason) {
  message_writer w(out);
  w.begin(frontend_tag::copy_fail);
  w.put_cstr(reason);
  w.finish();
}

void write_command_complete(std::string& out, std::string_view tag) {
  message_writer w(out);
  w.begin(backend_tag::command_complete);
  w.put_cstr(tag);
  w.finish();
}

void write_row_description(std::string& out, const std::vector<column_description>& columns) {
  message_writer w(out);
  w.begin(backend_tag::row_description);
  w.put_int16(static_cast<std::int16_t>(columns.size()));
  for (const auto& c : columns) {
    w.put_cstr(c.name);
    w.put_uint32(0);  // no table
    w.put_int16(0);   // no column of one
    w.put_uint32(c.type_oid);
    w.put_int16(c.type_size);
    w.put_int32(-1);  // no type modifier
    w.put_int16(0);   // text format
  }
  w.finish();
}

void write_data_row(std::string& out, const std::vector<std::optional<std::string>>& values) {
  message_writer w(out);
  w.begin(backend_tag::data_row);
  w.put_int16(static_cast<std::int16_t>(values.size()));
  for (const auto& v : values) {
    w.put_counted(v ? std::optional<std::string_view>(*v) : std::nullopt);
  }
  w.finish();
}

void write_empty(std::string& out, backend_tag tag) {
  message_writer w(out);
  w.begin(tag);
  w.finish();
}

void write_no_parameters(std::string& out) {
  message_writer w(out);
  w.begin(backend_tag::parameter_description);
  w.put_int16(0);
  w.finish();
}

}  // namespace pgstash::wire
