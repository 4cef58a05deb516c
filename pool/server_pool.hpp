// Server connections, pooled per (database, user). Limits and timeouts
// follow PgBouncer's: at most pool.size connections per pool (plus
// pool.reserve_pool_size for clients that waited reserve_pool_timeout_ms),
// at most pool.max_db_connections per database; clients that find no room
// wait first-come first-served up to pool.query_wait_timeout_ms. Idle
// connections are checked before reuse after pool.server_check_delay_ms,
// closed after pool.server_idle_timeout_ms or pool.server_lifetime_ms, and
// topped up to pool.min_pool_size by maintain().
//
// An idle connection is handed out only for a request with the same
// signature (database, user, startup parameters); when a pool is full, an
// idle connection opened for other parameters is closed to make room.
//
// Every connection the pool opened is on exactly one of its pool's lists
// (pool/connection_lists.hpp) until its socket is closed; limits count
// them all, closing ones included. snapshot() copies the lists and the
// wait queues in one go, for the admin port.
//
// Thread-safe: sessions on any executor may acquire and release. A
// connection belongs to whoever holds its unique_ptr; acquire() moves its
// socket to the caller's io_context, preferring connections already there.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "conf/config.hpp"
#include "conf/live.hpp"
#include "net/asio.hpp"
#include "pool/connection_lists.hpp"
#include "pool/server_connection.hpp"

namespace pgstash::pool {

struct pool_stats {
  std::uint32_t open = 0;     // on any list: connecting, idle, testing, active, closing
  std::uint32_t idle = 0;
  std::uint32_t waiting = 0;  // clients queued for a connection
};

// One pool as it was at snapshot time.
struct pool_view {
  pool_key key;
  std::vector<server_record> servers;  // as connection_lists::copy_to orders them
  std::array<std::uint32_t, k_server_lists> counts{};  // list sizes, by server_list
  std::uint32_t count(server_list l) const { return counts[static_cast<std::size_t>(l)]; }
  // Idle connections due a pool.server_check_query before reuse
  // (PgBouncer's sv_used); a subset of count(idle).
  std::uint32_t check_due = 0;
  std::uint32_t waiting = 0;                       // clients queued for a connection
  std::chrono::steady_clock::duration max_wait{};  // the longest-waiting one's wait so far
};

struct pool_snapshot {
  std::chrono::steady_clock::time_point taken_at;  // the clock every `since` is on
  std::vector<pool_view> pools;                     // by key
};

class server_pool {
 public:
  // `cfg` and `tls` must outlive the pool. A reload's new limits apply from
  // the next acquire, release or maintain(); after one, call reconfigured().
  server_pool(const conf::live<conf::config>& cfg, asio::ssl::context& tls);
  server_pool(const server_pool&) = delete;
  server_pool& operator=(const server_pool&) = delete;

  // A connection for `request`: an idle matching one, a new one if there is
  // room, or the next one released. Runs on the caller's executor. Throws
  // server_error. `client_id` only labels the lease in snapshot().
  awaitable<std::unique_ptr<server_connection>> acquire(const connect_request& request,
                                                        std::uint64_t client_id = 0);

  // True once a pool for `database` exists (some connection to it was
  // asked for).
  bool serves(const std::string& database) const;

  // False for the databases of pool.unpooled_databases, whose connections
  // are closed on release rather than kept idle: their clients should keep
  // one connection for their whole session.
  bool pooled(const std::string& database) const;

  // A connection outside every pool: it takes no slot of pool.size and is
  // never given back, only closed (destroyed). For replication connections.
  // Throws server_error.
  awaitable<std::unique_ptr<server_connection>> connect_dedicated(const connect_request& request);

  // Gives a leased connection back. REQUIRES: when `reusable`, it is idle
  // (ReadyForQuery 'I' seen, nothing in flight). Otherwise it is closed and
  // its slot freed.
  void release(std::unique_ptr<server_connection> conn, bool reusable);

