// What the clients of each (database, user) did, counted as it happens,
// for the admin port: requests answered (one per ReadyForQuery, as
// PgBouncer counts queries) with a histogram of their latency, transactions
// ended, bytes each way, and time spent waiting for a server connection.
// Cache hits count like any other request.
//
// Thread-safe: sessions on every worker add to their pool's counters
// (relaxed atomics) while the admin port reads them.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace pgstash::proxy {

// Upper bounds (seconds) of the latency histogram's buckets; one more
// bucket holds what is slower than the last.
inline constexpr std::array<double, 16> k_latency_bounds = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,     2.5,   5,     10};

struct traffic_totals {
  std::uint64_t requests = 0;      // ReadyForQuery sent to clients
  std::uint64_t transactions = 0;  // of those, ones that ended a transaction (status 'I')
  std::uint64_t bytes_received = 0;  // from clients
  std::uint64_t bytes_sent = 0;      // to clients
  std::uint64_t request_time_us = 0;  // summed latency of the requests
  std::uint64_t waits = 0;            // server connections asked for from the pool
  std::uint64_t wait_time_us = 0;     // time spent getting them
  std::array<std::uint64_t, k_latency_bounds.size() + 1> latency_buckets{};
};

class pool_traffic {
 public:
  void received(std::uint64_t bytes) { bytes_received_.fetch_add(bytes, std::memory_order_relaxed); }
  void sent(std::uint64_t bytes) { bytes_sent_.fetch_add(bytes, std::memory_order_relaxed); }
  void waited(std::chrono::steady_clock::duration d);
  // A request's ReadyForQuery reached the client `latency` after the
  // request began; `transaction_ended` if its status was 'I'.
  void answered(std::chrono::steady_clock::duration latency, bool transaction_ended);
  traffic_totals totals() const;

 private:
  using counter = std::atomic<std::uint64_t>;
  counter requests_ = 0, transactions_ = 0, bytes_received_ = 0, bytes_sent_ = 0;
  counter request_time_us_ = 0, waits_ = 0, wait_time_us_ = 0;
  std::array<counter, k_latency_bounds.size() + 1> buckets_{};
};

class traffic_stats {
 public:
  using pool_name = std::pair<std::string, std::string>;  // database, user

  // The counters of (database, user), made on first use; they live as long
  // as this object.
  std::shared_ptr<pool_traffic> pool(const std::string& database, const std::string& user);
  // Every pool's totals so far, by name.
  std::vector<std::pair<pool_name, traffic_totals>> totals() const;
  // Every database a client has used, in order.
  std::vector<std::string> databases() const;

 private:
  mutable std::mutex mu_;
  std::map<pool_name, std::shared_ptr<pool_traffic>> pools_;
};

}  // namespace pgstash::proxy
