// PgBouncer's auth_user/auth_query: the secret of a client missing from the
// auth file is looked up on the server, by running auth.query as auth.user,
// and kept for auth.query_cache_ms.
//
// The query runs over a connection of auth.user's pool for the database,
// so concurrent look-ups are bounded by pool.size; for a database no pool
// serves yet, over a connection of its own, closed after it, so that names
// made up by clients who have not logged in leave no pool behind.
//
// What is kept is only what was found: a name with no row (or a NULL
// secret) is asked again at its next login, so a role created on the
// server can log in at once. A login that fails against a kept secret drops
// it (forget), so a password changed on the server works from the next try.
//
// Thread-safe: sessions on every thread share one.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "conf/config.hpp"
#include "conf/userlist.hpp"
#include "net/asio.hpp"
#include "pool/server_pool.hpp"

namespace pgstash::proxy {

class auth_query {
 public:
  struct outcome {
    std::optional<std::string> secret;  // nullopt: no such user, or no secret
    // Non-empty when the look-up itself failed (server unreachable, auth.user
    // refused, the query failed or timed out, a row for another name): a
    // complete ErrorResponse for the client, which says no more than that.
    // The reason is logged.
    std::string refusal;
  };

  // The secret of `user` for a login to server database `database`, within
  // `timeout`. REQUIRES: cfg.auth.user is set. `users` is the auth file, for
  // auth.user's own secret.
  awaitable<outcome> look_up(const conf::config& cfg, const conf::userlist& users,
                             pool::server_pool& pool, const std::string& database,
                             const std::string& user, std::chrono::milliseconds timeout);

  // A login failed against the secret look_up(cfg, ..., database, user) gave.
  void forget(const conf::config& cfg, const std::string& database, const std::string& user);
  // Drops every kept secret: after a reload, which may change the query.
  void clear();

 private:
  using clock = std::chrono::steady_clock;
  struct found {
    std::string secret;
    clock::time_point until;
  };
  // The database the query runs in: auth.database, else the client's.
  static std::string query_database(const conf::config& cfg, const std::string& database);

  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, found> found_;  // (query database, user)
};

}  // namespace pgstash::proxy
