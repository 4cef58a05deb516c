#include "cache/result_store.hpp"

#include <array>
#include <exception>
#include <stdexcept>
#include <utility>

#include "cache/compression.hpp"
#include "cache/entry_format.hpp"
#include "cache/entry_index.hpp"
#include "cache/lmdb_env.hpp"
#include "cache/store_state.hpp"
#include "cache/store_writer.hpp"

namespace pgstash::cache {

namespace {

// Enough of a statement to recognize it in the admin listing.
constexpr std::size_t k_label_size = 200;

// Cuts `label` to at most k_label_size bytes, not inside a UTF-8 sequence.
void truncate_label(std::string& label) {
  if (label.size() <= k_label_size) return;
  std::size_t n = k_label_size;
  while (n > 0 && (static_cast<unsigned char>(label[n]) & 0xc0) == 0x80) --n;
  label.resize(n);
}

}  // namespace

std::unique_ptr<result_store> result_store::open(const store_options& options,
                                                 validity_check still_valid, failure_report report,
                                                 std::string& error, const restore_check& restore) {
  try {
    auto s = std::make_unique<state>(options, still_valid, report);
    if (s->kept) {
      try {
        restore_entries(*s, restore);
      } catch (const std::exception&) {
        // Unreadable: the entries go, as after any unclean stop.
        s.reset();
        store_options fresh = options;
        fresh.keep_entries = false;
        s = std::make_unique<state>(fresh, still_valid, report);
      }
    }
    return std::unique_ptr<result_store>(new result_store(std::move(s)));
  } catch (const std::exception& e) {
    error = e.what();
    return nullptr;
  }
}

void result_store::restore_entries(state& s, const restore_check& restore) {
  try {
    lmdb::txn t = lmdb::txn::begin(s.env, 0);
    std::string checkpoint;
    std::string_view value;
    if (s.meta.get(t, k_checkpoint_key, value)) {
      const std::optional<checkpoint_view> c = decode_checkpoint(value);
      if (c && !c->compressed) checkpoint.assign(c->body);
      // (A size no checkpoint has is a damaged one.)
      if (c && c->compressed && c->size < (1ull << 30) && !decompress(c->body, c->size, checkpoint))
        checkpoint.clear();
    }
    if (!restore || !restore(checkpoint)) {
      s.dbi.clear(t);
      t.commit();
      return;
    }
    // The index learns of every entry kept; the others go now rather than
    // at the writer's next reclaim, so the totals are right from the start.
    index_delta delta(s.index);
    std::vector<std::string> doomed;
    {
      lmdb::cursor c = lmdb::cursor::open(t, s.dbi);
      std::string_view k, v;
      std::vector<dependency> deps;
      for (bool more = c.get(k, v, MDB_FIRST); more; more = c.get(k, v, MDB_NEXT)) {
        const std::optional<entry_view> e = decode_entry(v);
        bool valid = e && k.size() == k_key_size;
        if (valid) {
          deps.resize(e->dep_count);
          e->copy_deps(deps.data());
          valid = s.still_valid(deps);
        }
        if (valid) {
          delta.put(decode_key(k), k.size() + v.size(), e->header.created_ms);
        } else {
          doomed.emplace_back(k);
        }
      }
    }
    for (const std::string& k : doomed) s.dbi.del(t, k);
    t.commit();
    s.index.apply(delta);
    state::count(s.invalidations, doomed.size());
  } catch (const lmdb::error& e) {
    throw std::runtime_error("cache directory " + s.options.path +
                             ": cannot read the earlier run's entries (" + e.what() + ")");
  }
}

result_store::result_store(std::unique_ptr<state> s)
    : state_(std::move(s)), writer_(std::make_unique<writer>(*state_)) {}

result_store::~result_store() = default;

bool result_store::get(const key& k, std::int64_t now_ms, std::string& out) {
  state& s = *state_;
  s.note_time(now_ms);
  bool hit = false;
  try {
    const read_txn_pool::lease lease = s.readers.acquire();
    const key_bytes kb = encode_key(k);
    std::string_view value;
    if (s.dbi.get(lease.txn(), as_view(kb), value)) {
      const std::optional<entry_view> e = decode_entry(value);
      if (!e) {
        s.fail("corrupt entry",
               "an entry in " + s.options.path + " cannot be decoded; it is a miss");
      } else if (!e->header.expired_at(now_ms)) {
        // LMDB aligns values to 2 bytes: copy the dependencies out, on the
        // stack for the usual few.
        std::array<dependency, 16> small;
        std::vector<dependency> large;
        dependency* deps = small.data();
        if (e->dep_count > small.size()) {
          large.resize(e->dep_count);
          deps = large.data();
        }
        e->copy_deps(deps);
        if (s.still_valid(std::span<const dependency>(deps, e->dep_count))) {
          if (!e->header.compressed) {
            out.append(e->body);
            hit = true;
          } else if (decompress(e->body, e->header.response_size, out)) {
            hit = true;
          } else {
            s.fail("corrupt entry",
                   "an entry in " + s.options.path + " does not decompress; it is a miss");
          }
        }
      }
    }
  } catch (const lmdb::error& e) {
    s.fail("cannot read", "cannot read " + s.options.path + " (" + e.what() + "); it is a miss");
  }
  if (!hit) {
    state::count(s.misses);
    return false;
  }
  s.index.touch(k, now_ms);
  state::count(s.hits);
  return true;
}

void result_store::put(const key& k, std::string response, std::vector<dependency> deps,
                       std::int64_t now_ms, std::int64_t ttl_ms, std::string label,
                       std::function<void()> applied) {
  state& s = *state_;
  s.note_time(now_ms);
  auto refuse = [&] {
    state::count(s.rejected);
    if (applied) applied();
  };
  if (response.size() > s.options.max_entry_size || ttl_ms < 0) {
    refuse();
    return;
  }
  truncate_label(label);
  writer::put_request r;
  r.k = k;
  r.response = std::move(response);
  r.deps = std::move(deps);
  r.created_ms = now_ms;
  r.expires_ms = ttl_ms ? now_ms + ttl_ms : 0;
  r.label = std::move(label);
  r.applied = applied;
  if (!writer_->enqueue_put(std::move(r))) refuse();
}

void result_store::erase_all() { writer_->enqueue_erase_all(); }

void result_store::erase(std::vector<key> keys) {
  if (!keys.empty()) writer_->enqueue_erase(std::move(keys));
}

void result_store::save_checkpoint(std::string checkpoint, std::function<void(bool saved)> done) {
  writer_->enqueue_checkpoint(std::move(checkpoint), std::move(done));
}

void result_store::discard_at_next_open() { state::forget_boot(state_->options.path); }

void result_store::flush() { writer_->flush(); }

store_stats result_store::stats() const {
  const state& s = *state_;
  const auto load = [](const std::atomic<std::uint64_t>& a) {
    return a.load(std::memory_order_relaxed);
  };
  store_stats out;
  out.entries = s.index.entries();
  out.bytes = s.index.bytes();
  out.hits = load(s.hits);
  out.misses = load(s.misses);
  out.stores = load(s.stores);
  out.evictions = load(s.evictions);
  out.expirations = load(s.expirations);
  out.invalidations = load(s.invalidations);
  out.rejected = load(s.rejected);
  out.failures = load(s.failures);
  MDB_envinfo info{};
  MDB_stat stat{};
  if (mdb_env_info(s.env.handle(), &info) == 0 && mdb_env_stat(s.env.handle(), &stat) == 0) {
    out.map_size = info.me_mapsize;
    out.map_used = (static_cast<std::uint64_t>(info.me_last_pgno) + 1) * stat.ms_psize;
  }
  return out;
}

std::vector<result_store::entry_info> result_store::list(std::size_t limit) const {
  state& s = *state_;
  std::vector<entry_info> out;
  if (limit == 0) return out;
  try {
    const read_txn_pool::lease lease = s.readers.acquire();
    lmdb::cursor c = lmdb::cursor::open(lease.txn(), s.dbi);
    std::string_view k, v;
    for (bool more = c.get(k, v, MDB_FIRST); more && out.size() < limit;
         more = c.get(k, v, MDB_NEXT)) {
      const std::optional<entry_view> e = decode_entry(v);
      if (!e || k.size() != k_key_size) continue;
      entry_info info;
      info.k = decode_key(k);
      info.size = k.size() + v.size();
      info.hits = 0;
      info.created_ms = e->header.created_ms;
      info.expires_ms = e->header.expires_ms;
      info.last_use_ms = e->header.created_ms;  // until served
      info.deps = e->deps();
      info.label = e->label;
      if (const auto use = s.index.find(info.k)) {
        info.hits = use->hits;
        info.last_use_ms = use->last_use_ms;
      }
      out.push_back(std::move(info));
    }
  } catch (const lmdb::error& e) {
    s.fail("cannot read", "cannot read " + s.options.path + " (" + e.what() + "); it is a miss");
  }
  return out;
}

}  // namespace pgstash::cache
