// Writes that bypass pgstash, followed from PostgreSQL's logical
// replication stream (DESIGN.md, "Coherence" point 4): one libpq
// replication connection per database a cached client uses, each on a
// thread of its own, decoded with the test_decoding plugin (see
// change_stream.hpp for why not pgoutput), bumping the generations of every
// relation a committed transaction changed as its COMMIT arrives.
//
// Per database, at every (re)connection:
// - an event trigger `pgstash_ddl` that writes a logical message for every
//   DDL command is installed if missing and allowed (superuser), so that
//   DDL made elsewhere reaches the stream too (logical decoding carries no
//   DDL); without it such DDL is bounded by the cache's TTL and the
//   catalog's refresh;
// - a temporary slot `<slot>_<database oid>` is created (dropped by the
//   server when the connection ends), then every result of the database
//   is invalidated: anything committed before the slot existed may have
//   been missed. Only then are hits served again. Creating the slot waits
//   for the transactions running on the server that have written.
//
// Persistent slots (slot_persistence given): the slot `<slot>_<database
// oid>` outlives the connection and pgstash, and every second the
// listener saves a checkpoint (stream_checkpoint.hpp) through the result
// store: the generation table, and per database the position up to which
// every commit was applied to it. The slot is confirmed only up to the
// position of the last checkpoint saved, so the server keeps the WAL after
// it. A (re)connection that finds the slot it was following, on the same
// server, confirmed no further than the checkpoint (or this run) applied,
// invalidates nothing: it replays the stream from the slot's position and
// serves hits once it has applied a logical message it wrote itself just
// before, so every commit acknowledged before the connection is applied.
// Any other case (no checkpoint, another server, the slot dropped or
// consumed by someone else) invalidates the database's results as a
// temporary slot does, and goes on with the slot there is, or a new one.
// Each connection also logs, once per name, the test_decoding slots of
// other prefixes that nothing consumes (an instance gone for good leaves
// its persistent slots holding WAL; replication_slots.hpp drops them).
//
// A database's stream_status says whether its hits may be served:
// - following: every commit is applied as it arrives (lag: the stream's);
// - connecting: not following yet, or it broke and is being re-established
//   (every second): no hits, so nothing stale is served while it is down.
//   Also a slot name still held (by our own previous connection, or by
//   another pgstash with the same prefix) and no free slot. A stream the
//   server has not answered for 6 s is taken for broken;
// - unavailable: the server cannot stream for us (wal_level is not
//   logical, no replication privilege): every result of the database is
//   invalidated, then hits are served, bounded by the cache's TTL, and it
//   is tried again every 30 s. Without a TTL (`serve_unfollowed` false)
//   the state stays connecting instead. Logged once per distinct cause.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "invalidation/generations.hpp"
#include "invalidation/stream_checkpoint.hpp"
#include "invalidation/wal_barrier.hpp"

namespace pgstash::invalidation {

struct replication_options {
  std::string slot;  // prefix of the per-database slot names
  // Where the stream cannot run, serve hits anyway (the cache's TTL bounds
  // them); false when nothing would bound them.
  bool serve_unfollowed = true;
  // Strict consistency: each stream also polls the server's WAL position,
  // on a control connection of its own, for the hits waiting on its proof
  // (stream_status::barrier()).
  bool strict = false;
};

enum class stream_state : std::uint8_t { connecting, following, unavailable };
constexpr std::string_view to_string(stream_state s) {
  constexpr std::string_view names[] = {"connecting", "following", "unavailable"};
  return names[static_cast<std::size_t>(s)];
}

class stream_status {
 public:
  explicit stream_status(wal_barrier::waker poll_wanted) : barrier_(std::move(poll_wanted)) {}

  stream_state state() const { return state_.load(std::memory_order_acquire); }
  // Hits may be served: the stream follows the server, or cannot and the
  // TTL bounds what it would have caught.
  bool serving() const { return state() != stream_state::connecting; }
  // When the server was last heard from on the stream (a change or a
  // keepalive, which it sends at least every 2 s when asked); the epoch
  // before the first.
  std::chrono::steady_clock::time_point last_heard() const {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(last_heard_.load(std::memory_order_relaxed)));
  }
  // Committed transactions applied (their relations invalidated).
  std::uint64_t commits_applied() const { return commits_.load(std::memory_order_relaxed); }
  // Strict consistency: WAL positions polled, and flushes the server was
  // asked for (a polled position out of the stream's reach).
  std::uint64_t strict_polls() const { return strict_polls_.load(std::memory_order_relaxed); }
  std::uint64_t strict_flushes() const { return strict_flushes_.load(std::memory_order_relaxed); }
  // Strict consistency: proves hits once the stream has applied the WAL up
  // to a position read after they arrived. Proves nothing while the stream
  // is not following, and without the strict option.
  wal_barrier& barrier() const { return barrier_; }

 private:
  friend class database_stream;
  std::atomic<stream_state> state_ = stream_state::connecting;
  std::atomic<std::chrono::steady_clock::rep> last_heard_ = 0;
  std::atomic<std::uint64_t> commits_ = 0;
  std::atomic<std::uint64_t> strict_polls_ = 0;
  std::atomic<std::uint64_t> strict_flushes_ = 0;
  mutable wal_barrier barrier_;
};

// Persistent slots and checkpoints (see above).
struct slot_persistence {
  // The databases of the checkpoint the generations were restored from.
  std::vector<followed_database> restored;
  // Saves an encoded stream_checkpoint; done(true) once it would survive a
  // crash of the process, done(false) if it failed. May call back on any
  // thread.
  std::function<void(std::string checkpoint, std::function<void(bool saved)> done)> save;
};

class replication_listener {
 public:
  // `ddl_seen(database)`: DDL was made in the database (the catalog's
  // answers for it are stale). Called on the stream's thread.
  using ddl_callback = std::function<void(const std::string& database)>;
  // Slots are temporary without `persistence`.
  replication_listener(replication_options options, generations& generations, ddl_callback ddl_seen,
                       std::optional<slot_persistence> persistence = std::nullopt);
  // Stops every stream (temporary slots go with their connections) and
  // saves a last checkpoint.
  ~replication_listener();
  replication_listener(const replication_listener&) = delete;
  replication_listener& operator=(const replication_listener&) = delete;

  // The status of `database`'s stream, started on the first call with
  // `conninfo` (libpq keywords for a normal connection to it).
  std::shared_ptr<const stream_status> follow(const std::string& database,
                                              const std::string& conninfo);
  // Persistent slots: saves a checkpoint of the generations as they are
  // now and waits until it is saved, so that bumps made before the call
  // (an operator's invalidation) survive a crash. False if it could not
  // be saved; true without persistent slots.
  bool checkpoint_now();

  // How a stream logs in (libpq keywords of a normal connection to its
  // database): for looking at the server's slots. Nullopt before the first.
  std::optional<std::string> conninfo() const;

  // Every database followed so far, with its stream's status.
  std::vector<std::pair<std::string, std::shared_ptr<const stream_status>>> streams() const;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace pgstash::invalidation
