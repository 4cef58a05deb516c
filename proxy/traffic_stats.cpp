#include "proxy/traffic_stats.hpp"

#include <algorithm>

namespace pgstash::proxy {

namespace {

std::uint64_t micros(std::chrono::steady_clock::duration d) {
  return static_cast<std::uint64_t>(
      std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(d).count()));
}

}  // namespace

void pool_traffic::waited(std::chrono::steady_clock::duration d) {
  waits_.fetch_add(1, std::memory_order_relaxed);
  wait_time_us_.fetch_add(micros(d), std::memory_order_relaxed);
}

void pool_traffic::answered(std::chrono::steady_clock::duration latency, bool transaction_ended) {
  requests_.fetch_add(1, std::memory_order_relaxed);
  if (transaction_ended) transactions_.fetch_add(1, std::memory_order_relaxed);
  const std::uint64_t us = micros(latency);
  request_time_us_.fetch_add(us, std::memory_order_relaxed);
  const double seconds = static_cast<double>(us) / 1e6;
  const auto bucket = std::ranges::lower_bound(k_latency_bounds, seconds) - k_latency_bounds.begin();
  buckets_[static_cast<std::size_t>(bucket)].fetch_add(1, std::memory_order_relaxed);
}

traffic_totals pool_traffic::totals() const {
  traffic_totals t;
  auto load = [](const counter& c) { return c.load(std::memory_order_relaxed); };
  t.requests = load(requests_);
  t.transactions = load(transactions_);
  t.bytes_received = load(bytes_received_);
  t.bytes_sent = load(bytes_sent_);
  t.request_time_us = load(request_time_us_);
  t.waits = load(waits_);
  t.wait_time_us = load(wait_time_us_);
  for (std::size_t i = 0; i < buckets_.size(); ++i) t.latency_buckets[i] = load(buckets_[i]);
  return t;
}

std::shared_ptr<pool_traffic> traffic_stats::pool(const std::string& database,
                                                  const std::string& user) {
  std::lock_guard lock(mu_);
  auto& p = pools_[{database, user}];
  if (!p) p = std::make_shared<pool_traffic>();
  return p;
}

std::vector<std::string> traffic_stats::databases() const {
  std::vector<std::string> out;
  std::lock_guard lock(mu_);
  for (const auto& [name, p] : pools_)
    if (out.empty() || out.back() != name.first) out.push_back(name.first);
  return out;
}

std::vector<std::pair<traffic_stats::pool_name, traffic_totals>> traffic_stats::totals() const {
  std::vector<std::pair<pool_name, std::shared_ptr<pool_traffic>>> pools;
  {
    std::lock_guard lock(mu_);
    pools.assign(pools_.begin(), pools_.end());
  }
  std::vector<std::pair<pool_name, traffic_totals>> out;
  out.reserve(pools.size());
  for (const auto& [name, p] : pools) out.emplace_back(name, p->totals());
  return out;
}

}  // namespace pgstash::proxy
