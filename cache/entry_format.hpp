// The bytes of one entry in LMDB: a 16-byte key (the digest) and a value
// holding the entry's metadata followed by the response:
//
//   u8 format (1) | u8 flags (bit 0: body is zstd) | u16 label size |
//   u32 dependency count | i64 created_ms | i64 expires_ms (0: never) |
//   u64 response size (uncompressed) | dependencies (u64 relation,
//   u64 generation each) | label | body
//
// Integers are in native byte order: the file is read again only on the
// boot of the machine that wrote it (result_store::open discards it
// otherwise). LMDB aligns values to 2 bytes only, so fields are read
// with memcpy, never through a cast pointer.
//
// Pure functions; no LMDB.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cache/key.hpp"

namespace pgstash::cache {

inline constexpr std::size_t k_key_size = 16;
inline constexpr std::size_t k_max_label_size = 0xffff;

using key_bytes = std::array<char, k_key_size>;
key_bytes encode_key(const key& k);
// REQUIRES: bytes.size() == k_key_size.
key decode_key(std::string_view bytes);
inline std::string_view as_view(const key_bytes& b) { return {b.data(), b.size()}; }

struct entry_header {
  std::int64_t created_ms = 0;
  std::int64_t expires_ms = 0;      // 0: never expires
  std::uint64_t response_size = 0;  // before compression
  bool compressed = false;

  bool expired_at(std::int64_t now_ms) const { return expires_ms != 0 && now_ms >= expires_ms; }
};

// A decoded value: views into the stored bytes, valid as long as they are
// (for LMDB: until the txn that read them ends or is reset).
struct entry_view {
  entry_header header;
  std::size_t dep_count = 0;
  std::string_view dep_bytes;  // dep_count * 16 bytes
  std::string_view label;
  std::string_view body;  // the response, zstd-compressed if header.compressed

  // Copies the dependencies to `out`, which has room for dep_count.
  void copy_deps(dependency* out) const;
  std::vector<dependency> deps() const;
};

// Bytes the value of an entry with these parts takes.
// REQUIRES: label_size <= k_max_label_size.
std::size_t encoded_size(std::size_t dep_count, std::size_t label_size, std::size_t body_size);

// Writes the value to `out`, which has room for encoded_size() bytes.
// REQUIRES: label.size() <= k_max_label_size.
void encode_entry(const entry_header& header, std::span<const dependency> deps,
                  std::string_view label, std::string_view body, char* out);

// The entry in `value`, or nullopt if it is not one this version wrote.
std::optional<entry_view> decode_entry(std::string_view value);

// The checkpoint a store keeps beside its entries (result_store::
// save_checkpoint): u64 size (uncompressed) | u8 flags (bit 0: body is
// zstd) | body.
inline constexpr std::string_view k_checkpoint_key = "checkpoint";  // in the meta database
struct checkpoint_view {
  std::uint64_t size = 0;
  bool compressed = false;
  std::string_view body;
};
std::string encode_checkpoint(const checkpoint_view& c);
std::optional<checkpoint_view> decode_checkpoint(std::string_view value);

}  // namespace pgstash::cache
