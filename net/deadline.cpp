#include "net/deadline.hpp"

namespace pgstash::net {

deadline::deadline(const asio::any_io_executor& ex, std::chrono::milliseconds timeout,
                   std::function<void()> on_expiry)
    : state_(std::make_shared<state>(ex)) {
  state_->on_expiry = std::move(on_expiry);
  state_->timer.expires_after(timeout);
  // The handler owns the state, so it is safe to run after ~deadline; the
  // armed flag keeps it from calling into objects that are gone.
  state_->timer.async_wait([s = state_](const error_code& ec) {
    if (ec || !s->armed) return;
    s->expired = true;
    s->on_expiry();
  });
}

deadline::~deadline() {
  state_->armed = false;
  state_->timer.cancel();
}

}  // namespace pgstash::net
