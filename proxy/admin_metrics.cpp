// GET /metrics: everything the admin API shows, as Prometheus metrics.
#include <chrono>
#include <limits>

#include "proxy/admin_api.hpp"
#include "proxy/admin_json.hpp"
#include "proxy/pool_rows.hpp"
#include "proxy/prometheus_text.hpp"
#include "proxy/proxy_context.hpp"

namespace pgstash::proxy {

namespace {

using kind = prometheus_text::kind;

void pool_metrics(prometheus_text& out, const std::vector<pool_row>& rows) {
  out.family("pgstash_clients", kind::gauge,
             "Client connections of the pool, by state (active: holding a server connection).");
  for (const auto& row : rows) {
    for (auto s : {client_state::idle, client_state::waiting, client_state::active}) {
      out.sample("pgstash_clients",
                 {{"database", row.key.database}, {"user", row.key.user}, {"state", to_string(s)}},
                 std::uint64_t{row.client_count(s)});
    }
  }
  out.family("pgstash_server_connections", kind::gauge,
             "Server connections of the pool, by state.");
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < pool::k_server_lists; ++i) {
      const auto list = static_cast<pool::server_list>(i);
      out.sample("pgstash_server_connections",
                 {{"database", row.key.database}, {"user", row.key.user}, {"state", to_string(list)}},
                 std::uint64_t{row.servers.count(list)});
    }
  }
  out.family("pgstash_pool_waiting_clients", kind::gauge,
             "Clients queued for a server connection of the pool.");
  for (const auto& row : rows) {
    out.sample("pgstash_pool_waiting_clients", {{"database", row.key.database}, {"user", row.key.user}},
               std::uint64_t{row.servers.waiting});
  }
  out.family("pgstash_pool_longest_wait_seconds", kind::gauge,
             "How long the longest-waiting client of the pool has waited so far.");
  for (const auto& row : rows) {
    out.sample("pgstash_pool_longest_wait_seconds",
               {{"database", row.key.database}, {"user", row.key.user}},
               seconds(row.servers.max_wait));
  }
}

void traffic_metrics(prometheus_text& out, const traffic_stats& traffic) {
  const auto totals = traffic.totals();
  struct counter {
    const char* name;
    const char* help;
    std::uint64_t traffic_totals::*field;
  };
  static constexpr counter k_counters[] = {
      {"pgstash_requests_total", "Requests answered (one per ReadyForQuery), cache hits included.",
       &traffic_totals::requests},
      {"pgstash_transactions_total", "Transactions ended (ReadyForQuery with status idle).",
       &traffic_totals::transactions},
      {"pgstash_client_received_bytes_total", "Bytes received from clients.",
       &traffic_totals::bytes_received},
      {"pgstash_client_sent_bytes_total", "Bytes sent to clients.", &traffic_totals::bytes_sent},
      {"pgstash_pool_acquisitions_total", "Server connections clients asked the pool for.",
       &traffic_totals::waits},
  };
  for (const auto& c : k_counters) {
    out.family(c.name, kind::counter, c.help);
    for (const auto& [name, t] : totals)
      out.sample(c.name, {{"database", name.first}, {"user", name.second}}, t.*c.field);
  }
  out.family("pgstash_pool_wait_seconds_total", kind::counter,
             "Time clients spent getting a server connection from the pool.");
  for (const auto& [name, t] : totals) {
    out.sample("pgstash_pool_wait_seconds_total", {{"database", name.first}, {"user", name.second}},
               static_cast<double>(t.wait_time_us) / 1e6);
  }
  out.family("pgstash_request_duration_seconds", kind::histogram,
             "Time from a request's first message to its ReadyForQuery.");
  for (const auto& [name, t] : totals) {
    out.histogram("pgstash_request_duration_seconds", {{"database", name.first}, {"user", name.second}},
                  k_latency_bounds, t.latency_buckets, static_cast<double>(t.request_time_us) / 1e6);
  }
}

