#include "pool/server_pool.hpp"

#include <algorithm>

namespace pgstash::pool {

server_pool::server_pool(asio::any_io_executor ex, const conf::config& cfg,
                         asio::ssl::context& tls)
    : ex_(std::move(ex)), cfg_(cfg), tls_(tls) {}

awaitable<std::unique_ptr<server_connection>> server_pool::acquire(
    const connect_request& request) {
  const pool_key key{request.database, request.user};
  const std::string signature = request.signature();
  const auto give_up_at =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg_.pool.wait_timeout_ms);
  bool queued_turn = false;  // true once this client has been woken from the queue

  for (;;) {
    user_pool& p = pools_[key];
    // Clients already waiting go first, unless this one was just woken.
    if (queued_turn || p.waiters.empty()) {
      for (auto it = p.idle.begin(); it != p.idle.end(); ++it) {
        if ((*it)->signature() != signature) continue;
        std::unique_ptr<server_connection> conn = std::move(*it);
        p.idle.erase(it);
        if (!conn->stream().has_unexpected_input()) co_return conn;
        // Closed by the server while idle (restart, idle timeout): replace it.
        conn->stream().close();
        --p.open;
        break;
      }
      if (p.open >= cfg_.pool.size && !p.idle.empty()) {
        // Full, but an idle connection opened for other parameters can make room.
        p.idle.back()->stream().close();
        p.idle.pop_back();
        --p.open;
      }
      if (p.open < cfg_.pool.size) {
        ++p.open;
        server_limits limits{cfg_.limits.io_buffer_size, cfg_.limits.max_message_size};
        try {
          co_return co_await server_connection::connect(cfg_.server, tls_, request, limits,
                                                        next_id_++);
        } catch (...) {
          user_pool& failed = pools_[key];
          --failed.open;
          wake_next(failed);
          throw;
        }
      }
    }

    auto now = std::chrono::steady_clock::now();
    if (now >= give_up_at) break;
    auto w = std::make_shared<waiter>(ex_);
    w->wake.expires_at(give_up_at);
    p.waiters.push_back(w);
    error_code ec;
    co_await w->wake.async_wait(on_error(ec));
    if (!w->woken) {
      auto& queue = pools_[key].waiters;
      queue.erase(std::remove(queue.begin(), queue.end(), w), queue.end());
      break;
    }
    queued_turn = true;
  }
  throw make_server_error(
      "53300", "pgstash: no server connection available for database \"" + request.database +
                   "\" user \"" + request.user + "\" within pool.wait_timeout_ms (" +
                   std::to_string(cfg_.pool.wait_timeout_ms) +
                   " ms); all pool.size = " + std::to_string(cfg_.pool.size) + " are in use");
}

void server_pool::release(std::unique_ptr<server_connection> conn, const pool_key& key,
                          bool reusable) {
  user_pool& p = pools_[key];
  if (reusable) {
    p.idle.push_front(std::move(conn));
  } else {
    conn->stream().close();
    --p.open;
  }
  wake_next(p);
}

void server_pool::wake_next(user_pool& p) {
  if (p.waiters.empty()) return;
  std::shared_ptr<waiter> w = p.waiters.front();
  p.waiters.pop_front();
  w->woken = true;
  w->wake.cancel();
}

pool_stats server_pool::stats(const pool_key& key) const {
  auto it = pools_.find(key);
  if (it == pools_.end()) return {};
  return {it->second.open, static_cast<std::uint32_t>(it->second.idle.size()),
          static_cast<std::uint32_t>(it->second.waiters.size())};
}

}  // namespace pgstash::pool
