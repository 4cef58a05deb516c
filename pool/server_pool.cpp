#include "pool/server_pool.hpp"

#include <algorithm>

namespace pgstash::pool {

namespace {

std::vector<std::unique_ptr<server_connection>> just(std::unique_ptr<server_connection> conn) {
  std::vector<std::unique_ptr<server_connection>> out;
  out.push_back(std::move(conn));
  return out;
}

}  // namespace

server_pool::server_pool(const conf::live<conf::config>& cfg, asio::ssl::context& tls)
    : cfg_(cfg), tls_(tls) {}

awaitable<std::unique_ptr<server_connection>> server_pool::connect(const connect_request& request,
                                                                   std::uint64_t id) {
  // Held until connected: the connection reads the server section meanwhile.
  const auto config = cfg_.get();
  server_limits limits{config->limits.io_buffer_size, config->limits.max_message_size,
                       config->pool.max_prepared_statements};
  co_return co_await server_connection::connect(config->server, tls_, request, limits, id);
}

awaitable<std::unique_ptr<server_connection>> server_pool::connect_dedicated(
    const connect_request& request) {
  std::uint64_t id = 0;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
  }
  co_return co_await connect(request, id);
}

bool server_pool::on_context(server_connection& conn, const asio::execution_context* context) {
  return &asio::query(conn.stream().socket().get_executor(), asio::execution::context) == context;
}

bool server_pool::check_due(clock::time_point idle_since, clock::time_point now) const {
  const auto config = cfg_.get();
  return !config->pool.server_check_query.empty() &&
         now - idle_since >= std::chrono::milliseconds(config->pool.server_check_delay_ms);
}

awaitable<bool> server_pool::still_good(server_connection& conn) {
  if (conn.stream().has_unexpected_input()) co_return false;
  try {
    const std::string check = cfg_->pool.server_check_query;
    co_return !(co_await conn.run_internal(check));
  } catch (const server_error&) {
    co_return false;
  }
}

