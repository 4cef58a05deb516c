// What a restart needs to prove the cache entries an earlier run left
// (replication_listener.hpp, "Persistent slots"): the generation table at
// one moment and, for each database followed, the WAL position up to which
// every commit had been applied to that table before that moment, with
// the slot that keeps the WAL after it and the server it is on.
//
// Pure: the bytes are stored by the result store beside its entries, and
// read back only on the machine that wrote them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgstash::invalidation {

struct followed_database {
  std::string database;
  std::string slot;
  std::string system_id;  // the server's (IDENTIFY_SYSTEM): the same cluster
  std::uint64_t applied_lsn = 0;
  // The DDL event trigger that was there all along (its oid and xmin,
  // which a drop, a re-creation or an ALTER changes); empty: none.
  std::string ddl_trigger;

  friend bool operator==(const followed_database&, const followed_database&) = default;
};

struct stream_checkpoint {
  std::vector<followed_database> databases;
  std::vector<std::uint64_t> generations;  // generations::snapshot()

  friend bool operator==(const stream_checkpoint&, const stream_checkpoint&) = default;
};

std::string encode(const stream_checkpoint& checkpoint);
// Nullopt if `bytes` are not a checkpoint this version wrote.
std::optional<stream_checkpoint> decode_checkpoint(std::string_view bytes);

}  // namespace pgstash::invalidation
