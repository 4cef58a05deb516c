// What the store keeps in memory about each stored entry: its size in the
// store, and how often and how recently it was served. LMDB holds the rest.
//
// Hits and last use change on every hit, and writing them to LMDB would
// turn each hit into a write; entries never outlive the process (open()
// discards them), so memory is enough. The index also carries the byte
// total the budget is checked against, and gives the writer random
// entries to choose eviction victims from (Redis-style sampled LRU).
//
// Thread-safety: touch(), find(), entries() and bytes() may be called from
// any thread at any time. Only the store's writer thread changes which
// entries exist (apply()) and samples them, so what it samples stays put
// between its calls.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cache/key.hpp"

namespace pgstash::cache {

class index_delta;

class entry_index {
 public:
  struct usage {
    std::uint64_t size = 0;  // bytes in the store: key + value
    std::uint64_t hits = 0;
    std::int64_t last_use_ms = 0;  // when stored, then when last served
  };
  using entry = std::pair<key, usage>;

  entry_index() = default;
  entry_index(const entry_index&) = delete;
  entry_index& operator=(const entry_index&) = delete;

  // Records a hit on `k` at `now_ms`; nothing if `k` is not indexed.
  void touch(const key& k, std::int64_t now_ms);
  std::optional<usage> find(const key& k) const;
  std::uint64_t entries() const { return entries_.load(std::memory_order_relaxed); }
  std::uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

  // Writer thread only:
  // An entry chosen at random; nullopt when the index is empty.
  std::optional<entry> sample(std::mt19937_64& rng) const;
  // Some entry (in no useful order) for which `skip` is false, or nullopt.
  // Linear: for when sampling keeps drawing skipped entries.
  std::optional<entry> find_unless(const std::function<bool(const key&)>& skip) const;
  // Makes the changes `delta` recorded (after their txn committed).
  void apply(const index_delta& delta);

 private:
  struct slot {
    usage use;
    std::size_t position;  // in shard::keys
  };
  // Sharded so concurrent hits rarely wait on one another; `keys` makes a
  // random pick O(1).
  struct alignas(64) shard {
    mutable std::mutex mutex;
    std::unordered_map<key, slot, key_hash> slots;
    std::vector<key> keys;
  };
  static constexpr std::size_t k_shards = 16;

  shard& shard_of(const key& k) { return shards_[k.high % k_shards]; }
  const shard& shard_of(const key& k) const { return shards_[k.high % k_shards]; }
  void insert(const key& k, const usage& use);
  void erase(const key& k);
  void clear();

  std::array<shard, k_shards> shards_;
  std::atomic<std::uint64_t> entries_{0};
  std::atomic<std::uint64_t> bytes_{0};
};

// The changes one write txn makes, on top of an index that stays as it was
// until the txn commits: then entry_index::apply(), or nothing if the txn
// failed. Tracks the entry and byte totals the index will have.
class index_delta {
 public:
  // REQUIRES: `base` is not changed while the delta lives.
  explicit index_delta(const entry_index& base);

  // `k` is stored (again) with `size` bytes at `now_ms`.
  void put(const key& k, std::uint64_t size, std::int64_t now_ms);
  void erase(const key& k);
  void erase_all();

  // True if the delta stores or erases `k` (after erase_all(): every key),
  // so the base's view of `k` is out of date.
  bool changes(const key& k) const { return cleared_ || changes_.contains(k); }
  bool cleared() const { return cleared_; }
  bool empty() const { return !cleared_ && changes_.empty(); }
  // Totals once applied.
  std::uint64_t entries() const { return entries_; }
  std::uint64_t bytes() const { return bytes_; }

 private:
  friend class entry_index;
  // The size `k` has now, counting this delta; nullopt if absent.
  std::optional<std::uint64_t> current_size(const key& k) const;

  const entry_index& base_;
  bool cleared_ = false;
  std::unordered_map<key, std::optional<entry_index::usage>, key_hash> changes_;  // nullopt: erased
  std::uint64_t entries_;
  std::uint64_t bytes_;
};

}  // namespace pgstash::cache
