// A one-shot watchdog: after `timeout`, calls `on_expiry` unless the
// deadline was destroyed first. The usual use is closing a socket so that
// whatever coroutine is blocked on it wakes up with an error (Boost 1.74
// has no per-operation cancellation).
//
// `on_expiry` may capture references to objects that outlive the deadline
// object; it is never called after the deadline is destroyed.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "net/asio.hpp"

namespace pgstash::net {

class deadline {
 public:
  deadline(const asio::any_io_executor& ex, std::chrono::milliseconds timeout,
           std::function<void()> on_expiry);
  ~deadline();
  deadline(const deadline&) = delete;
  deadline& operator=(const deadline&) = delete;

  bool expired() const { return state_->expired; }

 private:
  struct state {
    explicit state(const asio::any_io_executor& ex) : timer(ex) {}
    asio::steady_timer timer;
    std::function<void()> on_expiry;
    bool armed = true;
    bool expired = false;
  };
  std::shared_ptr<state> state_;
};

}  // namespace pgstash::net
