#include "proxy/in_flight.hpp"

#include <utility>

namespace pgstash::proxy {

void in_flight_results::claim::release() {
  if (!owner_) return;
  std::exchange(owner_, nullptr)->release(key_);
}

std::unique_ptr<in_flight_results::claim> in_flight_results::try_claim(const cache::key& key) {
  std::lock_guard lock(mutex_);
  if (!claimed_.try_emplace(key, flight{std::chrono::steady_clock::now(), {}}).second)
    return nullptr;
  return std::make_unique<claim>(*this, key);
}

std::optional<std::chrono::steady_clock::time_point> in_flight_results::wait(
    const cache::key& key, std::function<void()> wake) {
  std::lock_guard lock(mutex_);
  auto it = claimed_.find(key);
  if (it == claimed_.end()) return std::nullopt;
  it->second.waiting.push_back(std::move(wake));
  return it->second.since;
}

std::size_t in_flight_results::claimed() const {
  std::lock_guard lock(mutex_);
  return claimed_.size();
}

void in_flight_results::release(const cache::key& key) {
  std::vector<std::function<void()>> waiting;
  {
    std::lock_guard lock(mutex_);
    auto it = claimed_.find(key);
    if (it == claimed_.end()) return;
    waiting = std::move(it->second.waiting);
    claimed_.erase(it);
  }
  for (auto& wake : waiting) wake();
}

}  // namespace pgstash::proxy