awaitable<std::unique_ptr<server_connection>> server_pool::acquire(
    const connect_request& request, std::uint64_t client_id) {
  auto ex = co_await asio::this_coro::executor;
  const asio::execution_context* here = &asio::query(ex, asio::execution::context);
  const pool_key key = request.key();
  const std::string signature =
      request.cached_signature.empty() ? request.signature() : request.cached_signature;
  const auto started = clock::now();
  const auto give_up_at = started + std::chrono::milliseconds(cfg_->pool.query_wait_timeout_ms);
  const auto reserve_at = started + std::chrono::milliseconds(cfg_->pool.reserve_pool_timeout_ms);
  bool my_turn = false;  // woken from the queue: go before clients that queued later

  std::unique_lock lock(mu_);
  for (;;) {
    user_pool& p = pools_[key];
    // min_pool_size opens spares from this; never for an unpooled database.
    if (!p.template_request && pooled(request.database)) p.template_request = request;
    if (!paused_locked(key.database) && (my_turn || p.waiters.empty())) {
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
        const auto now = clock::now();
        const bool check = check_due(candidate->idle_since, now);
        if (auto* d = p.lists.move(candidate->id(), server_list::idle, server_list::testing, now))
          d->client_id = client_id;
        lock.unlock();
        // One syscall tells whether the server closed it (a restart, a
        // terminated backend) while it sat idle.
        bool good = false;
        try {
          candidate->stream().move_to(ex);
          // Not a conditional expression: g++ 12 mishandles co_await on one.
          if (check) {
            good = co_await still_good(*candidate);
          } else {
            good = !candidate->stream().has_unexpected_input();
          }
        } catch (const std::exception&) {
        }
        lock.lock();
        if (good) {
          pools_[key].lists.move(candidate->id(), server_list::testing, server_list::active,
                                 clock::now());
          lock.unlock();
          co_return candidate;
        }
        // No wake: the slot it frees is this client's to use, and it keeps
        // its place ahead of anyone who queued meanwhile.
        close(lock, just(std::move(candidate)), server_list::testing, false);
        my_turn = true;
        continue;
      }
      const auto config = cfg_.get();
      const bool reserve_allowed = config->pool.reserve_pool_size > 0 && clock::now() >= reserve_at;
      const std::uint32_t limit =
          config->pool.size + (reserve_allowed ? config->pool.reserve_pool_size : 0);
      if (p.lists.size() >= limit && !p.idle.empty()) {
        // Full, but an idle connection opened for other parameters can make room.
        auto stale = std::move(p.idle.back());
        p.idle.pop_back();
        close(lock, just(std::move(stale)), server_list::idle, false);
        my_turn = true;
        continue;
      }
      if (p.lists.size() < limit && database_has_room_locked(key.database)) {
        const std::uint64_t id = next_id_++;
        if (auto* d = p.lists.add(id, clock::now())) d->client_id = client_id;
        lock.unlock();
        std::unique_ptr<server_connection> fresh;
        std::exception_ptr failure;
        try {
          fresh = co_await connect(request, id);
        } catch (...) {
          failure = std::current_exception();
        }
        lock.lock();
        user_pool& q = pools_[key];
        if (fresh) {
          if (auto* d = q.lists.move(id, server_list::connecting, server_list::active, clock::now())) {
            d->process_id = fresh->process_id();
            d->tls = fresh->stream().is_tls();
          }
          lock.unlock();
          co_return fresh;
        }
        q.lists.erase(id, server_list::connecting);
        wake_next_locked(key);
        lock.unlock();
        std::rethrow_exception(failure);
      }
    }

    const auto now = clock::now();
    if (now >= give_up_at) break;
    auto w = std::make_shared<waiter>(ex, started);
    const bool reserve_pending = cfg_->pool.reserve_pool_size > 0 && now < reserve_at;
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
  const bool paused = paused_locked(key.database);
  lock.unlock();
  throw make_server_error(
      "53300", "pgstash: no server connection for database \"" + request.database + "\" user \"" +
                   request.user + "\" within pool.query_wait_timeout_ms (" +
                   std::to_string(cfg_->pool.query_wait_timeout_ms) + " ms); " +
                   (paused ? std::string("the database is paused (PAUSE)")
                           : "all " + std::to_string(cfg_->pool.size) + " of pool.size are in use"));
}

bool server_pool::pooled(const std::string& database) const {
  const auto config = cfg_.get();
  return std::ranges::find(config->pool.unpooled_databases, database) ==
         config->pool.unpooled_databases.end();
}

std::size_t server_pool::bound(const conf::config& config) {
  return std::size_t{config.pool.size} + config.pool.reserve_pool_size;
}

bool server_pool::serves(const std::string& database) const {
  std::lock_guard lock(mu_);
  auto it = pools_.lower_bound(pool_key{database, {}});
  return it != pools_.end() && it->first.database == database;
}

void server_pool::release(std::unique_ptr<server_connection> conn, bool reusable) {
  const pool_key key = conn->key();
  const auto now = clock::now();
  const auto config = cfg_.get();
  const bool too_old =
      now - conn->created_at() >= std::chrono::milliseconds(config->pool.server_lifetime_ms);
  std::unique_lock lock(mu_);
  user_pool& p = pools_[key];
  // More open than the pool or its database may hold (a reload made a
  // limit smaller), or draining for PAUSE.
  const std::uint32_t database_limit = config->pool.max_db_connections;
  const bool surplus = p.lists.size() > bound(*config) || paused_locked(key.database) ||
                       (database_limit > 0 && database_open_locked(key.database) > database_limit);
  if (reusable && !too_old && !surplus && pooled(key.database) &&
      p.lists.move(conn->id(), server_list::active, server_list::idle, now)) {
    conn->idle_since = now;
    p.idle.push_front(std::move(conn));
    wake_next_locked(key);
    return;
  }
  close(lock, just(std::move(conn)), server_list::active, true);
}

