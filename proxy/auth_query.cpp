#include "proxy/auth_query.hpp"

#include <vector>

#include <spdlog/spdlog.h>

#include "net/deadline.hpp"

namespace pgstash::proxy {

namespace {

pool::connect_request auth_user_request(const conf::config& cfg, const conf::userlist& users,
                                        std::string database) {
  pool::connect_request request;
  request.database = std::move(database);
  request.user = cfg.auth.user;
  // Without a secret in the auth file (or with a SCRAM verifier) only a
  // server that trusts auth.user lets it in.
  if (auto it = users.find(cfg.auth.user); it != users.end())
    request.credentials = pool::credentials_from_secret(it->second);
  request.cached_signature = request.signature();
  return request;
}

std::string lookup_failed(const std::string& user) {
  return pool::make_server_error("28000", "could not look up the password of user \"" + user +
                                              "\" (pgstash's log says why)")
      .error_response();
}

}  // namespace

std::string auth_query::query_database(const conf::config& cfg, const std::string& database) {
  return cfg.auth.database.empty() ? database : cfg.auth.database;
}

awaitable<auth_query::outcome> auth_query::look_up(
    const conf::config& cfg, const conf::userlist& users, pool::server_pool& pool,
    const std::string& database, const std::string& user, std::chrono::milliseconds timeout) {
  const auto key = std::make_pair(query_database(cfg, database), user);
  {
    std::lock_guard lock(mu_);
    auto it = found_.find(key);
    if (it != found_.end() && clock::now() < it->second.until)
      co_return outcome{it->second.secret, {}};
  }
  const pool::connect_request request = auth_user_request(cfg, users, key.first);
  const bool pooled = pool.serves(request.database);
  // Not a braced list in the co_await: g++ 12 cannot build that in a coroutine.
  const std::vector<std::optional<std::string_view>> parameters = {user};
  std::unique_ptr<pool::server_connection> conn;
  std::vector<std::optional<std::string>> row;
  std::optional<std::string> problem;
  bool reusable = false;
  try {
    if (pooled) {
      conn = co_await pool.acquire(request);
    } else {
      conn = co_await pool.connect_dedicated(request);
    }
    net::deadline give_up(co_await asio::this_coro::executor, timeout,
                          [&conn] { conn->stream().close(); });
    problem = co_await conn->run_internal(cfg.auth.query, parameters, row);
    reusable = !give_up.expired();
  } catch (const pool::server_error& e) {
    problem = e.what();
  } catch (...) {
    if (conn && pooled) pool.release(std::move(conn), false);
    throw;
  }
  if (conn && pooled) pool.release(std::move(conn), reusable);
  conn.reset();
  // A row of NULLs is "no such user": what a SQL function returning one
  // row gives when its query found none.
  const bool found_secret = row.size() >= 2 && row[1] && !row[1]->empty();
  if (!problem && !row.empty() && (row.size() < 2 || (found_secret && row[0] != user)))
    problem = "it must return (name, secret) for the name asked, and returned " +
              (row.size() < 2 ? std::string("one column") : "a row for another name");
  if (problem) {
    spdlog::warn("auth.query for user \"{}\" as \"{}\" in database \"{}\" failed: {}", user,
                 request.user, request.database, *problem);
    co_return outcome{std::nullopt, lookup_failed(user)};
  }
  if (!found_secret) co_return outcome{};
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

void auth_query::forget(const conf::config& cfg, const std::string& database,
                        const std::string& user) {
  std::lock_guard lock(mu_);
  found_.erase({query_database(cfg, database), user});
}

void auth_query::clear() {
  std::lock_guard lock(mu_);
  found_.clear();
}

}  // namespace pgstash::proxy
