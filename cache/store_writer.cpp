#include "cache/store_writer.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <string_view>
#include <utility>

#include "cache/entry_format.hpp"
#include "cache/entry_index.hpp"
#include "cache/lmdb_env.hpp"
#include "cache/store_state.hpp"

namespace pgstash::cache {

namespace {

using clock = std::chrono::steady_clock;

// A txn holds at most this many ops, so a failed one loses little and
// eviction keeps up within it.
constexpr std::size_t k_max_batch_ops = 1024;
// Entries sampled per eviction; the least recently used of them goes.
// Redis's default; more samples approach exact LRU at more cost.
constexpr int k_samples = 5;
// Entries one reclaim step examines in one txn.
constexpr std::size_t k_reclaim_chunk = 1024;

std::string size_text(std::uint64_t bytes) {
  if (bytes < (10ull << 20)) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes >> 20) + " MiB";
}

}  // namespace

std::size_t result_store::writer::op::bytes() const {
  return put.response.size() + put.label.size() + put.deps.size() * sizeof(dependency) +
         erase.size() * sizeof(key) + (checkpoint ? checkpoint->size() : 0) + 64;
}

result_store::writer::writer(state& s)
    : state_(s),
      budget_(s.options.max_size),
      rng_(std::random_device{}()),
      thread_([this] { run(); }) {}

result_store::writer::~writer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  thread_.join();
}

bool result_store::writer::enqueue_put(put_request r) {
  op o;
  o.put = std::move(r);
  return enqueue(std::move(o), true);
}

void result_store::writer::enqueue_erase_all() {
  op o;
  o.erase_all = true;
  enqueue(std::move(o), false);
}

void result_store::writer::enqueue_erase(std::vector<key> keys) {
  op o;
  o.erase = std::move(keys);
  enqueue(std::move(o), false);
}

void result_store::writer::enqueue_checkpoint(std::string checkpoint,
                                              std::function<void(bool saved)> done) {
  op o;
  o.checkpoint = std::move(checkpoint);
  o.saved = std::move(done);
  enqueue(std::move(o), false);
}

bool result_store::writer::enqueue(op o, bool may_drop) {
  // Bound the memory waiting puts hold if callers outrun the writer; a
  // dropped put is only a cache fill that did not happen.
  const std::uint64_t limit =
      std::max<std::uint64_t>(64ull << 20, 2 * state_.options.max_entry_size);
  const std::size_t bytes = o.bytes();
  {
    std::lock_guard lock(mutex_);
    if (may_drop && !queue_.empty() && queued_bytes_ + bytes > limit) return false;
    queue_.push_back(std::move(o));
    queued_bytes_ += bytes;
    ++queued_count_;
  }
  work_.notify_one();
  return true;
}

void result_store::writer::flush() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = queued_count_;
  applied_.wait(lock, [&] { return applied_count_ >= target; });
}

bool result_store::writer::work_queued() {
  std::lock_guard lock(mutex_);
  return !queue_.empty() || stopping_;
}

void result_store::writer::run() {
  // (At most a day: steady_clock arithmetic must not overflow.)
  const auto interval = std::chrono::milliseconds(
      std::clamp<std::int64_t>(state_.options.reclaim_interval_ms, 1, 86'400'000));
  auto next_reclaim = clock::now() + interval;
  std::vector<op> batch;
  std::unique_lock lock(mutex_);
  for (;;) {
    if (queue_.empty()) {
      if (stopping_) return;
      if (work_.wait_until(lock, next_reclaim, [&] { return stopping_ || !queue_.empty(); })) {
        continue;
      }
      lock.unlock();
      reclaim_while_idle();
      next_reclaim = clock::now() + interval;
      lock.lock();
      continue;
    }
    take_batch(batch);
    lock.unlock();
    const bool committed = apply(batch);
    for (op& o : batch) {
      if (o.put.applied) o.put.applied();
      if (o.saved) o.saved(committed);
    }
    // Busy: reclaim keeps its pace, a chunk per interval.
    if (clock::now() >= next_reclaim) {
      reclaim_step();
      next_reclaim = clock::now() + interval;
    }
    const std::size_t done = batch.size();
    batch.clear();  // frees the responses outside the lock
    lock.lock();
    applied_count_ += done;
    applied_.notify_all();
  }
}

