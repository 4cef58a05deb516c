#include "pool/server_pool.hpp"

#include <algorithm>

namespace pgstash::pool {

server_pool::server_pool(const conf::config& cfg, asio::ssl::context& tls)
    : cfg_(cfg), tls_(tls) {}

awaitable<std::unique_ptr<server_connection>> server_pool::connect(
    const connect_request& request) {
  std::uint64_t id;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
  }
  server_limits limits{cfg_.limits.io_buffer_size, cfg_.limits.max_message_size,
                       cfg_.pool.max_prepared_statements};
  co_return co_await server_connection::connect(cfg_.server, tls_, request, limits, id);
}

bool server_pool::on_context(server_connection& conn, const asio::execution_context* context) {
  return &asio::query(conn.stream().socket().get_executor(), asio::execution::context) == context;
}

bool server_pool::needs_check(const server_connection& conn) const {
  return !cfg_.pool.server_check_query.empty() &&
         clock::now() - conn.idle_since >= std::chrono::milliseconds(cfg_.pool.server_check_delay_ms);
}

awaitable<bool> server_pool::still_good(server_connection& conn) {
  if (conn.stream().has_unexpected_input()) co_return false;
  try {
    co_return !(co_await conn.run_internal(cfg_.pool.server_check_query));
  } catch (const server_error&) {
    co_return false;
  }
}

awaitable<std::unique_ptr<server_connection>> server_pool::acquire(
    const connect_request& request) {
  auto ex = co_await asio::this_coro::executor;
  const asio::execution_context* here = &asio::query(ex, asio::execution::context);
  const pool_key key = request.key();
  const std::string signature =
      request.cached_signature.empty() ? request.signature() : request.cached_signature;
  const auto started = clock::now();
  const auto give_up_at = started + std::chrono::milliseconds(cfg_.pool.query_wait_timeout_ms);
  const auto reserve_at = started + std::chrono::milliseconds(cfg_.pool.reserve_pool_timeout_ms);
  bool my_turn = false;  // woken from the queue: go before clients that queued later

  std::unique_lock lock(mu_);
  for (;;) {
    user_pool& p = pools_[key];
    if (!p.template_request) p.template_request = request;
    if (my_turn || p.waiters.empty()) {
      // The most recently used match, preferring one already on this
      // worker's io_context (no move needed).
      auto match = p.idle.end();
      for (auto it = p.idle.begin(); it != p.idle.end(); ++it) {
        if ((*it)->signature() != signature) continue;
        if (match == p.idle.end()) match = it;
        if (on_context(**it, here)) {
          match = it;
          break;
        }
      }
      if (match != p.idle.end()) {
        std::unique_ptr<server_connection> candidate = std::move(*match);
        p.idle.erase(match);
        lock.unlock();
        // One syscall tells whether the server closed it (a restart, a
        // terminated backend) while it sat idle.
        bool good = false;
        try {
          candidate->stream().move_to(ex);
          good = needs_check(*candidate) ? co_await still_good(*candidate)
                                         : !candidate->stream().has_unexpected_input();
        } catch (const boost::system::system_error&) {
        }
        if (good) co_return candidate;
        lock.lock();
        close_locked(pools_[key], std::move(candidate));
        continue;
      }
      const bool reserve_allowed = cfg_.pool.reserve_pool_size > 0 && clock::now() >= reserve_at;
      const std::uint32_t limit = cfg_.pool.size + (reserve_allowed ? cfg_.pool.reserve_pool_size : 0);
      if (p.open >= limit && !p.idle.empty()) {
        // Full, but an idle connection opened for other parameters can make room.
        auto stale = std::move(p.idle.back());
        p.idle.pop_back();
        close_locked(p, std::move(stale));
      }
      if (p.open < limit && database_has_room_locked(key.database)) {
        ++p.open;
        ++database_open_[key.database];
        lock.unlock();
        std::unique_ptr<server_connection> fresh;
        std::exception_ptr failure;
        try {
          fresh = co_await connect(request);
        } catch (...) {
          failure = std::current_exception();
        }
        if (fresh) co_return fresh;
        lock.lock();
        --pools_[key].open;
        --database_open_[key.database];
        wake_next_locked(key);
        std::rethrow_exception(failure);
      }
    }

    const auto now = clock::now();
    if (now >= give_up_at) break;
    auto w = std::make_shared<waiter>(ex);
    const bool reserve_pending = cfg_.pool.reserve_pool_size > 0 && now < reserve_at;
    w->wake.expires_at(reserve_pending ? std::min(reserve_at, give_up_at) : give_up_at);
    p.waiters.push_back(w);
    lock.unlock();
    error_code ec;
    co_await w->wake.async_wait(on_error(ec));
    lock.lock();
    if (w->woken) {
      my_turn = true;
      continue;
    }
    auto& queue = pools_[key].waiters;
    queue.erase(std::remove(queue.begin(), queue.end(), w), queue.end());
    // Waking at reserve_at (not give_up_at) means the reserve may now serve us.
    my_turn = clock::now() < give_up_at;
  }
  lock.unlock();
  throw make_server_error(
      "53300", "pgstash: no server connection for database \"" + request.database + "\" user \"" +
                   request.user + "\" within pool.query_wait_timeout_ms (" +
                   std::to_string(cfg_.pool.query_wait_timeout_ms) + " ms); all " +
                   std::to_string(cfg_.pool.size) + " of pool.size are in use");
}

