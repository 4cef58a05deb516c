// Cache warming (cache.warm_statements): a thread of its own runs the
// statements through pgstash's own listener, as a client would, at start
// and after every invalidation of everything, so that the first clients
// get hits. Best effort: a statement that fails or is not cacheable is
// logged and left out.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace pgstash::proxy {

class result_cache;

class cache_warmer {
 public:
  // `connection` (libpq keyword, value) reaches pgstash's own listener as
  // the warming user; `cache` must outlive the warmer. Warms once soon
  // after construction.
  cache_warmer(std::vector<std::pair<std::string, std::string>> connection,
               std::vector<std::string> statements, result_cache& cache);
  cache_warmer(const cache_warmer&) = delete;
  cache_warmer& operator=(const cache_warmer&) = delete;
  // Stops the thread (a statement under way is waited for).
  ~cache_warmer();

  // Warm again: requests while one warming runs make one more after it.
  void request();

 private:
  void run();
  void warm_once();
  // Sleeps up to `ms`; false if the warmer is stopping.
  bool pause(int ms);

  const std::vector<std::pair<std::string, std::string>> connection_;
  const std::vector<std::string> statements_;
  result_cache& cache_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool due_ = true;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the rest is ready
};

}  // namespace pgstash::proxy
