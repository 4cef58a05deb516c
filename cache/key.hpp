// What the proxy computes for every cached result: the key that names it,
// and the relations it was read from, each with the generation it had.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pgstash::cache {

// XXH3-128 digest identifying one cached result (computed by the caller).
struct key {
  std::uint64_t low = 0;
  std::uint64_t high = 0;
  bool operator==(const key&) const = default;
};

// For unordered containers. The digest is uniformly distributed already.
struct key_hash {
  std::size_t operator()(const key& k) const { return static_cast<std::size_t>(k.low); }
};

// A relation the result read, and that relation's generation counter when
// the query was sent.
struct dependency {
  std::uint64_t relation = 0;
  std::uint64_t generation = 0;
  bool operator==(const dependency&) const = default;
};

}  // namespace pgstash::cache
