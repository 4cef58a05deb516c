#include "cache/compression.hpp"

#include <memory>
#include <new>

#include <zstd.h>

namespace pgstash::cache {

namespace {

constexpr int k_level = 1;

}  // namespace

compressor::compressor() : context_(ZSTD_createCCtx()) {
  if (!context_) throw std::bad_alloc();
}

compressor::~compressor() { ZSTD_freeCCtx(context_); }

bool compressor::compress(std::string_view in, std::string& out) {
  out.resize(ZSTD_compressBound(in.size()));
  const std::size_t n =
      ZSTD_compressCCtx(context_, out.data(), out.size(), in.data(), in.size(), k_level);
  if (ZSTD_isError(n) || n >= in.size()) return false;
  out.resize(n);
  return true;
}

bool decompress(std::string_view in, std::size_t size, std::string& out) {
  // ZSTD_decompress() would allocate a context (~100 kB) per call; a hit
  // should not.
  thread_local const std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> context(ZSTD_createDCtx(),
                                                                                  &ZSTD_freeDCtx);
  if (!context) return false;
  const std::size_t old_size = out.size();
  out.resize(old_size + size);
  const std::size_t n =
      ZSTD_decompressDCtx(context.get(), out.data() + old_size, size, in.data(), in.size());
  if (ZSTD_isError(n) || n != size) {
    out.resize(old_size);
    return false;
  }
  return true;
}

}  // namespace pgstash::cache
