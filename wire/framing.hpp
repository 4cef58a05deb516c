// Finds message boundaries in a byte stream. Pure: no I/O, no allocation,
// no globals, so it can be fuzzed directly.
//
// A connection starts in the startup phase, where packets are a 4-byte
// length followed by the body (StartupMessage, SSLRequest, GSSENCRequest,
// CancelRequest). After startup every message is a 1-byte tag, a 4-byte
// length that counts itself, then the body.
//
// The caller owns the buffer: it appends what it reads and calls
// decode_frame() on the unconsumed part. To stream large messages without
// holding them (pass-through by length), it calls decode_header() alone and
// forwards header.length + 1 bytes as they arrive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <system_error>

namespace pgstash::wire {

enum class phase { startup, normal };

// PostgreSQL's own cap on a startup packet (MAX_STARTUP_PACKET_LENGTH).
inline constexpr std::uint32_t k_max_startup_packet = 10000;

struct frame_header {
  char tag = 0;              // 0 in the startup phase
  std::uint32_t length = 0;  // the length word: counts itself, not the tag
  // Bytes the whole frame occupies in the stream, tag included.
  std::size_t frame_size() const { return std::size_t{length} + (tag ? 1u : 0u); }
};

enum class decode_status { message, need_more, error };

struct decoded_frame {
  decode_status status = decode_status::need_more;
  frame_header header;
  std::string_view body;     // valid while the caller's buffer is; excludes tag and length
  std::size_t consumed = 0;  // frame size when status == message, else 0
  std::error_code error;     // set when status == error
};

// Reads the header at the start of `in`. need_more if fewer than 5 (normal)
// or 4 (startup) bytes; error if the length word is below the minimum or
// above `max_message_size` (startup packets are capped at
// k_max_startup_packet regardless), or if a normal-phase tag is NUL.
// On success the status is `message` with only `header` set: body is
// empty and consumed 0, since the rest of the frame may not be in `in`.
decoded_frame decode_header(std::string_view in, phase p, std::uint32_t max_message_size);

// Like decode_header, but reports `message` only once the whole frame is in
// `in`, with `body` pointing at it.
decoded_frame decode_frame(std::string_view in, phase p, std::uint32_t max_message_size);

}  // namespace pgstash::wire
