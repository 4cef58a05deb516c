// Cryptographically strong random values (OpenSSL's RAND_bytes), for
// salts, nonces and cancel keys. Throws std::runtime_error if the generator
// fails.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pgstash::wire {

std::string random_bytes(std::size_t n);
std::uint32_t random_uint32();
// 18 random bytes in base64: a SCRAM client or server nonce.
std::string random_nonce();

}  // namespace pgstash::wire
