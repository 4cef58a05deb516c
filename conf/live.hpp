// A value in force that a reload replaces whole: the config, the userlist.
// A reader takes a snapshot (`cfg->pool.size`, or get() to keep one across
// several reads); a snapshot never changes and stays valid while it is
// held. Thread-safe.
//
// Taking a snapshot is an atomic read-modify-write of a count shared by
// every thread; a reader on a hot path keeps a `held` one instead and
// takes a new one only when the value was replaced.
#pragma once

#include <atomic>
#include <cstdint>
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
    version_.fetch_add(1, std::memory_order_release);
  }
  // Changes after every replace().
  std::uint64_t version() const { return version_.load(std::memory_order_acquire); }

 private:
  std::atomic<std::shared_ptr<const T>> current_;
  std::atomic<std::uint64_t> version_{0};
};

// One owner's snapshot of a live value, taken again by refresh() only if
// the value was replaced since: reading it costs a plain load. Between two
// refresh() calls it does not change, so a reference into it stays valid
// until the owner's next refresh(). Not thread-safe (one owner).
template <typename T>
class held {
 public:
  // REQUIRES: `source` outlives this.
  explicit held(const live<T>& source) : source_(source) { refresh(); }
  void refresh() {
    // The version first: a replace() between the two reads is taken again
    // next time.
    const std::uint64_t version = source_.version();
    if (value_ && version == version_) return;
    version_ = version;
    value_ = source_.get();
  }
  const T* operator->() const { return value_.get(); }
  const T& operator*() const { return *value_; }

 private:
  const live<T>& source_;
  std::uint64_t version_ = 0;
  std::shared_ptr<const T> value_;
};

}  // namespace pgstash::conf
