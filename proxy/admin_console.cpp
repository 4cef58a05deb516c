#include "proxy/admin_console.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "conf/config.hpp"
#include "proxy/admin_json.hpp"
#include "proxy/cache_admin.hpp"
#include "proxy/config_reload.hpp"
#include "proxy/console_command.hpp"
#include "proxy/pause.hpp"
#include "proxy/pool_rows.hpp"
#include "proxy/proxy_context.hpp"
#include "proxy/utf8.hpp"
#include "wire/message_writer.hpp"

namespace pgstash::proxy {

namespace {

using clock = std::chrono::steady_clock;
using cell = std::optional<std::string>;

constexpr std::uint32_t k_int8 = 20;
constexpr std::uint32_t k_text = 25;
constexpr const char* k_pgbouncer_time = "%Y-%m-%d %H:%M:%S UTC";

// One result set: RowDescription, then a DataRow per row(), then
// CommandComplete. Integer columns are described as int8 (psql aligns
// them right), the rest as text.
class table {
 public:
  struct column {
    const char* name;
    bool integer = false;
  };
  table(std::string& out, std::initializer_list<column> columns) : out_(out) {
    std::vector<wire::column_description> described;
    for (const auto& c : columns) described.push_back({c.name, c.integer ? k_int8 : k_text,
                                                       static_cast<std::int16_t>(c.integer ? 8 : -1)});
    wire::write_row_description(out_, described);
  }
  // Names and statements are the clients' bytes; psql was told UTF8.
  void row(std::vector<cell> values) {
    for (auto& v : values)
      if (v) v = valid_utf8(*v);
    wire::write_data_row(out_, values);
  }
  void finish() { wire::write_command_complete(out_, "SHOW"); }

