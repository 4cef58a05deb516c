// Server connections, pooled per (database, user). A pool never has more
// than pool.size connections open (connecting, leased and idle together);
// clients that find it full wait first-come first-served up to
// pool.wait_timeout_ms. An idle connection is handed out again only to a
// client whose startup parameters match the ones it was opened with, so
// the server sees exactly what each client asked for; a mismatched idle
// connection is closed to make room when the pool is full.
//
// Belongs to one executor; not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <string>

#include "conf/config.hpp"
#include "pool/asio.hpp"
#include "pool/server_connection.hpp"

namespace pgstash::pool {

struct pool_key {
  std::string database;
  std::string user;
  auto operator<=>(const pool_key&) const = default;
};

struct pool_stats {
  std::uint32_t open = 0;     // connecting + leased + idle
  std::uint32_t idle = 0;
  std::uint32_t waiting = 0;  // clients queued for a connection
};

class server_pool {
 public:
  // `cfg` and `tls` must outlive the pool.
  server_pool(asio::any_io_executor ex, const conf::config& cfg, asio::ssl::context& tls);
  server_pool(const server_pool&) = delete;
  server_pool& operator=(const server_pool&) = delete;

  // A connection for `request`: an idle matching one, a new one if the
  // pool has room, or the next one released if not. Throws server_error.
  awaitable<std::unique_ptr<server_connection>> acquire(const connect_request& request);

  // Gives a leased connection back. REQUIRES: when `reusable`, it is idle
  // (ReadyForQuery 'I' seen, nothing in flight) and reset. Otherwise it is
  // closed and its slot freed.
  void release(std::unique_ptr<server_connection> conn, const pool_key& key, bool reusable);

  pool_stats stats(const pool_key& key) const;

 private:
  struct waiter {
    explicit waiter(const asio::any_io_executor& ex) : wake(ex) {}
    asio::steady_timer wake;
    bool woken = false;
  };
  struct user_pool {
    std::list<std::unique_ptr<server_connection>> idle;  // most recently used first
    std::uint32_t open = 0;
    std::deque<std::shared_ptr<waiter>> waiters;
  };

  // Wakes the longest-waiting client of `p`, if any, to try again.
  void wake_next(user_pool& p);

  asio::any_io_executor ex_;
  const conf::config& cfg_;
  asio::ssl::context& tls_;
  std::map<pool_key, user_pool> pools_;
  std::uint64_t next_id_ = 1;
};

}  // namespace pgstash::pool
