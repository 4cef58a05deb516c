// Per-relation generation counters, shared by every worker thread: the
// cache's proof that a result is still current (DESIGN.md, "Coherence").
//
// A relation is named by a 64-bit id (relation_id(): database and bare
// relation name) and mapped onto a fixed table of counters. Two relations
// that land on one counter share it, which only ever invalidates more.
// Every database also has an id of its own (database_id()) that each
// cached result depends on, so one bump drops all of a database's results.
//
// The protocol, for a result read from relations R and a write to W:
// capture(R) before the query is sent; the result is stored only if
// still_current() when it arrives, and served only while it is. bump(W)
// when the commit of W's transaction is acknowledged, before the
// acknowledgement reaches the client: every result captured before is
// then stale, and one captured after sees the write. Nothing is bumped
// when W is sent: until the commit, the results cached are still true (a
// rollback leaves them valid), and a result whose snapshot saw the commit
// before pgstash saw its acknowledgement is only dropped, never wrong. A
// write whose outcome pgstash never learns (the connection broke) must be
// bumped as committed.
//
// Row keys: a read of only the rows of one value of a table's key
// (cache_analysis::point) depends on the table's table-wide id and on the
// value's row key instead of the table's own id; every other read of the
// table depends on its own id. bump() moves an id and its table-wide twin,
// so it reaches both kinds of read; a write of only that value's rows moves
// the table's own id and the value's row key with bump_rows(), which leaves
// the reads of other values current.
//
// Lock-free: every call is a few atomic operations per relation.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "cache/key.hpp"

namespace pgstash::invalidation {

using cache::dependency;

std::uint64_t relation_id(std::string_view database, std::string_view relation);
std::uint64_t database_id(std::string_view database);
// Bumped with every write of the database that is bumped at all: what a
// result depends on when the relations it reads are not all known (a read
// forced by a [[cache.rules]] rule, whose functions may read any table).
std::uint64_t any_write_id(std::string_view database);
// See "Row keys" above; `relation` is a relation_id().
std::uint64_t table_wide_id(std::uint64_t relation);
std::uint64_t row_key_id(std::uint64_t relation, std::string_view column, std::int64_t value);

class generations {
 public:
  generations() = default;
  generations(const generations&) = delete;
  generations& operator=(const generations&) = delete;

  // Appends the current generation of each id to `out`.
  void capture(std::span<const std::uint64_t> ids, std::vector<dependency>& out) const;
  // True if every captured generation is still the current one.
  bool still_current(std::span<const dependency> captured) const;
  // Each id and its table-wide twin.
  void bump(std::span<const std::uint64_t> ids);
  // The ids alone: a write of one key's rows (its table's own id and the
  // key's row_key_id).
  void bump_rows(std::span<const std::uint64_t> ids);

  // Every counter, for a checkpoint (replication_listener); each read
  // atomically, so it holds at least every bump made before the call.
  std::vector<std::uint64_t> snapshot() const;
  // Sets every counter from a snapshot; false, and nothing changed, if
  // `values` is not one. REQUIRES: nothing else uses the table yet.
  bool restore(std::span<const std::uint64_t> values);

  // A test-only switch: a table whose bumps do nothing, so that a stale-
  // read checker can show it is able to fail.
  void disable_bumps_for_testing() { bumps_enabled_ = false; }

 private:
  using slot = std::atomic<std::uint64_t>;
  static constexpr std::size_t k_slots = 1 << 16;
  slot& at(std::uint64_t id) { return slots_[id & (k_slots - 1)]; }
  const slot& at(std::uint64_t id) const { return slots_[id & (k_slots - 1)]; }

  std::array<slot, k_slots> slots_;
  std::atomic<bool> bumps_enabled_ = true;
};

}  // namespace pgstash::invalidation
