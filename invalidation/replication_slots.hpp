// The logical replication slots a pgstash stream would make (test_decoding
// plugin), as pg_replication_slots shows them: what a persistent slot of an
// instance that went away costs the server (the WAL it holds), and dropping
// one. Blocking libpq calls, each on a connection of its own.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pgstash::invalidation {

struct replication_slot {
  std::string name;
  std::string database;
  bool active = false;  // a consumer is connected
  bool temporary = false;
  std::string confirmed_lsn;        // empty if none yet
  std::int64_t retained_bytes = 0;  // WAL the server keeps for it
};

// Every logical test_decoding slot of the server `conninfo` (libpq
// keywords of a normal connection) reaches. Throws std::runtime_error with
// the server's one-line message.
std::vector<replication_slot> list_slots(const std::string& conninfo);

// Whether `slot` is one an instance with invalidation.slot = `prefix`
// makes: `<prefix>_<database oid>`.
bool named_by(std::string_view slot, std::string_view prefix);

enum class drop_outcome { dropped, not_found, active };
// Drops the test_decoding slot `name` unless a consumer uses it. Throws
// std::runtime_error with the server's one-line message.
drop_outcome drop_slot(const std::string& conninfo, const std::string& name);

}  // namespace pgstash::invalidation
