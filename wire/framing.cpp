#include "wire/framing.hpp"

#include "wire/errc.hpp"

namespace pgstash::wire {
namespace {

std::uint32_t load_be32(std::string_view in) {
  const auto b = [&](std::size_t i) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(in[i]));
  };
  return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
}

decoded_frame failed(errc e) {
  decoded_frame f;
  f.status = decode_status::error;
  f.error = make_error_code(e);
  return f;
}

}  // namespace

decoded_frame decode_header(std::string_view in, phase p, std::uint32_t max_message_size) {
  decoded_frame f;
  if (p == phase::startup) {
    if (in.size() < 4) return f;
    f.header.length = load_be32(in);
    // The smallest startup packet is an SSLRequest: length plus request code.
    if (f.header.length < 8) return failed(errc::length_too_short);
    if (f.header.length > k_max_startup_packet) return failed(errc::message_too_large);
  } else {
    if (in.size() < 5) return f;
    f.header.tag = in[0];
    // frame_size() tells the phases apart by a zero tag, so a NUL tag here
    // would silently shift every later frame by one byte.
    if (f.header.tag == 0) return failed(errc::bad_value);
    f.header.length = load_be32(in.substr(1));
    if (f.header.length < 4) return failed(errc::length_too_short);
    if (f.header.length > max_message_size) return failed(errc::message_too_large);
  }
  f.status = decode_status::message;
  return f;
}

decoded_frame decode_frame(std::string_view in, phase p, std::uint32_t max_message_size) {
  decoded_frame f = decode_header(in, p, max_message_size);
  if (f.status != decode_status::message) return f;
  const std::size_t size = f.header.frame_size();
  if (in.size() < size) {
    f.status = decode_status::need_more;
    return f;
  }
  const std::size_t header_size = (f.header.tag ? 1 : 0) + 4;
  f.body = in.substr(header_size, size - header_size);
  f.consumed = size;
  return f;
}

}  // namespace pgstash::wire
