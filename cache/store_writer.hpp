// The one thread that writes a result_store's LMDB environment.
//
// Callers queue puts and erase-alls and return at once. The thread takes
// whatever is queued (up to a cap) and applies it in one write txn:
// re-checks each put's dependencies and drops the stale ones, compresses,
// writes, then evicts sampled least-recently-used entries until the stored
// bytes are within the budget. The in-memory index learns of the txn's
// changes only once it commits; if it fails (map full, I/O) its changes
// are dropped, the failure is reported, and after a full map the budget is
// lowered so later txns fit.
//
// Every reclaim interval, and while idle, it also walks the entries a
// chunk per txn, deleting those that expired or whose dependencies are no
// longer current, so a large store never stalls the queue.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/compression.hpp"
#include "cache/result_store.hpp"

namespace pgstash::cache {

class index_delta;
namespace lmdb {
class txn;
}

class result_store::writer {
 public:
  struct put_request {
    key k;
    std::string response;
    std::vector<dependency> deps;
    std::int64_t created_ms = 0;
    std::int64_t expires_ms = 0;  // 0: never
    std::string label;
    // Called once the put is applied (or dropped), on the writer thread.
    std::function<void()> applied;
  };

  // Starts the thread. REQUIRES: `s` outlives the writer.
  explicit writer(state& s);
  writer(const writer&) = delete;
  writer& operator=(const writer&) = delete;
  // Applies what is queued, then stops the thread.
  ~writer();

  // False, and nothing queued, if the queue is full.
  bool enqueue_put(put_request r);
  void enqueue_erase_all();
  void enqueue_erase(std::vector<key> keys);
  void enqueue_checkpoint(std::string checkpoint, std::function<void(bool saved)> done);
  // Blocks until what was queued before the call has been applied.
  // REQUIRES: not called on the writer thread (from a callback).
  void flush();

 private:
  struct op {
    bool erase_all = false;
    put_request put;
    std::vector<key> erase;  // when not empty, the op removes these instead
    std::optional<std::string> checkpoint;  // when set, the op saves it instead
    std::function<void(bool saved)> saved;  // with the checkpoint
    std::size_t bytes() const;  // memory it holds, roughly
  };
  // Counts of a txn, added to the store's counters once it commits.
  struct tally {
    std::uint64_t stores = 0, evictions = 0, expirations = 0, invalidations = 0;
  };

  // Queues `o`; false if `may_drop` and the queue is full.
  bool enqueue(op o, bool may_drop);
  void run();
  // Moves the first queued ops to `batch`. REQUIRES: mutex_ held.
  void take_batch(std::vector<op>& batch);
  // True if the batch's txn committed.
  bool apply(std::vector<op>& batch);
  void write_checkpoint(const lmdb::txn& t, const std::string& checkpoint);
  void write_put(const lmdb::txn& t, index_delta& delta, const put_request& r, tally& counts);
  void evict(const lmdb::txn& t, index_delta& delta, tally& counts);
  std::optional<key> pick_victim(const index_delta& delta);
  // Commits `t`, then applies `delta` and `counts`. On failure reports it
  // (`what` names the txn) and returns false.
  bool commit(lmdb::txn& t, const index_delta& delta, const tally& counts, const char* what);
  void failed(const std::exception& e, const char* what);
  // After MAP_FULL: lower the budget and evict down to it.
  void make_room();
  // Reclaims one chunk; true when the walk reached the end of the store.
  bool reclaim_step();
  // Reclaims chunks until the walk reaches the end or work is queued.
  void reclaim_while_idle();
  bool work_queued();

  state& state_;

  std::mutex mutex_;
  std::condition_variable work_;     // queue_ not empty, or stopping_
  std::condition_variable applied_;  // applied_count_ grew
  std::deque<op> queue_;
  std::uint64_t queued_bytes_ = 0;
  std::uint64_t queued_count_ = 0;   // ops ever queued
  std::uint64_t applied_count_ = 0;  // ops ever applied: the first ones queued
  bool stopping_ = false;

  // Writer thread only.
  std::uint64_t budget_;
  std::mt19937_64 rng_;
  compressor compressor_;
  std::string compressed_;
  std::vector<dependency> deps_;
  std::optional<key> reclaim_from_;  // where the next reclaim step starts

  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace pgstash::cache
