#include "wire/frontend.hpp"

#include <cctype>
#include <string>

#include "wire/byte_reader.hpp"
#include "wire/errc.hpp"

namespace pgstash::wire {

using detail::byte_reader;
using detail::commit;

namespace {

// Bind and FunctionCall give no format (all text), one for all values, or
// one per value.
bool format_count_fits(std::size_t formats, std::size_t values) {
  return formats == 0 || formats == 1 || formats == values;
}

}  // namespace

std::optional<std::string_view> startup_message::get(std::string_view name) const {
  // PostgreSQL lets a repeated parameter override the earlier one.
  for (auto it = parameters.rbegin(); it != parameters.rend(); ++it) {
    if (it->first == name) return it->second;
  }
  return std::nullopt;
}

std::uint32_t startup_code(std::string_view body) { return byte_reader(body).uint32(); }

bool is_special_request_code(std::uint32_t code) {
  return code == k_ssl_request_code || code == k_gssenc_request_code || code == k_cancel_request_code;
}

std::optional<replication_mode> parse_replication(std::string_view value) {
  if (value == "database") return replication_mode::logical;
  std::string lower(value);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // As PostgreSQL's parse_bool: any prefix of the words, but "o" alone is
  // ambiguous between on and off.
  auto prefix_of = [&](std::string_view word, std::size_t min) {
    return lower.size() >= min && word.starts_with(lower);
  };
  if (prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || lower == "1")
    return replication_mode::physical;
  if (prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || lower == "0")
    return replication_mode::none;
  return std::nullopt;
}

std::error_code parse_startup_packet(std::string_view body, startup_packet& out) {
  byte_reader r(body);
  const std::uint32_t code = r.uint32();
  switch (code) {
    case k_ssl_request_code: {
      ssl_request m;
      return commit(r, m, out);
    }
    case k_gssenc_request_code: {
      gssenc_request m;
      return commit(r, m, out);
    }
    case k_cancel_request_code: {
      cancel_request m;
      m.process_id = r.uint32();
      m.secret_key = r.uint32();
      return commit(r, m, out);
    }
    default:
      break;
  }
  if (!r.ok()) return r.finish();
  // The request codes above are "versions" 1234.x; only 3.x is a startup.
  if (code >> 16 != 3) return make_error_code(errc::unknown_startup_code);

  startup_message m;
  m.protocol = code;
  for (;;) {
    const auto name = r.cstr();
    if (!r.ok() || name.empty()) break;
    const auto value = r.cstr();
    m.parameters.emplace_back(name, value);
  }
  if (auto ec = r.finish()) return ec;
  // PostgreSQL also refuses an empty user name.
  const auto user = m.get("user");
  if (!user || user->empty()) return make_error_code(errc::missing_user);
  out = std::move(m);
  return {};
}

std::error_code parse_query(std::string_view body, query_message& out) {
  byte_reader r(body);
  query_message m;
  m.sql = r.cstr();
  return commit(r, m, out);
}

std::error_code parse_parse(std::string_view body, parse_message& out) {
  byte_reader r(body);
  parse_message m;
  m.statement = r.cstr();
  m.query = r.cstr();
  const auto n = r.count16(4);
  m.parameter_types.reserve(n);
  for (std::size_t i = 0; i < n; ++i) m.parameter_types.push_back(r.uint32());
  return commit(r, m, out);
}

std::error_code parse_bind(std::string_view body, bind_message& out) {
  byte_reader r(body);
  bind_message m;
  m.portal = r.cstr();
  m.statement = r.cstr();
  const auto nformats = r.count16(2);
  m.parameter_formats.reserve(nformats);
  for (std::size_t i = 0; i < nformats; ++i) m.parameter_formats.push_back(r.format());
  const auto nparams = r.count16(4);
  m.parameters.reserve(nparams);
  for (std::size_t i = 0; i < nparams; ++i) m.parameters.push_back(r.counted());
  if (!format_count_fits(nformats, nparams)) r.fail(errc::bad_count);
  const auto nresults = r.count16(2);
  m.result_formats.reserve(nresults);
  for (std::size_t i = 0; i < nresults; ++i) m.result_formats.push_back(r.format());
  return commit(r, m, out);
}

namespace {

// Describe and Close share a layout: 'S'tatement or 'P'ortal, then a name.
template <typename T>
std::error_code parse_target_and_name(std::string_view body, T& out) {
  byte_reader r(body);
  T m;
  m.target = r.byte();
  if (r.ok() && m.target != 'S' && m.target != 'P') r.fail(errc::bad_value);
  m.name = r.cstr();
  return commit(r, m, out);
}

}  // namespace

std::error_code parse_describe(std::string_view body, describe_message& out) {
  return parse_target_and_name(body, out);
}

std::error_code parse_execute(std::string_view body, execute_message& out) {
  byte_reader r(body);
  execute_message m;
  m.portal = r.cstr();
  m.max_rows = r.uint32();
  return commit(r, m, out);
}

std::error_code parse_close(std::string_view body, close_message& out) {
  return parse_target_and_name(body, out);
}

std::error_code parse_function_call(std::string_view body, function_call_message& out) {
  byte_reader r(body);
  function_call_message m;
  m.function_oid = r.uint32();
  const auto nformats = r.count16(2);
  m.argument_formats.reserve(nformats);
  for (std::size_t i = 0; i < nformats; ++i) m.argument_formats.push_back(r.format());
  const auto nargs = r.count16(4);
  m.arguments.reserve(nargs);
  for (std::size_t i = 0; i < nargs; ++i) m.arguments.push_back(r.counted());
  if (!format_count_fits(nformats, nargs)) r.fail(errc::bad_count);
  m.result_format = r.format();
  return commit(r, m, out);
}

std::error_code parse_copy_fail(std::string_view body, copy_fail_message& out) {
  byte_reader r(body);
  copy_fail_message m;
  m.reason = r.cstr();
  return commit(r, m, out);
}

std::error_code parse_empty(std::string_view body) { return byte_reader(body).finish(); }

std::error_code parse_password_message(std::string_view body, password_message& out) {
  byte_reader r(body);
  password_message m;
  m.password = r.cstr();
  return commit(r, m, out);
}

std::error_code parse_sasl_initial_response(std::string_view body, sasl_initial_response& out) {
  byte_reader r(body);
  sasl_initial_response m;
  m.mechanism = r.cstr();
  m.data = r.counted();
  return commit(r, m, out);
}

std::error_code parse_sasl_response(std::string_view body, sasl_response& out) {
  out.data = body;
  return {};
}

}  // namespace pgstash::wire
