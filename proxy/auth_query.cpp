#include "proxy/auth_query.hpp"

#include <vector>

#include <spdlog/spdlog.h>

namespace pgstash::proxy {

namespace {

pool::connect_request auth_user_request(const conf::config& cfg, const conf::userlist& users,
                                        const std::string& database) {
  pool::connect_request request;
  request.database = cfg.auth.database.empty() ? database : cfg.auth.database;
  request.user = cfg.auth.user;
  // Without a secret in the auth file (or with a SCRAM verifier, which
  // cannot prove anything to the server) only a server that trusts
  // auth.user lets it in.
  if (auto it = users.find(cfg.auth.user); it != users.end()) {
    switch (conf::kind_of_secret(it->second)) {
      case conf::secret_kind::cleartext:
        request.credentials.password = it->second;
        break;
      case conf::secret_kind::md5:
        request.credentials.md5_hash = it->second;
        break;
      case conf::secret_kind::scram:
        break;
    }
  }
  request.cached_signature = request.signature();
  return request;
}

std::string lookup_failed(const std::string& user) {
  return pool::make_server_error("28000", "could not look up the password of user \"" + user +
                                              "\" (pgstash's log says why)")
      .error_response();
}

}  // namespace

awaitable<auth_query::outcome> auth_query::look_up(const conf::config& cfg,
                                                   const conf::userlist& users,
                                                   pool::server_pool& pool,
                                                   const std::string& database,
                                                   const std::string& user) {
  const auto key = std::make_pair(database, user);
  {
    std::lock_guard lock(mu_);
    auto it = found_.find(key);
    if (it != found_.end() && clock::now() < it->second.until)
      co_return outcome{it->second.secret, {}};
  }
  const pool::connect_request request = auth_user_request(cfg, users, database);
  std::unique_ptr<pool::server_connection> conn;
  // Not a braced list in the co_await: g++ 12 cannot build that in a coroutine.
  const std::vector<std::optional<std::string_view>> parameters = {user};
  std::vector<std::optional<std::string>> row;
  std::optional<std::string> error;
  std::string refusal;
  try {
    conn = co_await pool.acquire(request);
    error = co_await conn->run_internal(cfg.auth.query, parameters, row);
  } catch (const pool::server_error& e) {
    spdlog::warn("auth.query for user \"{}\" as \"{}\" in database \"{}\": {}", user, request.user,
                 request.database, e.what());
    refusal = e.error_response();
  }
  if (conn) pool.release(std::move(conn), refusal.empty());
  if (!refusal.empty()) co_return outcome{std::nullopt, std::move(refusal)};
  if (error || (!row.empty() && row.size() < 2)) {
    spdlog::warn("auth.query for user \"{}\" as \"{}\" in database \"{}\" failed: {}", user,
                 request.user, request.database,
                 error ? *error : "it must return (name, secret), but returned one column");
    co_return outcome{std::nullopt, lookup_failed(user)};
  }
  if (row.empty() || !row[1] || row[1]->empty()) co_return outcome{};
  if (cfg.auth.query_cache_ms > 0) {
    const auto now = clock::now();
    std::lock_guard lock(mu_);
    // Expired secrets go whenever a new one comes: what is kept is bounded
    // by the roles found within one auth.query_cache_ms.
    std::erase_if(found_, [now](const auto& kept) { return kept.second.until <= now; });
    found_[key] = {*row[1], now + std::chrono::milliseconds(cfg.auth.query_cache_ms)};
  }
  co_return outcome{std::move(row[1]), {}};
}

void auth_query::forget(const std::string& database, const std::string& user) {
  std::lock_guard lock(mu_);
  found_.erase({database, user});
}

}  // namespace pgstash::proxy
