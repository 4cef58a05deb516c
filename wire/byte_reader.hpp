// Internal to wire/: a bounds-checked cursor over one message body, shared
// by the frontend and backend parsers. Not part of the module's contract.
//
// Errors are sticky, like an iostream's failbit: after the first failure
// every read returns a zero value and consumes nothing, so a parser reads
// its whole layout straight through and checks finish() once.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <system_error>
#include <utility>

#include "wire/errc.hpp"

namespace pgstash::wire::detail {

class byte_reader {
 public:
  // `in` must outlive the reader and every view it returns.
  explicit byte_reader(std::string_view in) : rest_(in) {}

  char byte() { return ok_to_read(1) ? take(1)[0] : char{0}; }
  std::int16_t int16() { return static_cast<std::int16_t>(be(2)); }
  std::int32_t int32() { return static_cast<std::int32_t>(be(4)); }
  std::uint32_t uint32() { return be(4); }
  std::string_view bytes(std::size_t n) { return ok_to_read(n) ? take(n) : std::string_view{}; }
  std::string_view rest() { return error_ ? std::string_view{} : take(rest_.size()); }

  // A NUL-terminated string, without its terminator.
  std::string_view cstr() {
    if (error_) return {};
    const auto nul = rest_.find('\0');
    if (nul == std::string_view::npos) {
      fail(errc::missing_terminator);
      return {};
    }
    const auto s = take(nul);
    take(1);
    return s;
  }

  // An int32 length then that many bytes; -1 is SQL NULL (nullopt).
  std::optional<std::string_view> counted() {
    const std::int32_t n = int32();
    if (error_) return std::string_view{};
    if (n == -1) return std::nullopt;
    if (n < 0) {
      fail(errc::bad_count);
      return std::string_view{};
    }
    return bytes(static_cast<std::size_t>(n));
  }

  // A format code: 0 (text) or 1 (binary).
  std::int16_t format() {
    const std::int16_t f = int16();
    if (f != 0 && f != 1) fail(errc::bad_value);
    return error_ ? std::int16_t{0} : f;
  }

  // Item counts, rejected unless `min_item_size` bytes per item still fit
  // in the body, so no caller loops or allocates on a forged count.
  // Two-byte counts are unsigned, as PostgreSQL reads them: a Bind may
  // carry up to 65535 parameters.
  std::size_t count16(std::size_t min_item_size) { return checked_count(be(2), min_item_size); }
  std::size_t count32(std::size_t min_item_size) { return checked_count(int32(), min_item_size); }

  void fail(errc e) {
    if (!error_) error_ = make_error_code(e);
  }
  bool ok() const { return !error_; }
  std::size_t remaining() const { return rest_.size(); }

  // The first error, else trailing_bytes if the body is not used up.
  std::error_code finish() {
    if (!error_ && !rest_.empty()) fail(errc::trailing_bytes);
    return error_;
  }

 private:
  bool ok_to_read(std::size_t n) {
    if (error_) return false;
    if (rest_.size() < n) {
      fail(errc::truncated);
      return false;
    }
    return true;
  }
  std::size_t checked_count(std::int64_t n, std::size_t min_item_size) {
    if (error_) return 0;
    if (n < 0 || static_cast<std::uint64_t>(n) > rest_.size() / min_item_size) {
      fail(errc::bad_count);
      return 0;
    }
    return static_cast<std::size_t>(n);
  }
  std::string_view take(std::size_t n) {
    const auto s = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return s;
  }
  std::uint32_t be(std::size_t n) {
    if (!ok_to_read(n)) return 0;
    std::uint32_t v = 0;
    for (char c : take(n)) v = v << 8 | static_cast<unsigned char>(c);
    return v;
  }

  std::string_view rest_;
  std::error_code error_;
};

// Moves `m` into `out` only when the whole body parsed, so callers never
// see a half-filled message.
template <typename T, typename Out>
std::error_code commit(byte_reader& r, T& m, Out& out) {
  auto ec = r.finish();
  if (!ec) out = std::move(m);
  return ec;
}

}  // namespace pgstash::wire::detail
