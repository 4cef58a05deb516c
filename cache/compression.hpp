// zstd for stored responses. Result sets are repetitive (row headers,
// padded text, repeated values), so large ones shrink several-fold, which
// stretches the size budget; level 1 keeps the single writer thread fast.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

struct ZSTD_CCtx_s;

namespace pgstash::cache {

// Owns a zstd compression context. Not thread-safe: one per thread.
class compressor {
 public:
  compressor();
  ~compressor();
  compressor(const compressor&) = delete;
  compressor& operator=(const compressor&) = delete;

  // Sets `out` to `in` compressed and returns true, or returns false if
  // compressing would not make it smaller (store it as it is then).
  bool compress(std::string_view in, std::string& out);

 private:
  ZSTD_CCtx_s* context_;
};

// Appends what `in` decompresses to, if that is exactly `size` bytes, and
// returns true; otherwise leaves `out` as it was and returns false.
// Thread-safe (a decompression context per thread).
bool decompress(std::string_view in, std::size_t size, std::string& out);

}  // namespace pgstash::cache
