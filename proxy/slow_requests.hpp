// The most recent slow requests (log.slow_query_ms), kept in memory for the
// admin port (GET /api/slow, the dashboard): what each slow_query log line
// says. Bounded; the oldest go first. Thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace pgstash::proxy {

struct slow_request {
  std::chrono::system_clock::time_point at;  // when its answer completed
  std::string database;                      // as the client named it
  std::string user;
  double duration_ms = 0;
  std::string statement;  // its first bytes, never a parameter value
};

class slow_requests {
 public:
  explicit slow_requests(std::size_t capacity) : capacity_(capacity) {}

  void add(slow_request r);
  std::vector<slow_request> newest_first() const;

 private:
  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::deque<slow_request> kept_;  // oldest first
};

}  // namespace pgstash::proxy
