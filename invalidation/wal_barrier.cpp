#include "invalidation/wal_barrier.hpp"

#include <algorithm>
#include <charconv>

namespace pgstash::invalidation {

std::optional<std::uint64_t> parse_lsn(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == text.size() || slash > 8 ||
      text.size() - slash - 1 > 8)
    return std::nullopt;
  std::uint32_t high = 0, low = 0;
  const char* mid = text.data() + slash;
  const char* end = text.data() + text.size();
  auto [p1, e1] = std::from_chars(text.data(), mid, high, 16);
  auto [p2, e2] = std::from_chars(mid + 1, end, low, 16);
  if (e1 != std::errc() || p1 != mid || e2 != std::errc() || p2 != end) return std::nullopt;
  return (std::uint64_t{high} << 32) | low;
}

std::uint64_t last_record_end(std::uint64_t insert_position, std::uint32_t wal_block_size) {
  constexpr std::uint64_t k_short_header = 24, k_long_header = 40;
  if (wal_block_size == 0) return insert_position;
  const std::uint64_t offset = insert_position % wal_block_size;
  return offset == k_short_header || offset == k_long_header ? insert_position - offset
                                                             : insert_position;
}

bool wal_barrier::wait(clock::time_point since, clock::time_point give_up, waker wake) {
  bool wanted = false;
  {
    std::lock_guard lock(mutex_);
    if (passed(since)) return true;
    waiters_.push_back({since, give_up, std::move(wake)});
    latest_waiting_ = std::max(latest_waiting_, since);
    wanted = !running_ && since > last_sent_;
  }
  if (wanted && poll_wanted_) poll_wanted_();
  return false;
}

bool wal_barrier::poll_due() const {
  std::lock_guard lock(mutex_);
  return !running_ &&
         std::ranges::any_of(waiters_, [&](const waiter& w) { return w.since > last_sent_; });
}

void wal_barrier::poll_sent(clock::time_point now) {
  std::lock_guard lock(mutex_);
  running_ = now;
  last_sent_ = now;
}

void wal_barrier::polled(std::uint64_t position) {
  std::vector<waker> woken;
  {
    std::lock_guard lock(mutex_);
    if (!running_) return;
    const clock::time_point sent = *running_;
    running_.reset();
    if (position <= applied_)
      woken = prove_locked(sent);
    else
      unproven_.emplace_back(sent, position);
  }
  for (auto& w : woken) w();
}

void wal_barrier::applied(std::uint64_t position) {
  std::vector<waker> woken;
  {
    std::lock_guard lock(mutex_);
    applied_ = std::max(applied_, position);
    std::optional<clock::time_point> proven;
    while (!unproven_.empty() && unproven_.front().second <= applied_) {
      proven = unproven_.front().first;
      unproven_.pop_front();
    }
    if (proven) woken = prove_locked(*proven);
  }
  for (auto& w : woken) w();
}

std::optional<wal_barrier::clock::time_point> wal_barrier::behind_since() const {
  std::lock_guard lock(mutex_);
  if (unproven_.empty()) return std::nullopt;
  return unproven_.front().first;
}

std::vector<wal_barrier::waker> wal_barrier::prove_locked(clock::time_point start) {
  const clock::rep at = start.time_since_epoch().count();
  if (at > passed_.load(std::memory_order_relaxed)) passed_.store(at, std::memory_order_release);
  std::vector<waker> woken;
  std::erase_if(waiters_, [&](waiter& w) {
    if (w.since > start) return false;
    woken.push_back(std::move(w.wake));
    return true;
  });
  return woken;
}

void wal_barrier::reset() {
  std::vector<waiter> woken;
  {
    std::lock_guard lock(mutex_);
    woken.swap(waiters_);
    running_.reset();
    last_sent_ = latest_waiting_ = clock::time_point::min();
    unproven_.clear();
    applied_ = 0;
  }
  for (auto& w : woken) w.wake();
}

void wal_barrier::expire(clock::time_point now) {
  std::lock_guard lock(mutex_);
  std::erase_if(waiters_, [&](const waiter& w) { return w.give_up < now; });
}

}  // namespace pgstash::invalidation