void server_pool::close(std::unique_lock<std::mutex>& lock,
                        std::vector<std::unique_ptr<server_connection>> doomed, server_list from,
                        bool wake) {
  // Each stays on closing, holding its slot, until its socket is really
  // gone: pool.size bounds the sockets open, not just the ones in use.
  struct closed {
    std::map<pool_key, user_pool>::iterator pool;  // pools are never erased
    std::uint64_t id;
  };
  std::vector<closed> freed;
  freed.reserve(doomed.size());
  const auto now = clock::now();
  for (const auto& conn : doomed) {
    auto pool = pools_.try_emplace(conn->key()).first;
    pool->second.lists.move(conn->id(), from, server_list::closing, now);
    freed.push_back({pool, conn->id()});
  }
  lock.unlock();
  for (auto& conn : doomed) {
    conn->stream().close();
    conn.reset();
  }
  lock.lock();
  for (const closed& c : freed) {
    // A connection that was on no list (not ours) frees no slot.
    if (c.pool->second.lists.erase(c.id, server_list::closing) && wake)
      wake_next_locked(c.pool->first);
  }
}

std::size_t server_pool::database_open_locked(const std::string& database) const {
  std::size_t open = 0;
  for (auto it = pools_.lower_bound(pool_key{database, {}});
       it != pools_.end() && it->first.database == database; ++it)
    open += it->second.lists.size();
  return open;
}

bool server_pool::database_has_room_locked(const std::string& database) const {
  const std::uint32_t limit = cfg_->pool.max_db_connections;
  return limit == 0 || database_open_locked(database) < limit;
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
  if (cfg_->pool.max_db_connections == 0) return;
  for (auto& [other, p] : pools_)
    if (other.database == key.database && !(other == key)) wake_first(p);
}

void server_pool::reconfigured() {
  std::lock_guard lock(mu_);
  wake_for_room_locked();
}

void server_pool::wake_for_room_locked() {
  const std::size_t limit = bound(*cfg_.get());
  for (auto& [key, p] : pools_) {
    if (paused_locked(key.database)) continue;
    for (std::size_t open = p.lists.size(); open < limit && !p.waiters.empty(); ++open)
      wake_next_locked(key);
  }
}

bool server_pool::paused_locked(const std::string& database) const {
  return all_paused_ || paused_.contains(database);
}

void server_pool::pause(const std::optional<std::string>& database) {
  std::unique_lock lock(mu_);
  if (database) {
    paused_.insert(*database);
  } else {
    all_paused_ = true;
  }
  std::vector<std::unique_ptr<server_connection>> idle;
  for (auto& [key, p] : pools_) {
    if (!paused_locked(key.database)) continue;
    for (auto& conn : p.idle) idle.push_back(std::move(conn));
    p.idle.clear();
  }
  if (!idle.empty()) close(lock, std::move(idle), server_list::idle, false);
}

bool server_pool::resume(const std::optional<std::string>& database) {
  std::lock_guard lock(mu_);
  if (database) {
    if (all_paused_) return false;
    paused_.erase(*database);
  } else {
    all_paused_ = false;
    paused_.clear();
  }
  wake_for_room_locked();
  return true;
}

bool server_pool::is_paused(const std::optional<std::string>& database) const {
  std::lock_guard lock(mu_);
  return database ? paused_locked(*database) : all_paused_;
}

std::vector<std::string> server_pool::paused() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out(paused_.begin(), paused_.end());
  if (all_paused_) out.insert(out.begin(), "*");
  return out;
}

std::size_t server_pool::open_connections(const std::optional<std::string>& database) const {
  std::lock_guard lock(mu_);
  std::size_t open = 0;
  for (const auto& [key, p] : pools_)
    if (!database || key.database == *database) open += p.lists.size();
  return open;
}

