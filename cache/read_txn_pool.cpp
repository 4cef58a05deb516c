#include "cache/read_txn_pool.hpp"

#include <functional>
#include <thread>
#include <utility>

namespace pgstash::cache {

namespace {

std::size_t this_thread_shard(std::size_t shards) {
  thread_local const std::size_t h = std::hash<std::thread::id>{}(std::this_thread::get_id());
  return h % shards;
}

}  // namespace

read_txn_pool::lease::~lease() {
  if (pool_ && txn_) pool_->give_back(shard_, std::move(txn_));
}

read_txn_pool::lease read_txn_pool::acquire() {
  const std::size_t index = this_thread_shard(k_shards);
  lmdb::txn t;
  {
    shard& s = shards_[index];
    std::lock_guard lock(s.mutex);
    if (!s.idle.empty()) {
      t = std::move(s.idle.back());
      s.idle.pop_back();
    }
  }
  if (t) {
    t.renew();  // on failure `t` is aborted by its destructor
  } else {
    t = lmdb::txn::begin(env_, MDB_RDONLY);
  }
  return lease(*this, index, std::move(t));
}

void read_txn_pool::give_back(std::size_t index, lmdb::txn t) noexcept {
  t.reset();
  shard& s = shards_[index];
  try {
    std::lock_guard lock(s.mutex);
    s.idle.push_back(std::move(t));
  } catch (...) {
    // Out of memory for the vector: `t` is simply aborted.
  }
}

}  // namespace pgstash::cache
