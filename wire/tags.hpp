// Message type bytes of the PostgreSQL v3 protocol, split by direction so
// that a frontend 'C' (Close) can never be mistaken for a backend 'C'
// (CommandComplete). Enumerator names follow PostgreSQL's protocol.h
// (PqMsg_*), lower-cased, so grep works across both code bases.
#pragma once

namespace pgstash::wire {

// What a client sends (and what pgstash writes to a server).
enum class frontend_tag : char {
  bind = 'B',
  close = 'C',
  describe = 'D',
  execute = 'E',
  function_call = 'F',
  flush = 'H',
  parse = 'P',
  query = 'Q',
  sync = 'S',
  terminate = 'X',
  copy_fail = 'f',
  copy_done = 'c',
  copy_data = 'd',
  // PasswordMessage, SASLInitialResponse, SASLResponse and GSSResponse all
  // share 'p'; which one it is depends on the authentication exchange.
  password_message = 'p',
};

// What a server sends (and what pgstash writes to a client).
enum class backend_tag : char {
  parse_complete = '1',
  bind_complete = '2',
  close_complete = '3',
  notification_response = 'A',
  command_complete = 'C',
  data_row = 'D',
  error_response = 'E',
  copy_in_response = 'G',
  copy_out_response = 'H',
  empty_query_response = 'I',
  backend_key_data = 'K',
  notice_response = 'N',
  authentication_request = 'R',
  parameter_status = 'S',
  row_description = 'T',
  function_call_response = 'V',
  copy_both_response = 'W',
  ready_for_query = 'Z',
  copy_done = 'c',
  copy_data = 'd',
  no_data = 'n',
  portal_suspended = 's',
  parameter_description = 't',
  negotiate_protocol_version = 'v',
};

// The tag byte as it goes on the wire.
constexpr char tag_of(frontend_tag t) { return static_cast<char>(t); }
constexpr char tag_of(backend_tag t) { return static_cast<char>(t); }

}  // namespace pgstash::wire
