// Results being fetched from the server for the cache, so that concurrent
// misses of one key become one server query (no stampede): the first miss
// claims the key; a second waits until the claim is released (the result
// stored, or found unstorable) and looks the key up again. Whether the
// stored result is valid for it is the store's and the generations' call,
// as for any hit.
//
// Thread-safe: sessions on every worker claim and wait. Pure: waking a
// waiter is a callback, which the caller makes post to its own executor.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "cache/key.hpp"

namespace pgstash::proxy {

class in_flight_results {
 public:
  // The right to fetch a key's result. Released (and every waiter woken)
  // by release() or when destroyed, whichever comes first.
  class claim {
   public:
    claim(in_flight_results& owner, cache::key key) : owner_(&owner), key_(key) {}
    ~claim() { release(); }
    claim(const claim&) = delete;
    claim& operator=(const claim&) = delete;
    void release();

   private:
    in_flight_results* owner_;
    cache::key key_;
  };

  // A claim on `key`, or null if another holds one.
  std::unique_ptr<claim> try_claim(const cache::key& key);
  // Calls `wake` once (on the releasing thread, without the lock) when the
  // claim on `key` is released, and returns when the claim was taken (a
  // waiter waits for so long after that, not after its own arrival: a
  // claim its holder neglects stalls each waiter less and less); nullopt,
  // and `wake` never called, if `key` is not claimed now.
  std::optional<std::chrono::steady_clock::time_point> wait(const cache::key& key,
                                                            std::function<void()> wake);
  // Keys claimed now (for tests and the admin port).
  std::size_t claimed() const;

 private:
  void release(const cache::key& key);

  mutable std::mutex mutex_;
  struct flight {
    std::chrono::steady_clock::time_point since;
    std::vector<std::function<void()>> waiting;
  };
  std::unordered_map<cache::key, flight, cache::key_hash> claimed_;
};

}  // namespace pgstash::proxy