 private:
  std::string& out_;
};

cell num(std::uint64_t n) { return std::to_string(n); }
cell text(std::string s) { return s; }

// "host:port" (or "unix") as PgBouncer's addr and port columns.
std::pair<cell, cell> address(const std::string& peer) {
  const auto colon = peer.rfind(':');
  if (colon == std::string::npos) return {peer, "0"};
  return {peer.substr(0, colon), peer.substr(colon + 1)};
}

void show_pools(proxy_context& ctx, std::string& out) {
  table t(out, {{"database"}, {"user"}, {"cl_active", true}, {"cl_waiting", true},
                {"sv_active", true}, {"sv_idle", true}, {"sv_used", true}, {"sv_tested", true},
                {"sv_login", true}, {"maxwait", true}, {"maxwait_us", true}, {"pool_mode"}});
  const char* mode = ctx.cfg->pool.mode == conf::pool_mode::transaction ? "transaction" : "session";
  for (const pool_row& r : pool_rows(ctx.pool.snapshot(), ctx.registry.list())) {
    using pool::server_list;
    const auto wait_us = std::chrono::duration_cast<std::chrono::microseconds>(r.servers.max_wait).count();
    // PgBouncer's cl_active: logged-in clients not waiting, with or without a server.
    t.row({r.key.database, r.key.user,
           num(r.client_count(client_state::active) + r.client_count(client_state::idle)),
           num(r.client_count(client_state::waiting)), num(r.servers.count(server_list::active)),
           num(r.servers.count(server_list::idle) - r.servers.check_due), num(r.servers.check_due),
           num(r.servers.count(server_list::testing)), num(r.servers.count(server_list::connecting)),
           num(static_cast<std::uint64_t>(wait_us / 1000000)),
           num(static_cast<std::uint64_t>(wait_us % 1000000)), text(mode)});
  }
  t.finish();
}

void show_clients(proxy_context& ctx, std::string& out) {
  table t(out, {{"type"}, {"user"}, {"database"}, {"state"}, {"addr"}, {"port", true},
                {"connect_time"}, {"request_time"}, {"wait", true}, {"wait_us", true},
                {"ptr"}, {"link"}, {"tls"}, {"application_name"}});
  const auto now = clock::now();
  for (const client_info& c : ctx.registry.list()) {
    if (c.kind == client_kind::console) continue;
    const char* state = c.state == client_state::waiting ? "waiting"
                        : c.state == client_state::login ? "login"
                                                         : "active";
    const auto waited = c.state == client_state::waiting ? now - c.state_since : clock::duration{};
    const auto [addr, port] = address(c.peer);
    t.row({text("C"), c.user, c.database, text(state), addr, port,
           utc_time(c.connected, k_pgbouncer_time), utc_time(wall_time(c.state_since), k_pgbouncer_time),
           num(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(waited).count())),
           num(static_cast<std::uint64_t>(
               std::chrono::duration_cast<std::chrono::microseconds>(waited).count() % 1000000)),
           "c:" + std::to_string(c.id), c.server_id ? cell("s:" + std::to_string(c.server_id)) : cell(),
           text(c.tls ? "TLS" : ""), c.application_name});
  }
  t.finish();
}

// PgBouncer's server states: a connection being opened is "new", an idle
// one due a check "used".
const char* server_state(const pool::server_record& s, bool check_due) {
  switch (s.list) {
    case pool::server_list::connecting:
      return "new";
    case pool::server_list::idle:
      return check_due ? "used" : "idle";
    case pool::server_list::testing:
      return "tested";
    case pool::server_list::active:
      return "active";
    case pool::server_list::closing:
      break;
  }
  return "closing";
}

void show_servers(proxy_context& ctx, std::string& out) {
  table t(out, {{"type"}, {"user"}, {"database"}, {"state"}, {"addr"}, {"port", true},
                {"connect_time"}, {"request_time"}, {"ptr"}, {"link"}, {"remote_pid", true}, {"tls"}});
  const pool::pool_snapshot snapshot = ctx.pool.snapshot();
  for (const auto& view : snapshot.pools) {
    for (const auto& s : view.servers) {
      const bool check_due =
          s.list == pool::server_list::idle && ctx.pool.check_due(s.since, snapshot.taken_at);
      t.row({text("S"), view.key.user, view.key.database, text(server_state(s, check_due)),
             ctx.cfg->server.host, num(ctx.cfg->server.port),
             utc_time(wall_time(s.opened), k_pgbouncer_time),
             utc_time(wall_time(s.since), k_pgbouncer_time), "s:" + std::to_string(s.id),
             s.details.client_id ? cell("c:" + std::to_string(s.details.client_id)) : cell(),
             num(s.details.process_id), text(s.details.tls ? "TLS" : "")});
    }
  }
  t.finish();
}

void show_stats(proxy_context& ctx, std::string& out) {
  table t(out, {{"database"}, {"total_xact_count", true}, {"total_query_count", true},
                {"total_received", true}, {"total_sent", true}, {"total_query_time", true},
                {"total_wait_time", true}, {"avg_query_time", true}, {"avg_wait_time", true}});
  // PgBouncer's SHOW STATS is per database: its users' pools summed.
  std::map<std::string, traffic_totals> by_database;
  for (const auto& [name, p] : ctx.traffic.totals()) {
    traffic_totals& d = by_database[name.first];
    d.transactions += p.transactions;
    d.requests += p.requests;
    d.bytes_received += p.bytes_received;
    d.bytes_sent += p.bytes_sent;
    d.request_time_us += p.request_time_us;
    d.wait_time_us += p.wait_time_us;
    d.waits += p.waits;
  }
  for (const auto& [database, d] : by_database) {
    t.row({database, num(d.transactions), num(d.requests), num(d.bytes_received), num(d.bytes_sent),
           num(d.request_time_us), num(d.wait_time_us),
           num(d.requests ? d.request_time_us / d.requests : 0),
           num(d.waits ? d.wait_time_us / d.waits : 0)});
  }
  t.finish();
}

void show_config(proxy_context& ctx, std::string& out) {
  table t(out, {{"key"}, {"value"}, {"default"}, {"changeable"}});
  const auto defaults = conf::current_settings(conf::config{});
  std::map<std::string, std::string> default_of(defaults.begin(), defaults.end());
  for (const auto& [key, value] : conf::current_settings(*ctx.cfg.get())) {
    auto d = default_of.find(key);
    t.row({key, value, d == default_of.end() ? cell() : cell(d->second),
           text(conf::applies_on_reload(key) ? "yes" : "no")});
  }
  t.finish();
}

void show_cache(proxy_context& ctx, std::string& out) {
  table t(out, {{"hits", true}, {"misses", true}, {"entries", true}, {"bytes", true},
                {"max_size", true}, {"map_size", true}, {"map_used", true}, {"stores", true},
                {"evictions", true}, {"expirations", true}, {"invalidations", true},
                {"rejected", true}, {"failures", true}});
  result_cache& c = *ctx.cache;
  const cache::store_stats s = c.store().stats();
  t.row({num(c.hits()), num(c.misses()), num(s.entries), num(s.bytes), num(c.config().max_size),
         num(s.map_size), num(s.map_used), num(s.stores), num(s.evictions), num(s.expirations),
         num(s.invalidations), num(s.rejected), num(s.failures)});
  t.finish();
}

void show_cache_entries(proxy_context& ctx, std::string& out) {
  table t(out, {{"key"}, {"database"}, {"tables"}, {"statement"}, {"age_ms", true},
                {"ttl_left_ms", true}, {"hits", true}, {"size", true}});
  const std::int64_t now = result_cache::now_ms();
  constexpr std::size_t k_shown = 1000;  // the most hit; /api/cache/entries pages through all
  std::size_t shown = 0;
  for (const entry_row& e : cache_entries(*ctx.cache)) {
    if (shown++ == k_shown) break;
    std::string tables;
    for (const auto& name : e.label.tables) tables += (tables.empty() ? "" : ", ") + name;
    t.row({hex_key(e.key), e.label.database, tables, e.label.statement,
           num(static_cast<std::uint64_t>(std::max<std::int64_t>(0, now - e.created_ms))),
           e.expires_ms ? num(static_cast<std::uint64_t>(std::max<std::int64_t>(0, e.expires_ms - now)))
                        : cell(),
           num(e.hits), num(e.size)});
  }
  t.finish();
}

void show_cache_tables(proxy_context& ctx, std::string& out) {
  table t(out, {{"database"}, {"table"}, {"entries", true}, {"bytes", true}, {"hits", true}});
  for (const table_usage& u : cache_tables(*ctx.cache))
    t.row({u.database, u.table, num(u.entries), num(u.bytes), num(u.hits)});
  t.finish();
}

void one_column(std::string& out, const char* name, std::string_view lines) {
  table t(out, {{name}});
  while (!lines.empty()) {
    const auto end = lines.find('\n');
    t.row({std::string(lines.substr(0, end))});
    lines = end == std::string_view::npos ? std::string_view{} : lines.substr(end + 1);
  }
  t.finish();
}

void notice(std::string& out, const std::string& text) {
  wire::write_error(out, {{'S', "NOTICE"}, {'V', "NOTICE"}, {'C', "00000"}, {'M', text}}, true);
}

std::string error(std::string_view sqlstate, std::string_view message, std::string_view hint = {}) {
  std::vector<std::pair<char, std::string>> fields = {
      {'S', "ERROR"}, {'V', "ERROR"}, {'C', std::string(sqlstate)}, {'M', std::string(message)}};
  if (!hint.empty()) fields.emplace_back('H', std::string(hint));
  std::string out;
  wire::write_error(out, fields);
  return out;
}

// A notice per change, as PgBouncer's RELOAD is silent but an operator
// should see what a restart is still needed for.
std::string reload(proxy_context& ctx) {
  const reload_outcome outcome = reload_config(ctx);
  if (!outcome.ok()) {
    std::string problems;
    for (const auto& d : outcome.errors)
      problems += (problems.empty() ? "" : "; ") + conf::format(d);
    return error("F0000", "reload refused, the running config is kept: " + problems);
  }
  std::string out;
  for (const auto& c : outcome.applied)
    notice(out, "applied " + c.key + " = " + c.to + " (was " + c.from + ")");
  for (const auto& c : outcome.need_restart)
    notice(out, c.key + " = " + c.to + " is in force only after a restart (running " + c.from + ")");
  wire::write_command_complete(out, "RELOAD");
  return out;
}

// PAUSE's and RESUME's database; nullopt (all) when none is named.
std::optional<std::string> named_database(const console_command& command) {
  if (command.name.empty()) return std::nullopt;
  return command.name;
}

// PAUSE waits this long for the connections to close, as PgBouncer's waits
// for them (without end there).
constexpr std::chrono::milliseconds k_console_pause_wait{60000};

}  // namespace

