// The admin port's answers, apart from HTTP (proxy/admin_server does the
// transport): each request to a status, a content type and a body.
//
//   GET  /                     the dashboard page (no token needed: it holds
//                              no data, its script fetches the API with one)
//   GET  /health               the process is up (no token needed)
//   GET  /ready                PostgreSQL answers, and each replication
//                              stream follows its database (when on); 503
//                              with the failing checks otherwise
//   GET  /metrics              Prometheus text
//   GET  /api/pools            per (database, user): clients and server
//                              connections by state, wait queue
//   GET  /api/clients          every client connection
//   GET  /api/servers          every server connection
//   GET  /api/stats            per pool: requests, transactions, bytes, waits
//   GET  /api/config           every setting, the token masked
//   GET  /api/cache            counters, uncacheable reasons, streams, tables
//   GET  /api/cache/entries    ?limit=&offset=, most hit first
//   GET  /api/slow             the last 100 slow requests (log.slow_query_ms)
//   POST /api/cache/invalidate {"database": d, "table": t} | {"statement": p}
//                              (LIKE) | {"database": d}
//                              | {"all": true}
//   POST /api/pause            {} or {"database": d}[, "timeout_ms": n]:
//                              PgBouncer's PAUSE; 200 once the database's
//                              server connections are closed, 202 if some
//                              are still open at timeout_ms (60 s)
//   POST /api/resume           {} or {"database": d}
//   POST /api/reload           reads the config file again (as SIGHUP):
//                              what was applied, what needs a restart; 422
//                              with the file's problems, nothing changed
//   GET  /api/slots            the server's test_decoding replication slots
//                              (any pgstash's): consumer or not, WAL held
//   DELETE /api/slots/<name>   drops one nothing consumes (409 if in use):
//                              the persistent slot of an instance gone
//
// Every path but /health needs `Authorization: Bearer <token>` (401).
//
// Runs on the io_context of the admin listener; reads the shared state
// through its thread-safe accessors.
#pragma once

#include <string>
#include <string_view>

#include <boost/asio/thread_pool.hpp>

#include "net/asio.hpp"

namespace pgstash::proxy {

struct proxy_context;

struct admin_request {
  std::string_view method;  // "GET", "POST", ...
  std::string_view target;  // path and query string
  std::string_view authorization;
  std::string_view body;
};

struct admin_response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// The dashboard's HTML (proxy/dashboard.html, built in).
std::string_view dashboard_page();

class admin_api {
 public:
  // REQUIRES: `ctx` outlives the api. `token` is not empty.
  admin_api(proxy_context& ctx, std::string token);

  awaitable<admin_response> handle(const admin_request& request);

 private:
  bool authorized(std::string_view authorization) const;
  awaitable<admin_response> ready();
  admin_response metrics() const;
  admin_response pools() const;
  admin_response clients() const;
  admin_response servers() const;
  admin_response stats() const;
  admin_response config() const;
  admin_response cache() const;
  admin_response cache_entries(std::string_view query) const;
  admin_response invalidate(std::string_view body);
  admin_response reload();
  admin_response slow() const;
  awaitable<admin_response> pause_or_resume(bool pause, std::string_view body);
  awaitable<admin_response> slots();
  awaitable<admin_response> drop_slot(std::string name);

  proxy_context& ctx_;
  const std::string token_;
  // Runs the libpq calls the admin's io thread must not wait for.
  asio::thread_pool blocking_{1};
};

}  // namespace pgstash::proxy
