// Replication clients (pg_recvlogical, pg_basebackup, logical decoding
// libraries): after login, which pgstash handles as for any client, the
// connection is a byte pipe to a server connection of the client's own.
// Replication commands and the CopyBoth stream are relayed unparsed, so
// pgstash adds no framing cost and follows whatever the walsender speaks.
#include <spdlog/spdlog.h>

#include "proxy/client_session.hpp"
#include "proxy/proxy_context.hpp"

namespace pgstash::proxy {

namespace {

// Forwards everything read from `from` to `to` until either fails or
// closes; then closes both, which ends the other direction too.
awaitable<void> pipe(net::pg_stream& from, net::pg_stream& to) {
  error_code ec;
  for (;;) {
    if (!from.buffered().empty()) {
      co_await to.write(from.buffered(), ec);
      if (ec) break;
      from.consume(from.buffered().size());
    }
    from.compact();
    co_await from.read_more(ec);
    if (ec) break;
  }
  from.close();
  to.close();
}

}  // namespace

awaitable<bool> client_session::attach_replication_server() {
  std::string refusal;
  try {
    server_ = co_await ctx_.pool.connect_dedicated(request_);
  } catch (const pool::server_error& e) {
    spdlog::info("{} no replication connection: {}", prefix(), e.what());
    refusal = e.error_response();
  }
  if (!server_) {
    co_await write_to_client(refusal);
    client_.close();
    co_return false;
  }
  // Active for its whole life: a forwarded cancel request then only goes
  // to the server (cancel_on_server), with no pump to wake.
  lease_ = lease::active;
  record_->set_state(client_state::active, server_->id());
  co_return true;
}

awaitable<void> client_session::relay_replication(std::shared_ptr<client_session> self) {
  spdlog::info("{} replication connection to s:{}", prefix(), server_->id());
  pump_running_ = true;
  pump_done_.emplace(client_.socket().get_executor(), asio::steady_timer::time_point::max());
  spawn(replication_server_to_client(self), "replication relay");
  co_await pipe(client_, server_->stream());
  while (pump_running_) {
    error_code ec;
    co_await pump_done_->async_wait(on_error(ec));
  }
  // A cancel request still on its way needs nothing from the connection
  // (cancel_on_server has read its key), and its backend is gone with it.
  server_.reset();
  lease_ = lease::none;
  client_gone_ = true;
  if (spdlog::should_log(spdlog::level::debug)) spdlog::debug("{} closed", prefix());
}

awaitable<void> client_session::replication_server_to_client(std::shared_ptr<client_session> self) {
  co_await pipe(server_->stream(), client_);
  pump_running_ = false;
  pump_done_->cancel();
  (void)self;  // keeps the session alive while the relay runs
}

}  // namespace pgstash::proxy
