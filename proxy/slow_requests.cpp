#include "proxy/slow_requests.hpp"

#include <utility>

namespace pgstash::proxy {

void slow_requests::add(slow_request r) {
  std::lock_guard lock(mu_);
  if (capacity_ == 0) return;
  if (kept_.size() == capacity_) kept_.pop_front();
  kept_.push_back(std::move(r));
}

std::vector<slow_request> slow_requests::newest_first() const {
  std::lock_guard lock(mu_);
  return {kept_.rbegin(), kept_.rend()};
}

}  // namespace pgstash::proxy
