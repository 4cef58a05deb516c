#include "wire/errc.hpp"

#include <string>

namespace pgstash::wire {
namespace {

class wire_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "pgstash.wire"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::length_too_short:
        return "message length below the minimum";
      case errc::message_too_large:
        return "message length above the maximum";
      case errc::truncated:
        return "field runs past the end of the message";
      case errc::missing_terminator:
        return "string or list has no terminator";
      case errc::trailing_bytes:
        return "unexpected bytes after the last field";
      case errc::unknown_startup_code:
        return "unsupported startup request code or protocol version";
      case errc::missing_user:
        return "startup packet has no user name";
      case errc::bad_count:
        return "negative or inconsistent count";
      case errc::bad_value:
        return "field value out of range";
    }
    return "unknown wire error";
  }
};

}  // namespace

const std::error_category& wire_category() noexcept {
  // The one global of the codec: error categories are compared by address.
  static const wire_category_impl category;
  return category;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), wire_category()}; }

}  // namespace pgstash::wire
