// PgBouncer's auth_user/auth_query: the secret of a client missing from the
// auth file is looked up on the server, by running auth.query as auth.user
// over a connection of that user's pool, and kept for auth.query_cache_ms.
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
    // refused, the query failed): a complete ErrorResponse for the client.
    std::string refusal;
  };

  // The secret of `user` for a login to server database `database`.
  // REQUIRES: cfg.auth.user is set. `users` is the auth file, for
  // auth.user's own secret.
  awaitable<outcome> look_up(const conf::config& cfg, const conf::userlist& users,
                             pool::server_pool& pool, const std::string& database,
                             const std::string& user);

  void forget(const std::string& database, const std::string& user);

 private:
  using clock = std::chrono::steady_clock;
  struct found {
    std::string secret;
    clock::time_point until;
  };
  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, found> found_;  // (database, user)
};

}  // namespace pgstash::proxy