void cache_metrics(prometheus_text& out, result_cache& c) {
  const cache::store_stats s = c.store().stats();
  auto counter = [&](const char* name, const char* help, std::uint64_t value) {
    out.family(name, kind::counter, help);
    out.sample(name, {}, value);
  };
  auto gauge = [&](const char* name, const char* help, std::uint64_t value) {
    out.family(name, kind::gauge, help);
    out.sample(name, {}, value);
  };
  counter("pgstash_cache_hits_total", "Statements answered from the result cache.", c.hits());
  counter("pgstash_cache_misses_total", "Cacheable statements sent to the server.", c.misses());
  counter("pgstash_cache_strict_unproven_total",
          "Strict consistency: hits the replication stream did not prove within "
          "cache.strict_wait_ms, sent to the server instead (counted as misses too).",
          c.unproven());
  counter("pgstash_cache_stores_total", "Results stored.", s.stores);
  counter("pgstash_cache_evictions_total", "Entries evicted for cache.max_size.", s.evictions);
  counter("pgstash_cache_expirations_total", "Entries removed past their TTL.", s.expirations);
  counter("pgstash_cache_invalidations_total", "Entries removed because a write made them stale.",
          s.invalidations);
  counter("pgstash_cache_rejected_total",
          "Results not stored: too large, stale on arrival, or the write queue full.", s.rejected);
  counter("pgstash_cache_failures_total", "LMDB failures (map full, I/O).", s.failures);
  gauge("pgstash_cache_entries", "Entries in the result cache.", s.entries);
  gauge("pgstash_cache_size_bytes", "Bytes of entries, as counted against cache.max_size.", s.bytes);
  gauge("pgstash_cache_max_size_bytes", "cache.max_size.", c.config().max_size);
  gauge("pgstash_cache_lmdb_map_size_bytes", "Size of the LMDB map.", s.map_size);
  gauge("pgstash_cache_lmdb_map_used_bytes", "Bytes of the LMDB map in use.", s.map_used);
  out.family("pgstash_cache_uncacheable_total", kind::counter,
             "Statements passed through uncached, by reason.");
  for (std::size_t i = 1; i < invalidation::uncacheable_count; ++i) {
    const auto why = static_cast<invalidation::uncacheable>(i);
    out.sample("pgstash_cache_uncacheable_total", {{"reason", invalidation::to_string(why)}},
               c.uncacheable(why));
  }
  const auto streams = c.streams();
  if (streams.empty()) return;
  const auto now = std::chrono::steady_clock::now();
  out.family("pgstash_replication_stream_state", kind::gauge,
             "1 for the state each database's replication stream is in.");
  for (const auto& [database, status] : streams) {
    for (auto state : {invalidation::stream_state::connecting, invalidation::stream_state::following,
                       invalidation::stream_state::unavailable}) {
      out.sample("pgstash_replication_stream_state",
                 {{"database", database}, {"state", invalidation::to_string(state)}},
                 std::uint64_t{status->state() == state});
    }
  }
  out.family("pgstash_replication_last_message_age_seconds", kind::gauge,
             "Seconds since the server was last heard from on the stream (it answers every 2 s "
             "when following).");
  for (const auto& [database, status] : streams) {
    const auto heard = status->last_heard();
    out.sample("pgstash_replication_last_message_age_seconds", {{"database", database}},
               heard.time_since_epoch().count() == 0 ? std::numeric_limits<double>::infinity()
                                                     : seconds(now - heard));
  }
  out.family("pgstash_replication_commits_total", kind::counter,
             "Committed transactions applied from the stream.");
  for (const auto& [database, status] : streams) {
    out.sample("pgstash_replication_commits_total", {{"database", database}},
               status->commits_applied());
  }
  out.family("pgstash_replication_strict_polls_total", kind::counter,
             "Strict consistency: WAL positions polled for hits waiting on the stream.");
  for (const auto& [database, status] : streams)
    out.sample("pgstash_replication_strict_polls_total", {{"database", database}},
               status->strict_polls());
  out.family("pgstash_replication_strict_flushes_total", kind::counter,
             "Strict consistency: WAL flushes asked of the server for a polled position out of "
             "the stream's reach.");
  for (const auto& [database, status] : streams)
    out.sample("pgstash_replication_strict_flushes_total", {{"database", database}},
               status->strict_flushes());
}

}  // namespace

admin_response admin_api::metrics() const {
  prometheus_text out;
  out.family("pgstash_info", kind::gauge, "Always 1; the version is a label.");
  out.sample("pgstash_info", {{"version", PGSTASH_VERSION}}, 1.0);
  out.family("pgstash_client_connections", kind::gauge,
             "Client connections open, those logging in and replication clients included.");
  out.sample("pgstash_client_connections", {}, std::uint64_t{ctx_.clients.load()});
  out.family("pgstash_max_client_connections", kind::gauge, "listen.max_client_conn.");
  out.sample("pgstash_max_client_connections", {}, std::uint64_t{ctx_.cfg->listen.max_client_conn});
  pool_metrics(out, pool_rows(ctx_.pool.snapshot(), ctx_.registry.list()));
  traffic_metrics(out, ctx_.traffic);
  if (ctx_.cache) cache_metrics(out, *ctx_.cache);
  return {200, "text/plain; version=0.0.4; charset=utf-8", out.text()};
}

}  // namespace pgstash::proxy