void result_store::writer::take_batch(std::vector<op>& batch) {
  // Also cap the bytes, so one txn's new entries stay well within the
  // budget and eviction can make room for them in the same txn.
  const std::uint64_t max_bytes = std::max<std::uint64_t>(state_.options.max_size / 8, 1);
  std::uint64_t bytes = 0;
  while (!queue_.empty() && batch.size() < k_max_batch_ops) {
    const std::size_t b = queue_.front().bytes();
    if (!batch.empty() && bytes + b > max_bytes) break;
    bytes += b;
    queued_bytes_ -= b;
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
}

bool result_store::writer::apply(std::vector<op>& batch) {
  index_delta delta(state_.index);
  tally counts;
  bool checkpointed = false;
  try {
    lmdb::txn t = lmdb::txn::begin(state_.env, 0);
    for (const op& o : batch) {
      if (o.checkpoint) {
        write_checkpoint(t, *o.checkpoint);
        checkpointed = true;
      } else if (o.erase_all) {
        state_.dbi.clear(t);
        counts.invalidations += delta.entries();
        delta.erase_all();
      } else if (!o.erase.empty()) {
        for (const key& k : o.erase) {
          if (!state_.dbi.del(t, as_view(encode_key(k)))) continue;
          delta.erase(k);
          ++counts.invalidations;
        }
      } else {
        write_put(t, delta, o.put, counts);
      }
    }
    evict(t, delta, counts);
    if (delta.empty() && !checkpointed) return false;  // every put was stale: nothing to commit
    return commit(t, delta, counts, "a batch of cache writes");
  } catch (const std::exception& e) {
    failed(e, "a batch of cache writes");
    return false;
  }
}

void result_store::writer::write_checkpoint(const lmdb::txn& t, const std::string& checkpoint) {
  checkpoint_view c{checkpoint.size(), false, checkpoint};
  if (compressor_.compress(checkpoint, compressed_)) {
    c.compressed = true;
    c.body = compressed_;
  }
  const std::string value = encode_checkpoint(c);
  char* out = state_.meta.reserve(t, k_checkpoint_key, value.size());
  std::memcpy(out, value.data(), value.size());
}

void result_store::writer::write_put(const lmdb::txn& t, index_delta& delta, const put_request& r,
                                     tally& counts) {
  // The dependencies were current when the query was sent; if a write
  // bumped one since, this result may predate it.
  if (!state_.still_valid(r.deps)) {
    state::count(state_.rejected);
    return;
  }
  entry_header header{r.created_ms, r.expires_ms, r.response.size(), false};
  std::string_view body = r.response;
  if (r.response.size() >= state_.options.compress_min_size &&
      compressor_.compress(r.response, compressed_)) {
    header.compressed = true;
    body = compressed_;
  }
  const std::size_t size = encoded_size(r.deps.size(), r.label.size(), body.size());
  const key_bytes k = encode_key(r.k);
  encode_entry(header, r.deps, r.label, body, state_.dbi.reserve(t, as_view(k), size));
  delta.put(r.k, k_key_size + size, r.created_ms);
  ++counts.stores;
}

void result_store::writer::evict(const lmdb::txn& t, index_delta& delta, tally& counts) {
  while (delta.bytes() > budget_) {
    const std::optional<key> victim = pick_victim(delta);
    if (!victim) return;  // only this txn's own entries are left
    state_.dbi.del(t, as_view(encode_key(*victim)));
    delta.erase(*victim);
    ++counts.evictions;
  }
}

std::optional<key> result_store::writer::pick_victim(const index_delta& delta) {
  // Entries this txn wrote or erased are not candidates: they are not in
  // the index yet, or are gone already.
  if (delta.cleared()) return std::nullopt;
  std::optional<entry_index::entry> best;
  int found = 0;
  for (int tries = 0; tries < 4 * k_samples && found < k_samples; ++tries) {
    const auto candidate = state_.index.sample(rng_);
    if (!candidate) return std::nullopt;
    if (delta.changes(candidate->first)) continue;
    ++found;
    if (!best || candidate->second.last_use_ms < best->second.last_use_ms) best = candidate;
  }
  // Sampling kept drawing entries this txn already changed: the index is
  // small next to the txn, so a linear look is cheap.
  if (!best) best = state_.index.find_unless([&](const key& k) { return delta.changes(k); });
  if (!best) return std::nullopt;
  return best->first;
}

bool result_store::writer::commit(lmdb::txn& t, const index_delta& delta, const tally& counts,
                                  const char* what) {
  try {
    t.commit();
  } catch (const std::exception& e) {
    failed(e, what);
    return false;
  }
  state_.index.apply(delta);
  state::count(state_.stores, counts.stores);
  state::count(state_.evictions, counts.evictions);
  state::count(state_.expirations, counts.expirations);
  state::count(state_.invalidations, counts.invalidations);
  return true;
}

void result_store::writer::failed(const std::exception& e, const char* what) {
  const auto* lmdb_error = dynamic_cast<const lmdb::error*>(&e);
  if (lmdb_error && lmdb_error->map_full()) {
    state_.fail("map full", "the LMDB map (" + size_text(state_.map_size) + ") is full with " +
                                size_text(state_.index.bytes()) + " stored; " + what +
                                " was dropped and the cache evicts to a lower budget");
    make_room();
    return;
  }
  state_.fail("cannot write", std::string("cannot write to ") + state_.options.path + " (" +
                                  e.what() + "); " + what + " was dropped");
}

void result_store::writer::make_room() {
  // The map filled before the budget did: the map_size knob is too small
  // for it, or LMDB could not reuse freed pages yet. Aim lower from now
  // on, and free pages at once so the next txn finds room.
  // (Not to 0 when nothing is stored: the failed txn alone was too big.)
  if (state_.index.bytes() > 0) budget_ = std::min(budget_, state_.index.bytes() / 4 * 3);
  index_delta delta(state_.index);
  tally counts;
  try {
    lmdb::txn t = lmdb::txn::begin(state_.env, 0);
    evict(t, delta, counts);
    if (delta.empty()) return;
    t.commit();
  } catch (const std::exception& e) {
    // Even deleting needs pages: nothing to do but wait for later txns.
    state_.fail("cannot evict",
                std::string("cannot evict from ") + state_.options.path + " (" + e.what() + ")");
    return;
  }
  state_.index.apply(delta);
  state::count(state_.evictions, counts.evictions);
}

bool result_store::writer::reclaim_step() {
  if (state_.index.entries() == 0) {
    reclaim_from_.reset();
    return true;
  }
  const std::int64_t now = state_.latest_ms();
  index_delta delta(state_.index);
  tally counts;
  bool wrapped = false;
  try {
    lmdb::txn t = lmdb::txn::begin(state_.env, 0);
    std::vector<key> doomed;
    {
      lmdb::cursor c = lmdb::cursor::open(t, state_.dbi);
      key_bytes from{};
      std::string_view k, v;
      bool more;
      if (reclaim_from_) {
        from = encode_key(*reclaim_from_);
        k = as_view(from);
        more = c.get(k, v, MDB_SET_RANGE);
      } else {
        more = c.get(k, v, MDB_FIRST);
      }
      for (std::size_t n = 0; more && n < k_reclaim_chunk; ++n, more = c.get(k, v, MDB_NEXT)) {
        if (k.size() != k_key_size) continue;  // not ours; cannot happen
        const std::optional<entry_view> e = decode_entry(v);
        if (!e) {
          doomed.push_back(decode_key(k));  // unreadable, so never served
          continue;
        }
        if (e->header.expired_at(now)) {
          doomed.push_back(decode_key(k));
          ++counts.expirations;
          continue;
        }
        deps_.resize(e->dep_count);
        e->copy_deps(deps_.data());
        if (!state_.still_valid(deps_)) {
          doomed.push_back(decode_key(k));
          ++counts.invalidations;
        }
      }
      if (more) {
        reclaim_from_ = decode_key(k);  // the first entry not examined
      } else {
        reclaim_from_.reset();
        wrapped = true;
      }
    }
    if (doomed.empty()) return wrapped;  // aborts the txn: nothing written
    for (const key& d : doomed) {
      state_.dbi.del(t, as_view(encode_key(d)));
      delta.erase(d);
    }
    commit(t, delta, counts, "reclaiming expired and stale entries");
  } catch (const std::exception& e) {
    failed(e, "reclaiming expired and stale entries");
    return true;  // try again next interval
  }
  return wrapped;
}

void result_store::writer::reclaim_while_idle() {
  while (!reclaim_step() && !work_queued()) {
  }
}

}  // namespace pgstash::cache