void server_pool::maintain(const asio::any_io_executor& ex) {
  std::unique_lock lock(mu_);
  const auto now = clock::now();
  const auto config = cfg_.get();
  std::vector<std::unique_ptr<server_connection>> expired;
  for (auto& [key, p] : pools_) {
    // Least recently used first, down to a pool.size a reload made smaller;
    // all of a paused database's (a spare may have opened after the pause).
    std::size_t open = p.lists.size();
    while ((open > bound(*config) || paused_locked(key.database)) && !p.idle.empty()) {
      expired.push_back(std::move(p.idle.back()));
      p.idle.pop_back();
      --open;
    }
    for (auto it = p.idle.begin(); it != p.idle.end();) {
      // Closed by the server while idle (terminated, restarted): drop it so
      // min_pool_size is restored now rather than at the next lease.
      const bool dead = (*it)->stream().has_unexpected_input();
      const bool idle_too_long =
          now - (*it)->idle_since >= std::chrono::milliseconds(config->pool.server_idle_timeout_ms);
      const bool too_old =
          now - (*it)->created_at() >= std::chrono::milliseconds(config->pool.server_lifetime_ms);
      if (dead || idle_too_long || too_old) {
        expired.push_back(std::move(*it));
        it = p.idle.erase(it);
      } else {
        ++it;
      }
    }
  }
  if (!expired.empty()) close(lock, std::move(expired), server_list::idle, true);

  std::vector<std::pair<connect_request, std::uint64_t>> to_open;
  for (auto& [key, p] : pools_) {
    while (!paused_locked(key.database) && p.template_request &&
           p.lists.size() < config->pool.min_pool_size &&
           database_has_room_locked(key.database)) {
      const std::uint64_t id = next_id_++;
      p.lists.add(id, now);
      to_open.emplace_back(*p.template_request, id);
    }
  }
  lock.unlock();
  for (auto& [request, id] : to_open)
    asio::co_spawn(ex, open_spare(std::move(request), id), asio::detached);
}

awaitable<void> server_pool::open_spare(connect_request request, std::uint64_t id) {
  std::unique_ptr<server_connection> conn;
  try {
    conn = co_await connect(request, id);
  } catch (...) {
    // Failing to open a spare is no one's error; the next lease retries.
  }
  const auto now = clock::now();
  std::lock_guard lock(mu_);
  user_pool& p = pools_[request.key()];
  if (!conn) {
    p.lists.erase(id, server_list::connecting);
  } else if (auto* d = p.lists.move(id, server_list::connecting, server_list::idle, now)) {
    d->process_id = conn->process_id();
    d->tls = conn->stream().is_tls();
    conn->idle_since = now;
    p.idle.push_front(std::move(conn));
  }
  wake_next_locked(request.key());
}

pool_stats server_pool::stats(const pool_key& key) const {
  std::lock_guard lock(mu_);
  auto it = pools_.find(key);
  if (it == pools_.end()) return {};
  const user_pool& p = it->second;
  return {static_cast<std::uint32_t>(p.lists.size()),
          static_cast<std::uint32_t>(p.lists.size(server_list::idle)),
          static_cast<std::uint32_t>(p.waiters.size())};
}

pool_snapshot server_pool::snapshot() const {
  pool_snapshot out;
  std::lock_guard lock(mu_);
  out.taken_at = clock::now();
  out.pools.reserve(pools_.size());
  for (const auto& [key, p] : pools_) {
    pool_view& v = out.pools.emplace_back();
    v.key = key;
    v.servers.reserve(p.lists.size());
    p.lists.copy_to(v.servers);
    for (std::size_t l = 0; l < k_server_lists; ++l)
      v.counts[l] = static_cast<std::uint32_t>(p.lists.size(static_cast<server_list>(l)));
    for (const server_record& r : v.servers)
      if (r.list == server_list::idle && check_due(r.since, out.taken_at)) ++v.check_due;
    v.waiting = static_cast<std::uint32_t>(p.waiters.size());
    for (const auto& w : p.waiters) v.max_wait = std::max(v.max_wait, out.taken_at - w->since);
  }
  return out;
}

}  // namespace pgstash::pool
