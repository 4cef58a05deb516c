// Typed errors of the wire codec. The codec never throws; every parse
// function returns one of these as a std::error_code.
#pragma once

#include <system_error>

namespace pgstash::wire {

enum class errc {
  // The length word is below the minimum for its message (4, or 8 for a
  // startup packet).
  length_too_short = 1,
  // The length word exceeds the configured maximum message size.
  message_too_large,
  // A field runs past the end of the message body.
  truncated,
  // A string field has no NUL terminator inside the body.
  missing_terminator,
  // Bytes remain after the last field of a fixed-layout message.
  trailing_bytes,
  // A startup packet carries a request code / protocol version pgstash
  // does not know.
  unknown_startup_code,
  // A startup packet has no "user" parameter.
  missing_user,
  // A counted field (parameter count, format code count, column count) is
  // negative or inconsistent with the rest of the message.
  bad_count,
  // A field holds a value outside its domain (format code not 0/1, unknown
  // Describe/Close target, bad authentication code, malformed SCRAM
  // attribute, ...).
  bad_value,
};

const std::error_category& wire_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

}  // namespace pgstash::wire

template <>
struct std::is_error_code_enum<pgstash::wire::errc> : std::true_type {};
