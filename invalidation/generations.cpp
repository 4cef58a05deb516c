#include "invalidation/generations.hpp"

#include <xxhash.h>

namespace pgstash::invalidation {

namespace {

// The database's hash seeds the relation's: names never run together.
std::uint64_t hash_names(std::string_view database, std::string_view relation) {
  return XXH3_64bits_withSeed(relation.data(), relation.size(),
                              XXH3_64bits(database.data(), database.size()));
}

}  // namespace

std::uint64_t relation_id(std::string_view database, std::string_view relation) {
  return hash_names(database, relation);
}

std::uint64_t any_write_id(std::string_view database) {
  // No relation name holds a NUL.
  return hash_names(database, std::string_view("\0any write", 10));
}

std::uint64_t database_id(std::string_view database) {
  // No relation has an empty name.
  return hash_names(database, {});
}

std::uint64_t table_wide_id(std::uint64_t relation) {
  return XXH3_64bits_withSeed("table-wide", 10, relation);
}

std::uint64_t row_key_id(std::uint64_t relation, std::string_view column, std::int64_t value) {
  return XXH3_64bits_withSeed(&value, sizeof value,
                              XXH3_64bits_withSeed(column.data(), column.size(), relation));
}

void generations::capture(std::span<const std::uint64_t> ids, std::vector<dependency>& out) const {
  for (std::uint64_t id : ids) out.push_back({id, at(id).load(std::memory_order_acquire)});
}

bool generations::still_current(std::span<const dependency> captured) const {
  for (const dependency& d : captured) {
    if (at(d.relation).load(std::memory_order_acquire) != d.generation) return false;
  }
  return true;
}

void generations::bump(std::span<const std::uint64_t> ids) {
  if (!bumps_enabled_.load(std::memory_order_relaxed)) return;
  for (std::uint64_t id : ids) {
    at(id).fetch_add(1, std::memory_order_acq_rel);
    at(table_wide_id(id)).fetch_add(1, std::memory_order_acq_rel);
  }
}

void generations::bump_rows(std::span<const std::uint64_t> ids) {
  if (!bumps_enabled_.load(std::memory_order_relaxed)) return;
  for (std::uint64_t id : ids) at(id).fetch_add(1, std::memory_order_acq_rel);
}

std::vector<std::uint64_t> generations::snapshot() const {
  std::vector<std::uint64_t> out;
  out.reserve(k_slots);
  for (const slot& s : slots_) out.push_back(s.load(std::memory_order_acquire));
  return out;
}

bool generations::restore(std::span<const std::uint64_t> values) {
  if (values.size() != k_slots) return false;
  for (std::size_t i = 0; i < k_slots; ++i) slots_[i].store(values[i], std::memory_order_release);
  return true;
}

}  // namespace pgstash::invalidation
