#include "cache/entry_index.hpp"

#include <algorithm>

namespace pgstash::cache {

void entry_index::touch(const key& k, std::int64_t now_ms) {
  shard& s = shard_of(k);
  std::lock_guard lock(s.mutex);
  const auto it = s.slots.find(k);
  if (it == s.slots.end()) return;
  ++it->second.use.hits;
  // Hits from several threads may arrive out of order.
  it->second.use.last_use_ms = std::max(it->second.use.last_use_ms, now_ms);
}

std::optional<entry_index::usage> entry_index::find(const key& k) const {
  const shard& s = shard_of(k);
  std::lock_guard lock(s.mutex);
  const auto it = s.slots.find(k);
  if (it == s.slots.end()) return std::nullopt;
  return it->second.use;
}

std::optional<entry_index::entry> entry_index::sample(std::mt19937_64& rng) const {
  // Pick a shard, then an entry in it. Shards hold about equal numbers of
  // uniformly hashed keys, so this is close to uniform.
  const std::size_t first = rng() % k_shards;
  for (std::size_t i = 0; i < k_shards; ++i) {
    const shard& s = shards_[(first + i) % k_shards];
    std::lock_guard lock(s.mutex);
    if (s.keys.empty()) continue;
    const key& k = s.keys[rng() % s.keys.size()];
    return entry{k, s.slots.at(k).use};
  }
  return std::nullopt;
}

std::optional<entry_index::entry> entry_index::find_unless(
    const std::function<bool(const key&)>& skip) const {
  for (const shard& s : shards_) {
    std::lock_guard lock(s.mutex);
    for (const auto& [k, sl] : s.slots) {
      if (!skip(k)) return entry{k, sl.use};
    }
  }
  return std::nullopt;
}

void entry_index::apply(const index_delta& delta) {
  if (delta.cleared_) clear();
  for (const auto& [k, use] : delta.changes_) {
    if (use) {
      insert(k, *use);
    } else {
      erase(k);
    }
  }
}

void entry_index::insert(const key& k, const usage& use) {
  shard& s = shard_of(k);
  std::lock_guard lock(s.mutex);
  const auto [it, inserted] = s.slots.try_emplace(k, slot{use, s.keys.size()});
  if (inserted) {
    s.keys.push_back(k);
    entries_.fetch_add(1, std::memory_order_relaxed);
  } else {
    bytes_.fetch_sub(it->second.use.size, std::memory_order_relaxed);
    it->second.use = use;  // a new result: its hits start over
  }
  bytes_.fetch_add(use.size, std::memory_order_relaxed);
}

void entry_index::erase(const key& k) {
  shard& s = shard_of(k);
  std::lock_guard lock(s.mutex);
  const auto it = s.slots.find(k);
  if (it == s.slots.end()) return;
  // Move the last key into the hole so `keys` stays dense.
  const std::size_t position = it->second.position;
  const key last = s.keys.back();
  s.keys[position] = last;
  s.slots.at(last).position = position;
  s.keys.pop_back();
  bytes_.fetch_sub(it->second.use.size, std::memory_order_relaxed);
  entries_.fetch_sub(1, std::memory_order_relaxed);
  s.slots.erase(it);
}

void entry_index::clear() {
  for (shard& s : shards_) {
    std::lock_guard lock(s.mutex);
    for (const auto& [k, sl] : s.slots) {
      bytes_.fetch_sub(sl.use.size, std::memory_order_relaxed);
      entries_.fetch_sub(1, std::memory_order_relaxed);
    }
    s.slots.clear();
    s.keys.clear();
  }
}

index_delta::index_delta(const entry_index& base)
    : base_(base), entries_(base.entries()), bytes_(base.bytes()) {}

std::optional<std::uint64_t> index_delta::current_size(const key& k) const {
  if (const auto it = changes_.find(k); it != changes_.end()) {
    if (!it->second) return std::nullopt;
    return it->second->size;
  }
  if (cleared_) return std::nullopt;
  if (const auto use = base_.find(k)) return use->size;
  return std::nullopt;
}

void index_delta::put(const key& k, std::uint64_t size, std::int64_t now_ms) {
  if (const auto old = current_size(k)) {
    bytes_ -= *old;
  } else {
    ++entries_;
  }
  bytes_ += size;
  changes_[k] = entry_index::usage{size, 0, now_ms};
}

void index_delta::erase(const key& k) {
  const auto old = current_size(k);
  if (!old) return;
  bytes_ -= *old;
  --entries_;
  changes_[k] = std::nullopt;
}

void index_delta::erase_all() {
  cleared_ = true;
  changes_.clear();
  entries_ = 0;
  bytes_ = 0;
}

}  // namespace pgstash::cache
