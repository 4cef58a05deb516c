// The admin API's routing, its token check, readiness and the JSON views
// of pools, clients, servers, traffic and config. The cache's views are in
// admin_cache.cpp, the Prometheus text in admin_metrics.cpp.
#include "proxy/admin_api.hpp"

#include <openssl/crypto.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "net/deadline.hpp"
#include "proxy/admin_json.hpp"
#include "proxy/config_reload.hpp"
#include "proxy/pause.hpp"
#include "proxy/pool_rows.hpp"
#include "proxy/proxy_context.hpp"

namespace pgstash::proxy {

namespace {

using nlohmann::json;

constexpr std::chrono::milliseconds k_probe_timeout{2000};

// Whether PostgreSQL's postmaster answers the protocol at `host`:`port`:
// an SSLRequest gets its one-byte answer, with no login and no backend.
// Empty when it does; otherwise why not.
awaitable<std::string> probe_server(const std::string& host, std::uint16_t port) {
  auto ex = co_await asio::this_coro::executor;
  tcp::socket socket(ex);
  tcp::resolver resolver(ex);
  net::deadline give_up(ex, k_probe_timeout, [&socket, &resolver] {
    resolver.cancel();
    error_code ignored;
    socket.close(ignored);
  });
  error_code ec;
  auto endpoints = co_await resolver.async_resolve(host, std::to_string(port), on_error(ec));
  if (ec || give_up.expired()) co_return "cannot resolve " + host + ": " + ec.message();
  // One endpoint at a time: a socket the deadline closed is not reopened.
  ec = asio::error::host_not_found;
  for (const auto& endpoint : endpoints) {
    if (give_up.expired()) break;
    error_code ignored;
    socket.close(ignored);
    co_await socket.async_connect(endpoint, on_error(ec));
    if (!ec) break;
  }
  if (ec || give_up.expired()) co_return "cannot connect to " + host + ":" + std::to_string(port) + ": " + ec.message();
  static constexpr unsigned char k_ssl_request[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
  co_await asio::async_write(socket, asio::buffer(k_ssl_request), on_error(ec));
  char answer = 0;
  if (!ec) co_await asio::async_read(socket, asio::buffer(&answer, 1), on_error(ec));
  if (ec) co_return "no answer from " + host + ":" + std::to_string(port) + ": " + ec.message();
  if (answer != 'S' && answer != 'N') co_return "not PostgreSQL at " + host + ":" + std::to_string(port);
  co_return std::string();
}

}  // namespace

admin_api::admin_api(proxy_context& ctx, std::string token) : ctx_(ctx), token_(std::move(token)) {}

bool admin_api::authorized(std::string_view authorization) const {
  constexpr std::string_view k_scheme = "Bearer ";
  if (!authorization.starts_with(k_scheme)) return false;
  const std::string_view given = authorization.substr(k_scheme.size());
  // Constant time: the answer's timing says nothing of how much matched.
  return given.size() == token_.size() &&
         CRYPTO_memcmp(given.data(), token_.data(), token_.size()) == 0;
}

awaitable<admin_response> admin_api::handle(const admin_request& request) {
  const std::string_view path = request.target.substr(0, request.target.find('?'));
  const std::string_view query =
      path.size() < request.target.size() ? request.target.substr(path.size() + 1) : "";
  const bool get = request.method == "GET";
  if (path == "/") {
    // The page holds no data: its script asks for it with the token.
    co_return get ? admin_response{200, "text/html; charset=utf-8", std::string(dashboard_page())}
                  : admin_error(405, "use GET");
  }
  if (path == "/health") {
    co_return get ? json_response({{"status", "ok"}}) : admin_error(405, "use GET");
  }
  if (!authorized(request.authorization)) {
    co_return admin_error(401, "an Authorization: Bearer <admin token> header is required");
  }
  if (path == "/api/cache/invalidate") {
    co_return request.method == "POST" ? invalidate(request.body) : admin_error(405, "use POST");
  }
  if (path == "/api/reload") {
    co_return request.method == "POST" ? reload() : admin_error(405, "use POST");
  }
  if (path == "/api/pause" || path == "/api/resume") {
    if (request.method != "POST") co_return admin_error(405, "use POST");
    co_return co_await pause_or_resume(path == "/api/pause", request.body);
  }
  if (path == "/api/slots") {
    if (!get) co_return admin_error(405, "use GET");
    co_return co_await slots();
  }
  if (path.starts_with("/api/slots/")) {
    if (request.method != "DELETE") co_return admin_error(405, "use DELETE");
    co_return co_await drop_slot(std::string(path.substr(std::string_view("/api/slots/").size())));
  }
  if (!get) {
    co_return admin_error(405, "use GET");
  }
  if (path == "/ready") co_return co_await ready();
  if (path == "/metrics") co_return metrics();
  if (path == "/api/pools") co_return pools();
  if (path == "/api/clients") co_return clients();
  if (path == "/api/servers") co_return servers();
  if (path == "/api/stats") co_return stats();
  if (path == "/api/config") co_return config();
  if (path == "/api/cache") co_return cache();
  if (path == "/api/cache/entries") co_return cache_entries(query);
  if (path == "/api/slow") co_return slow();
  co_return admin_error(404, "no such endpoint");
}

awaitable<admin_response> admin_api::ready() {
  json checks = json::object();
  bool ready = true;
  const auto config = ctx_.cfg.get();  // held while the probe runs
  const std::string problem = co_await probe_server(config->server.host, config->server.port);
  checks["server"] = problem.empty() ? json{{"ok", true}} : json{{"ok", false}, {"error", problem}};
  ready = ready && problem.empty();
  if (ctx_.cache) {
    for (const auto& [database, status] : ctx_.cache->streams()) {
      const auto state = status->state();
      // An unavailable stream is the server's configuration, not a lag:
      // the TTL bounds what is served, and it is reported as such.
      const bool ok = state != invalidation::stream_state::connecting;
      checks["replication"][database] = {{"ok", ok}, {"state", to_string(state)}};
      ready = ready && ok;
    }
  }
  co_return json_response({{"ready", ready}, {"checks", checks}}, ready ? 200 : 503);
}

admin_response admin_api::pools() const {
  const pool::pool_snapshot snapshot = ctx_.pool.snapshot();
  json out = json::array();
  for (const pool_row& row : pool_rows(snapshot, ctx_.registry.list())) {
    out.push_back(pool_json(row, *ctx_.cfg.get()));
  }
  // "*" first when every database is paused.
  return json_response({{"pools", out}, {"paused", ctx_.pool.paused()}});
}

admin_response admin_api::clients() const {
  const auto now = std::chrono::steady_clock::now();
  json out = json::array();
  for (const client_info& c : ctx_.registry.list()) out.push_back(client_json(c, now));
  return json_response({{"clients", out}});
}

admin_response admin_api::servers() const {
  const pool::pool_snapshot snapshot = ctx_.pool.snapshot();
  json out = json::array();
  for (const auto& view : snapshot.pools) {
    for (const auto& record : view.servers) out.push_back(server_json(view.key, record, snapshot.taken_at));
  }
  return json_response({{"servers", out}});
}

admin_response admin_api::stats() const {
  json out = json::array();
  for (const auto& [name, totals] : ctx_.traffic.totals()) out.push_back(stats_json(name, totals));
  return json_response({{"stats", out}});
}

admin_response admin_api::config() const {
  json out = json::object();
  for (const auto& [name, text] : conf::current_settings(*ctx_.cfg.get())) {
    // Values are written as in the file; TOML's scalars and lists of
    // strings read as JSON too. Anything else stays text.
    json value = json::parse(text, nullptr, false);
    out[name] = value.is_discarded() ? json(text) : value;
  }
  return json_response({{"settings", out}});
}

admin_response admin_api::reload() {
  const reload_outcome outcome = reload_config(ctx_);
  auto changes = [](const std::vector<conf::setting_change>& list) {
    json out = json::array();
    for (const auto& c : list) out.push_back({{"key", c.key}, {"from", c.from}, {"to", c.to}});
    return out;
  };
  json errors = json::array();
  for (const auto& d : outcome.errors)
    errors.push_back({{"file", d.file},
                      {"line", d.line},
                      {"column", d.column},
                      {"message", d.message},
                      {"hint", d.hint}});
  return json_response({{"reloaded", outcome.ok()},
                        {"errors", errors},
                        {"applied", changes(outcome.applied)},
                        {"restart_required", changes(outcome.need_restart)}},
                       outcome.ok() ? 200 : 422);
}

admin_response admin_api::slow() const {
  json out = json::array();
  for (const slow_request& r : ctx_.slow.newest_first())
    out.push_back({{"at", utc_time(r.at, "%Y-%m-%dT%H:%M:%SZ")},
                   {"database", r.database},
                   {"user", r.user},
                   {"duration_ms", r.duration_ms},
                   {"statement", r.statement}});
  return json_response({{"threshold_ms", ctx_.cfg->log.slow_query_ms}, {"slow", out}});
}

awaitable<admin_response> admin_api::pause_or_resume(bool pause, std::string_view body) {
  const json request = body.empty() ? json::object() : json::parse(body, nullptr, false);
  constexpr std::int64_t k_max_wait_ms = 3'600'000;
  if (request.is_discarded() || !request.is_object())
    co_return admin_error(400, "the body must be a JSON object: {} for every database, or "
                               "{\"database\": d}; for a pause, \"timeout_ms\" too");
  std::optional<std::string> database;
  if (const auto it = request.find("database"); it != request.end()) {
    if (!it->is_string() || it->get<std::string>().empty())
      co_return admin_error(400, "\"database\" must be a database name");
    database = it->get<std::string>();
  }
  const json name = database ? json(*database) : json("*");
  if (!pause) {
    if (!ctx_.pool.resume(database))
      co_return admin_error(409, "every database is paused: resume them all with {}");
    co_return json_response({{"resumed", name}});
  }
  std::int64_t wait_ms = 60'000;
  if (const auto it = request.find("timeout_ms"); it != request.end()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 0 ||
        it->get<std::int64_t>() > k_max_wait_ms)
      co_return admin_error(400, "\"timeout_ms\" must be 0 to 3600000");
    wait_ms = it->get<std::int64_t>();
  }
  const pause_outcome paused =
      co_await pause_and_drain(ctx_, database, std::chrono::milliseconds(wait_ms));
  // 202: paused, but connections are still being given back.
  co_return json_response(
      {{"paused", name}, {"drained", paused.drained}, {"server_connections", paused.open}},
      paused.drained ? 200 : 202);
}

}  // namespace pgstash::proxy
