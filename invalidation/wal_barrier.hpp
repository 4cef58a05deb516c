// Strict consistency's proof for a cache hit (cache.consistency =
// "strict"): the replication stream has applied the WAL up to a position
// read from the server after the read arrived, so every commit acknowledged
// before the read, by anyone, has invalidated what it changed.
//
// A hit asks passed(since), `since` being when its read arrived, and
// otherwise waits (wait()). The stream's thread runs one position poll at a
// time for all the waiters: a poll sent at S covers every read that arrived
// by S, and is proven once the stream has applied the position it read.
// Reads that arrive while a poll runs wait for the next one. Positions are
// PostgreSQL LSNs as 64-bit integers.
//
// Thread-safe. Wakers are called outside the lock, on the thread that
// proves or fails their poll; a waker is called at most once, and not at
// all if its waiter gave up first (expire()).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace pgstash::invalidation {

// "16/B374D848" as PostgreSQL prints an LSN; nothing if it is not one.
std::optional<std::uint64_t> parse_lsn(std::string_view text);

// The position a stream that has read every record inserted before
// `insert_position` (pg_current_wal_insert_lsn()) reports: at the start of
// a WAL page the insert position counts the page's header (24 bytes, 40 at
// a segment's start), which no record ends in, and a stream reports the
// end of the last record it read.
std::uint64_t last_record_end(std::uint64_t insert_position, std::uint32_t wal_block_size);

class wal_barrier {
 public:
  using clock = std::chrono::steady_clock;
  using waker = std::function<void()>;

  // `poll_wanted` is called (outside the lock) when a waiter makes a poll
  // due, so that the stream's thread starts one without delay.
  explicit wal_barrier(waker poll_wanted = {}) : poll_wanted_(std::move(poll_wanted)) {}
  wal_barrier(const wal_barrier&) = delete;
  wal_barrier& operator=(const wal_barrier&) = delete;

  // Every read that arrived by `since` is proven.
  bool passed(clock::time_point since) const {
    return passed_.load(std::memory_order_acquire) >= since.time_since_epoch().count();
  }
  // True if passed(since); otherwise `wake` is kept until a poll covering
  // `since` is proven or fails, or until `give_up`, whichever comes first.
  bool wait(clock::time_point since, clock::time_point give_up, waker wake);

  // ---- The stream's side.
  // A waiter arrived after every poll sent so far, and none is running.
  bool poll_due() const;
  // A poll is being sent now.
  void poll_sent(clock::time_point now);
  // The running poll read `position`.
  void polled(std::uint64_t position);
  // The stream has applied every commit up to `position`.
  void applied(std::uint64_t position);
  // When the oldest poll whose position is not applied yet was sent: the
  // stream should ask the server where it stands, and if that stays short
  // of it, make the server flush its WAL.
  std::optional<clock::time_point> behind_since() const;
  // The stream stopped following, or a poll failed: every waiter is woken
  // unproven, and what is not proven yet is forgotten.
  void reset();
  // Waiters past their give_up are dropped without a call.
  void expire(clock::time_point now);

 private:
  struct waiter {
    clock::time_point since;
    clock::time_point give_up;
    waker wake;
  };
  // Marks polls sent by `start` proven; returns the waiters to wake.
  std::vector<waker> prove_locked(clock::time_point start);

  const waker poll_wanted_;
  mutable std::mutex mutex_;
  std::vector<waiter> waiters_;
  std::optional<clock::time_point> running_;  // when the poll in flight was sent
  clock::time_point last_sent_ = clock::time_point::min();
  // The latest `since` of the waiters (may be stale-high after they left:
  // that costs one poll at most).
  clock::time_point latest_waiting_ = clock::time_point::min();
  // Polls answered whose positions are not applied yet: (sent, position).
  std::deque<std::pair<clock::time_point, std::uint64_t>> unproven_;
  std::uint64_t applied_ = 0;
  // When the latest proven poll was sent.
  std::atomic<clock::rep> passed_ = std::numeric_limits<clock::rep>::min();
};

}  // namespace pgstash::invalidation