  // PgBouncer's PAUSE and RESUME, for one server database or (nullopt) all:
  // while paused, clients asking for a connection wait (up to
  // pool.query_wait_timeout_ms), connections given back are closed, and
  // idle ones are closed at once; a pause is complete when
  // open_connections() is 0. Clients keep their connections to pgstash.
  void pause(const std::optional<std::string>& database);
  // False, and nothing changes, for one database while all are paused.
  bool resume(const std::optional<std::string>& database);
  bool is_paused(const std::optional<std::string>& database) const;
  // The paused databases; "*" first if all are.
  std::vector<std::string> paused() const;
  // Server connections open for `database` (or all), closing ones included.
  std::size_t open_connections(const std::optional<std::string>& database) const;

  // After a reload: wakes waiting clients a larger pool.size has room for.
  // (Connections beyond a smaller one are closed as they are released or
  // found idle by maintain().)
  void reconfigured();

  // Closes idle connections past their idle timeout or lifetime, and opens
  // connections on `ex` up to pool.min_pool_size for pools used before.
  void maintain(const asio::any_io_executor& ex);

  pool_stats stats(const pool_key& key) const;
  // True if a connection idle since `idle_since` is to be checked with
  // pool.server_check_query before reuse (PgBouncer's "used").
  bool check_due(std::chrono::steady_clock::time_point idle_since,
                 std::chrono::steady_clock::time_point now) const;
  // Every pool's lists and wait queue, all as of one instant.
  pool_snapshot snapshot() const;

 private:
  using clock = std::chrono::steady_clock;
  struct waiter {
    waiter(const asio::any_io_executor& ex, clock::time_point asked_at)
        : executor(ex), wake(ex), since(asked_at) {}
    asio::any_io_executor executor;
    asio::steady_timer wake;
    clock::time_point since;  // when its client first asked
    bool woken = false;       // guarded by mu_
  };
  struct user_pool {
    connection_lists lists;
    // The connections of lists' idle records, most recently used first.
    std::list<std::unique_ptr<server_connection>> idle;
    std::deque<std::shared_ptr<waiter>> waiters;
    // The last request seen, to open min_pool_size connections with.
    std::optional<connect_request> template_request;
  };

  // Moves each of `doomed` from `from` to closing, closes them with mu_
  // released, then forgets them, waking a waiter per slot freed if `wake`.
  // REQUIRES: `lock` holds mu_; it does again on return.
  void close(std::unique_lock<std::mutex>& lock,
             std::vector<std::unique_ptr<server_connection>> doomed, server_list from, bool wake);
  // Wakes the longest-waiting client of `p` and, if a database-wide limit
  // is set, of the other pools of that database. REQUIRES: mu_ held.
  void wake_next_locked(const pool_key& key);
  bool database_has_room_locked(const std::string& database) const;
  // Connections open for `database`, every user's pool together.
  std::size_t database_open_locked(const std::string& database) const;
  // Connections a pool may hold open: pool.size plus the reserve.
  static std::size_t bound(const conf::config& config);
  bool paused_locked(const std::string& database) const;
  // Wakes as many waiting clients of each pool not paused as it has room for.
  void wake_for_room_locked();
  static bool on_context(server_connection& conn, const asio::execution_context* context);
  awaitable<std::unique_ptr<server_connection>> connect(const connect_request& request,
                                                        std::uint64_t id);
  // True if `conn` is fit to hand out: not closed by the server while idle,
  // and passing pool.server_check_query.
  awaitable<bool> still_good(server_connection& conn);
  awaitable<void> open_spare(connect_request request, std::uint64_t id);

  const conf::live<conf::config>& cfg_;
  asio::ssl::context& tls_;
  mutable std::mutex mu_;
  std::map<pool_key, user_pool> pools_;
  std::set<std::string> paused_;  // server databases
  bool all_paused_ = false;
  std::uint64_t next_id_ = 1;
};

}  // namespace pgstash::pool
