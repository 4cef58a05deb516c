// The result cache's store: key -> a server's response bytes, kept in one
// LMDB environment on disk, with each entry's metadata (the relations it
// read and their generations, creation and expiry time, size, label).
//
// Coherence is the caller's: it computes keys and generations; the store
// serves an entry only while still_valid(its dependencies) holds and it has
// not expired, and re-checks validity before writing one, so a result that
// raced with a write is never stored. Entries outlive the process only
// when the caller can prove them (store_options::keep_entries): it saves
// checkpoints of what it compares with, and open() hands the last one
// back before any kept entry can be served.
//
// Reads (get, list) run on the calling thread on LMDB read snapshots and
// never wait for writes. Writes (put, erase_all, eviction, reclaiming
// expired and stale entries) are queued to one writer thread that applies
// whatever is queued in one LMDB transaction. A storage failure (map full,
// I/O) never reaches the caller: the writes of that transaction are lost,
// a read is a miss, and `failure_report` hears of it once per kind.
//
// Thread-safety: every method may be called from any thread concurrently,
// except the destructor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cache/key.hpp"

namespace pgstash::cache {

struct store_options {
  // Directory of the LMDB environment; created (mode 0700) if missing.
  std::string path;
  // Budget: bytes of stored entries (after compression, incl. metadata).
  // Approximately least recently used entries are evicted beyond it.
  std::uint64_t max_size = 256ull << 20;
  // A response larger than this is never stored.
  std::uint64_t max_entry_size = 1ull << 20;
  // Responses at least this large are stored zstd-compressed.
  std::uint64_t compress_min_size = 4096;

  // Keep the entries an earlier run left, if this boot of the machine
  // wrote them (the map is written without fsync, so an operating system
  // crash may tear it; a crash of the process does not) and the restore
  // callback vouches for them (see open()). Otherwise they are discarded.
  bool keep_entries = false;

  // For tests. The LMDB map size; 0 derives it from max_size with room
  // for LMDB's page overhead, so the budget is reached before the map is
  // full.
  std::uint64_t map_size = 0;
  // For tests. How often the writer looks for expired and stale entries.
  std::int64_t reclaim_interval_ms = 1000;
};

struct store_stats {
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;  // what counts against max_size
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;         // including expired and stale entries
  std::uint64_t stores = 0;         // entries written
  std::uint64_t evictions = 0;      // entries removed for the budget
  std::uint64_t expirations = 0;    // expired entries removed
  std::uint64_t invalidations = 0;  // stale entries removed, and those erase_all() removed
  std::uint64_t rejected = 0;       // puts not stored: too large, stale at write, or queue full
  std::uint64_t failures = 0;       // LMDB errors: map full, I/O
  std::uint64_t map_size = 0;       // the LMDB map's size
  std::uint64_t map_used = 0;       // bytes of it in use (pages up to the last used)
};

// Tells whether an entry's dependencies are all still current (the proxy
// compares with its generation table). Must be thread-safe and cheap.
using validity_check = std::function<bool(std::span<const dependency>)>;
// Reports a storage failure (once per distinct failure kind, e.g. "map
// full", "cannot write"), for the log. One line; called from the writer
// thread or a reader's, so it must be thread-safe.
using failure_report = std::function<void(std::string_view)>;
// Given the checkpoint last saved by the run that left the entries (empty
// if it saved none), sets up what validity_check compares with, and says
// whether the entries can be proven against it at all.
using restore_check = std::function<bool(std::string_view checkpoint)>;

class result_store {
 public:
  // Opens or creates the environment at options.path. The entries an
  // earlier run left are DISCARDED (a derived cache cannot prove them
  // still valid) unless options.keep_entries, the files were kept, and
  // `restore` returns true; then the entries kept are those not expired
  // whose dependencies are still_valid() right after it. Returns null and
  // sets `error` to a one-line message if it cannot open (unwritable
  // directory, directory in use by another store, ...).
  static std::unique_ptr<result_store> open(const store_options& options,
                                            validity_check still_valid, failure_report report,
                                            std::string& error, const restore_check& restore = {});

  result_store(const result_store&) = delete;
  result_store& operator=(const result_store&) = delete;
  // Applies what is queued, then stops the writer thread.
  // REQUIRES: no other call on this store is running or will start.
  ~result_store();

  // Appends the stored response for `k` to `out` and returns true if it
  // exists, has not expired at now_ms and still_valid(its dependencies);
  // otherwise returns false and leaves `out` as it was. Constant cost
  // apart from copying (and decompressing) the bytes; never writes LMDB.
  bool get(const key& k, std::int64_t now_ms, std::string& out);

  // Queues a store and returns at once. ttl_ms 0 = no expiry. `label` is
  // the statement text (cut to ~200 bytes) for the admin listing. Not
  // stored (counted as rejected) if response.size() > max_entry_size, if
  // ttl_ms < 0, if the queue is full, or if `deps` are stale when the
  // writer gets to it. Replaces an entry already stored under `k`.
  // `applied` (if set) is called once a get() would find the entry, or once
  // it will not be stored: on the writer thread, or on this one if the put
  // is refused at once.
  void put(const key& k, std::string response, std::vector<dependency> deps, std::int64_t now_ms,
           std::int64_t ttl_ms, std::string label, std::function<void()> applied = {});

  // Queues the removal of every entry (after the puts queued before it).
  void erase_all();
  // Queues the removal of the entries under `keys` that exist (counted as
  // invalidations), after the puts queued before it.
  void erase(std::vector<key> keys);

  // Queues replacing the checkpoint the next open() hands to its restore
  // callback. `done(true)` once it is committed (it survives a crash of
  // the process from then on), `done(false)` if the write failed; on the
  // writer thread.
  void save_checkpoint(std::string checkpoint, std::function<void(bool saved)> done);

  // The next open() discards the entries, whatever keep_entries says: for
  // when a checkpoint they would be proven by could not be saved.
  void discard_at_next_open();

  // Blocks until everything queued before the call has been applied.
  void flush();

  store_stats stats() const;

  struct entry_info {
    key k;
    std::uint64_t size;  // bytes in the store, as in store_stats::bytes
    std::uint64_t hits;
    std::int64_t created_ms, expires_ms, last_use_ms;  // expires_ms 0: never
    std::vector<dependency> deps;
    std::string label;
  };
  // Up to `limit` entries' metadata, in no useful order.
  std::vector<entry_info> list(std::size_t limit) const;

 private:
  class state;
  class writer;

  explicit result_store(std::unique_ptr<state> s);
  // open()'s work on kept files, before the writer starts.
  static void restore_entries(state& s, const restore_check& restore);

  std::unique_ptr<state> state_;
  std::unique_ptr<writer> writer_;  // declared last: stops first
};

}  // namespace pgstash::cache
