// libFuzzer target for the wire codec: frames the input in both phases and
// hands every frame to every parser, then feeds the raw input to the SCRAM
// and base64 decoders. Any crash, sanitizer report or broken framing
// invariant is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "wire/auth.hpp"
#include "wire/backend.hpp"
#include "wire/framing.hpp"
#include "wire/frontend.hpp"

using namespace pgstash::wire;

namespace {

template <typename T>
void run(std::error_code (*parse)(std::string_view, T&), std::string_view body) {
  T m;
  parse(body, m);
}

// Every parser on one body: the tag only picks which would run in
// production, and running them all covers more layouts per input.
void parse_all(std::string_view b) {
  run(parse_query, b);
  run(parse_parse, b);
  run(parse_bind, b);
  run(parse_describe, b);
  run(parse_execute, b);
  run(parse_close, b);
  run(parse_function_call, b);
  run(parse_copy_fail, b);
  parse_empty(b);
  run(parse_password_message, b);
  run(parse_sasl_initial_response, b);
  run(parse_sasl_response, b);
  run(parse_authentication, b);
  run(parse_parameter_status, b);
  run(parse_backend_key_data, b);
  run(parse_ready_for_query, b);
  run(parse_row_description, b);
  run(parse_data_row, b);
  run(parse_command_complete, b);
  run(parse_error_fields, b);
  run(parse_notification_response, b);
  run(parse_parameter_description, b);
  run(parse_copy_response, b);
  run(parse_function_call_response, b);
  run(parse_negotiate_protocol_version, b);
}

const scram_secret& secret() {
  static const scram_secret s = make_scram_secret("pencil", "salt", 1);
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  for (const auto p : {phase::startup, phase::normal}) {
    for (std::string_view rest = in;;) {
      const auto f = decode_frame(rest, p, 1 << 16);
      if (f.status != decode_status::message) break;
      if (f.consumed == 0 || f.consumed > rest.size()) __builtin_trap();
      if (p == phase::startup) {
        run(parse_startup_packet, f.body);
      } else {
        parse_all(f.body);
      }
      rest.remove_prefix(f.consumed);
    }
  }
  // A newline splits the input into client-first and client-final, so the
  // fuzzer can reach the proof check.
  const auto nl = in.find('\n');
  scram_server server(secret(), "srv");
  if (server.handle_client_first(in.substr(0, nl)) && nl != std::string_view::npos) {
    server.handle_client_final(in.substr(nl + 1));
  }
  parse_scram_secret(in);
  base64_decode(in);
  return 0;
}
