#include "proxy/pause.hpp"

#include "proxy/proxy_context.hpp"

namespace pgstash::proxy {

awaitable<pause_outcome> pause_and_drain(proxy_context& ctx, std::optional<std::string> database,
                                         std::chrono::milliseconds limit) {
  ctx.pool.pause(database);
  const auto give_up = std::chrono::steady_clock::now() + limit;
  asio::steady_timer tick(co_await asio::this_coro::executor);
  for (;;) {
    const std::size_t open = ctx.pool.open_connections(database);
    if (open == 0) co_return pause_outcome{true, 0};
    // A RESUME meanwhile ends the wait: there is nothing left to drain for.
    if (!ctx.pool.is_paused(database)) co_return pause_outcome{false, open};
    if (std::chrono::steady_clock::now() >= give_up) co_return pause_outcome{false, open};
    // Connections close as their clients end their transactions (or, in
    // session mode, leave): polled, as nothing else waits on them.
    tick.expires_after(std::chrono::milliseconds(50));
    error_code ec;
    co_await tick.async_wait(on_error(ec));
  }
}

}  // namespace pgstash::proxy
