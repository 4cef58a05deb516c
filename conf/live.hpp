// A value in force that a reload replaces whole: the config, the userlist.
// A reader takes a snapshot (`cfg->pool.size`, or get() to keep one across
// several reads); a snapshot never changes and stays valid while it is
// held. Thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <utility>

namespace pgstash::conf {

template <typename T>
class live {
 public:
  explicit live(T initial) : current_(std::make_shared<const T>(std::move(initial))) {}
  live(const live&) = delete;
  live& operator=(const live&) = delete;

  std::shared_ptr<const T> get() const { return current_.load(std::memory_order_acquire); }
  // The snapshot lives until the end of the full expression.
  std::shared_ptr<const T> operator->() const { return get(); }
  void replace(T next) {
    current_.store(std::make_shared<const T>(std::move(next)), std::memory_order_release);
  }

 private:
  std::atomic<std::shared_ptr<const T>> current_;
};

}  // namespace pgstash::conf
