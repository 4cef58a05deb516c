#include "wire/random.hpp"

#include <openssl/rand.h>

#include <cstring>
#include <stdexcept>

#include "wire/auth.hpp"

namespace pgstash::wire {

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return out;
}

std::uint32_t random_uint32() {
  const std::string raw = random_bytes(sizeof(std::uint32_t));
  std::uint32_t v;
  std::memcpy(&v, raw.data(), sizeof v);
  return v;
}

std::string random_nonce() { return base64_encode(random_bytes(18)); }

}  // namespace pgstash::wire
