// Read-only LMDB transactions kept reset between uses, so that a cache hit
// renews one (mdb_txn_renew: no allocation, no reader-table scan) instead
// of beginning and aborting one.
//
// LMDB's own way to reuse a reader per thread is thread-local storage, but
// a thread_local handle would outlive the store (and its env) on threads
// that go on running. The pool owns every txn instead: the env is opened
// with MDB_NOTLS so a txn may be renewed on any thread, and the pool is
// split in shards picked by thread, so each thread mostly gets back the
// txn it returned and threads rarely share a lock.
//
// Thread-safe. Must be destroyed before the env it reads.
#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <vector>

#include "cache/lmdb_env.hpp"

namespace pgstash::cache {

class read_txn_pool {
 public:
  // A read txn on the latest committed snapshot, returned to the pool
  // (reset) when the lease ends.
  class lease {
   public:
    lease(lease&& other) noexcept = default;
    lease& operator=(lease&&) = delete;
    ~lease();
    const lmdb::txn& txn() const { return txn_; }

   private:
    friend class read_txn_pool;
    lease(read_txn_pool& pool, std::size_t shard, lmdb::txn t)
        : pool_(&pool), shard_(shard), txn_(std::move(t)) {}
    read_txn_pool* pool_;
    std::size_t shard_;
    lmdb::txn txn_;
  };

  // REQUIRES: `env` outlives the pool.
  explicit read_txn_pool(const lmdb::env& env) : env_(env) {}
  read_txn_pool(const read_txn_pool&) = delete;
  read_txn_pool& operator=(const read_txn_pool&) = delete;

  // Throws lmdb::error (e.g. MDB_READERS_FULL).
  lease acquire();

 private:
  void give_back(std::size_t shard, lmdb::txn t) noexcept;

  struct alignas(64) shard {
    std::mutex mutex;
    std::vector<lmdb::txn> idle;  // reset
  };
  static constexpr std::size_t k_shards = 8;

  const lmdb::env& env_;
  std::array<shard, k_shards> shards_;
};

}  // namespace pgstash::cache