awaitable<std::string> console_answer(proxy_context& ctx, std::string_view sql) {
  const console_command command = parse_console_command(sql);
  const bool cache_command =
      command.verb == console_verb::show_cache || command.verb == console_verb::show_cache_entries ||
      command.verb == console_verb::show_cache_tables ||
      command.verb == console_verb::invalidate_table ||
      command.verb == console_verb::invalidate_database ||
      command.verb == console_verb::invalidate_statement || command.verb == console_verb::invalidate_all;
  if (cache_command && !ctx.cache) co_return error("55000", "the result cache is off (cache.enabled)");
  std::string out;
  switch (command.verb) {
    case console_verb::empty:
      wire::write_empty(out, wire::backend_tag::empty_query_response);
      break;
    case console_verb::show_pools:
      show_pools(ctx, out);
      break;
    case console_verb::show_clients:
      show_clients(ctx, out);
      break;
    case console_verb::show_servers:
      show_servers(ctx, out);
      break;
    case console_verb::show_stats:
      show_stats(ctx, out);
      break;
    case console_verb::show_config:
      show_config(ctx, out);
      break;
    case console_verb::show_version:
      one_column(out, "version", "pgstash " PGSTASH_VERSION);
      break;
    case console_verb::show_help:
      one_column(out, "command", console_help());
      break;
    case console_verb::show_cache:
      show_cache(ctx, out);
      break;
    case console_verb::show_cache_entries:
      show_cache_entries(ctx, out);
      break;
    case console_verb::show_cache_tables:
      show_cache_tables(ctx, out);
      break;
    case console_verb::invalidate_table:
      invalidate_table(ctx, std::nullopt, command.name);
      wire::write_command_complete(out, "INVALIDATE");
      break;
    case console_verb::invalidate_database:
      ctx.cache->invalidate_database(command.name);
      wire::write_command_complete(out, "INVALIDATE");
      break;
    case console_verb::invalidate_statement: {
      const std::size_t n = invalidate_statements(*ctx.cache, std::nullopt, command.name);
      notice(out, std::to_string(n) + " cached statement(s) invalidated");
      wire::write_command_complete(out, "INVALIDATE");
      break;
    }
    case console_verb::invalidate_all:
      invalidate_everything(ctx);
      wire::write_command_complete(out, "INVALIDATE");
      break;
    case console_verb::reload:
      co_return reload(ctx);
    case console_verb::pause: {
      const pause_outcome paused =
          co_await pause_and_drain(ctx, named_database(command), k_console_pause_wait);
      if (!paused.drained)
        notice(out, std::to_string(paused.open) + " server connection(s) still open after " +
                        std::to_string(k_console_pause_wait.count() / 1000) +
                        " s; the pause holds, RESUME ends it");
      wire::write_command_complete(out, "PAUSE");
      break;
    }
    case console_verb::resume: {
      if (!ctx.pool.resume(named_database(command)))
        co_return error("55000", "every database is paused", "RESUME without a name resumes them all");
      wire::write_command_complete(out, "RESUME");
      break;
    }
    case console_verb::invalid:
      co_return error("42601", command.error, "the console takes: " + std::string(console_help()));
  }
  co_return out;
}

}  // namespace pgstash::proxy