void server_pool::release(std::unique_ptr<server_connection> conn, bool reusable) {
  const pool_key key = conn->key();
  std::lock_guard lock(mu_);
  user_pool& p = pools_[key];
  const bool too_old = clock::now() - conn->created_at() >=
                       std::chrono::milliseconds(cfg_.pool.server_lifetime_ms);
  if (reusable && !too_old) {
    conn->idle_since = clock::now();
    p.idle.push_front(std::move(conn));
  } else {
    close_locked(p, std::move(conn));
  }
  wake_next_locked(key);
}

void server_pool::close_locked(user_pool& p, std::unique_ptr<server_connection> conn) {
  --database_open_[conn->key().database];
  --p.open;
  conn->stream().close();
}

bool server_pool::database_has_room_locked(const std::string& database) const {
  if (cfg_.pool.max_db_connections == 0) return true;
  auto it = database_open_.find(database);
  return it == database_open_.end() || it->second < cfg_.pool.max_db_connections;
}

void server_pool::wake_next_locked(const pool_key& key) {
  auto wake_first = [](user_pool& p) {
    if (p.waiters.empty()) return;
    std::shared_ptr<waiter> w = p.waiters.front();
    p.waiters.pop_front();
    w->woken = true;
    // The timer belongs to the waiter's executor: cancel it there.
    asio::post(w->executor, [w] { w->wake.cancel(); });
  };
  wake_first(pools_[key]);
  if (cfg_.pool.max_db_connections == 0) return;
  for (auto& [other, p] : pools_)
    if (other.database == key.database && !(other == key)) wake_first(p);
}

void server_pool::maintain(const asio::any_io_executor& ex) {
  std::vector<connect_request> to_open;
  {
    std::lock_guard lock(mu_);
    const auto now = clock::now();
    for (auto& [key, p] : pools_) {
      for (auto it = p.idle.begin(); it != p.idle.end();) {
        // Closed by the server while idle (terminated, restarted): drop it so
        // min_pool_size is restored now rather than at the next lease.
        const bool dead = (*it)->stream().has_unexpected_input();
        const bool idle_too_long =
            now - (*it)->idle_since >= std::chrono::milliseconds(cfg_.pool.server_idle_timeout_ms);
        const bool too_old =
            now - (*it)->created_at() >= std::chrono::milliseconds(cfg_.pool.server_lifetime_ms);
        if (dead || idle_too_long || too_old) {
          auto conn = std::move(*it);
          it = p.idle.erase(it);
          close_locked(p, std::move(conn));
        } else {
          ++it;
        }
      }
      while (p.template_request && p.open < cfg_.pool.min_pool_size &&
             database_has_room_locked(key.database)) {
        ++p.open;
        ++database_open_[key.database];
        to_open.push_back(*p.template_request);
      }
    }
  }
  for (auto& request : to_open) asio::co_spawn(ex, open_spare(std::move(request)), asio::detached);
}

awaitable<void> server_pool::open_spare(connect_request request) {
  std::unique_ptr<server_connection> conn;
  try {
    conn = co_await connect(request);
  } catch (const server_error&) {
  }
  if (conn) {
    release(std::move(conn), true);
    co_return;
  }
  std::lock_guard lock(mu_);
  --pools_[request.key()].open;
  --database_open_[request.database];
}

pool_stats server_pool::stats(const pool_key& key) const {
  std::lock_guard lock(mu_);
  auto it = pools_.find(key);
  if (it == pools_.end()) return {};
  return {it->second.open, static_cast<std::uint32_t>(it->second.idle.size()),
          static_cast<std::uint32_t>(it->second.waiters.size())};
}

}  // namespace pgstash::pool
