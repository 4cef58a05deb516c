// The key table: every config key as a row, kept alphabetical, each bound
// to its struct member by a factory that checks its range at compile time.
#include "conf/config_keys.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <type_traits>
#include <utility>

namespace pgstash::conf::detail {

setting number_setting(std::int64_t number) {
  setting s;
  s.number = number;
  return s;
}
setting text_setting(std::string text) {
  setting s;
  s.text = std::move(text);
  return s;
}
setting list_setting(std::vector<std::string> list) {
  setting s;
  s.list = std::move(list);
  return s;
}

namespace {

template <auto Section, auto Member>
using member_type = std::remove_cvref_t<decltype(std::declval<config&>().*Section.*Member)>;

template <auto Section, auto Member>
consteval key_row string_key(std::string_view name, bool non_empty, std::string_view doc,
                             bool secret = false) {
  return {.name = name,
          .type = key_type::string,
          .doc = doc,
          .min = non_empty ? 1 : 0,
          .secret = secret,
          .store = [](config& c, const setting& s) { (c.*Section).*Member = s.text; },
          .load =
              [](const config& c) {
                return text_setting((c.*Section).*Member);
              }};
}

template <auto Section, auto Member>
consteval key_row integer_key(std::string_view name, std::int64_t min, std::int64_t max,
                              std::string_view doc) {
  using field = member_type<Section, Member>;
  // A throw in a consteval function is a compile error: a range the member
  // cannot hold never builds.
  if (!std::in_range<field>(min) || !std::in_range<field>(max)) throw "range exceeds member type";
  return {.name = name,
          .type = key_type::integer,
          .doc = doc,
          .min = min,
          .max = max,
          .unit = name.ends_with("_ms") ? key_unit::milliseconds : key_unit::none,
          .store = [](config& c,
                      const setting& s) { (c.*Section).*Member = static_cast<field>(s.number); },
          .load =
              [](const config& c) {
                return number_setting(static_cast<std::int64_t>((c.*Section).*Member));
              }};
}

template <auto Section, auto Member>
consteval key_row string_list_key(std::string_view name, std::string_view doc) {
  return {.name = name,
          .type = key_type::string_list,
          .doc = doc,
          .store = [](config& c, const setting& s) { (c.*Section).*Member = s.list; },
          .load =
              [](const config& c) {
                return list_setting((c.*Section).*Member);
              }};
}

template <auto Section, auto Member>
consteval key_row boolean_key(std::string_view name, std::string_view doc) {
  return {.name = name,
          .type = key_type::boolean,
          .doc = doc,
          .store = [](config& c, const setting& s) { (c.*Section).*Member = s.number != 0; },
          .load =
              [](const config& c) {
                return number_setting((c.*Section).*Member ? 1 : 0);
              }};
}

// A choice stored either as an enum (by index) or as the spelling itself.
template <auto Section, auto Member, const auto& Choices>
consteval key_row choice_key(std::string_view name, std::span<const std::string_view> unsupported,
                             std::string_view doc) {
  using field = member_type<Section, Member>;
  return {.name = name,
          .type = key_type::choice,
          .doc = doc,
          .choices = Choices,
          .unsupported = unsupported,
          .store =
              [](config& c, const setting& s) {
                if constexpr (std::is_enum_v<field>) {
                  (c.*Section).*Member = static_cast<field>(s.number);
                } else {
                  (c.*Section).*Member = field(Choices[static_cast<std::size_t>(s.number)]);
                }
              },
          .load =
              [](const config& c) {
                if constexpr (std::is_enum_v<field>) {
                  return number_setting(static_cast<std::int64_t>((c.*Section).*Member));
                } else {
                  auto it = std::ranges::find(Choices, (c.*Section).*Member);
                  return number_setting(it - Choices.begin());
                }
              }};
}

consteval key_row live(key_row row) {
  row.live = true;
  return row;
}
consteval key_row counting(key_unit unit, key_row row) {
  if (row.type != key_type::integer) throw "only integer keys have a unit";
  row.unit = unit;
  return row;
}

constexpr std::array<std::string_view, 3> k_auth_methods = {"trust", "md5", "scram-sha-256"};
constexpr std::array<std::string_view, 6> k_log_levels = {"trace", "debug", "info",
                                                          "warn",  "error", "off"};
constexpr std::array<std::string_view, 2> k_consistency = {"instance", "strict"};
constexpr std::array<std::string_view, 2> k_log_formats = {"text", "json"};
constexpr std::array<std::string_view, 2> k_pool_modes = {"session", "transaction"};
constexpr std::array<std::string_view, 1> k_pool_modes_later = {"statement"};
constexpr std::array<std::string_view, 4> k_server_tls = {"disable", "prefer", "require",
                                                          "verify-full"};
constexpr std::int64_t k_max_timeout_ms = 86'400'000;  // one day

constexpr std::array k_keys = {
    string_key<&config::admin, &admin_section::host>("admin.host", true,
                                                     "Address of the admin HTTP port."),
    integer_key<&config::admin, &admin_section::max_connections>(
        "admin.max_connections", 1, 1000,
        "Admin HTTP connections open at once; more are answered 503."),
    integer_key<&config::admin, &admin_section::port>(
        "admin.port", 0, 65535,
        "TCP port of the admin HTTP API (health, readiness, metrics, JSON); 0 = none."),
    string_key<&config::admin, &admin_section::token>(
        "admin.token", false,
        "Bearer token every admin request but `/health` must carry; when empty, the "
        "`PGSTASH_ADMIN_TOKEN` environment variable is used, and one of the two is required "
        "with `admin.port`.",
        true),
    live(string_list_key<&config::admin, &admin_section::users>(
        "admin.users",
        "Users who may log in to the admin console, database `pgstash` on the client port, "
        "with their auth file password (asked for even under `trust`); empty = nobody.")),
    live(string_key<&config::auth, &auth_section::database>(
        "auth.database", false,
        "Database `auth.query` runs in (as the server names it); empty = the one the client "
        "asked for.")),
    string_key<&config::auth, &auth_section::file>(
        "auth.file", false,
        "Userlist file (`\"user\" \"secret\"` per line); required unless `auth.method` is "
        "`trust` or `auth.user` is set."),
    choice_key<&config::auth, &auth_section::method, k_auth_methods>(
        "auth.method", {}, "How clients prove who they are."),
    live(string_key<&config::auth, &auth_section::query>(
        "auth.query", true,
        "Returns the secret of a user missing from `auth.file`: `$1` is the user's name, the "
        "first row's second column its SCRAM verifier, md5 hash or password (no row or NULL: "
        "refused). Reading `pg_shadow` needs a superuser; a `SECURITY DEFINER` function "
        "owned by one does not.")),
    live(integer_key<&config::auth, &auth_section::query_cache_ms>(
        "auth.query_cache_ms", 0, k_max_timeout_ms,
        "A secret `auth.query` found is reused for this long (a failed login drops it "
        "at once); 0 = looked up at every login.")),
    live(string_key<&config::auth, &auth_section::user>(
        "auth.user", false,
        "Role that runs `auth.query` for clients missing from `auth.file` (PgBouncer's "
        "`auth_user`), logging in with its own `auth.file` secret if it has one; empty = no "
        "look-up.")),
    integer_key<&config::cache, &cache_section::coalesce_wait_ms>(
        "cache.coalesce_wait_ms", 0, k_max_timeout_ms,
        "A miss of a statement another client is already fetching waits up to this long for "
        "that result (served if it is valid for this client) before going to the server "
        "itself: concurrent misses make one server query; 0 = never waits."),
    counting(key_unit::bytes,
             integer_key<&config::cache, &cache_section::compress_min_size>(
                 "cache.compress_min_size", 64, 1'073'741'824,
                 "Cached responses at least this many bytes are stored zstd-compressed.")),
    choice_key<&config::cache, &cache_section::consistency, k_consistency>(
        "cache.consistency", {},
        "`instance`: a hit has seen every write acknowledged through this pgstash, and writes "
        "elsewhere within the replication stream's lag; `strict`: every write acknowledged "
        "before the read, wherever it was made (each hit waits for the stream to pass a WAL "
        "position read after it arrived; needs `invalidation.replication`)."),
    counting(key_unit::seconds,
             integer_key<&config::cache, &cache_section::default_ttl>(
                 "cache.default_ttl", 0, 31'536'000,
                 "Seconds a cached result may be served at most; 0 = until invalidated. Bounds how "
                 "long a write that bypasses pgstash can go unseen.")),
    boolean_key<&config::cache, &cache_section::enabled>(
        "cache.enabled", "Answer repeated cacheable SELECTs from the result cache."),
    counting(key_unit::bytes,
             integer_key<&config::cache, &cache_section::max_entry_size>(
                 "cache.max_entry_size", 1024, 1'073'741'824,
                 "A response larger than this many bytes is never cached (it streams through).")),
    counting(
        key_unit::bytes,
        integer_key<&config::cache, &cache_section::max_size>(
            "cache.max_size", 1'048'576, 1'099'511'627'776,
            "Bytes of cached responses kept; least recently used entries are evicted beyond it.")),
    string_key<&config::cache, &cache_section::path>(
        "cache.path", true,
        "Directory of the cache's LMDB files (created; entries of an earlier run are "
        "discarded)."),
    integer_key<&config::cache, &cache_section::strict_wait_ms>(
        "cache.strict_wait_ms", 1, k_max_timeout_ms,
        "Strict consistency: a hit the replication stream has not proven within this many ms "
        "goes to the server instead."),
    string_key<&config::cache, &cache_section::warm_database>(
        "cache.warm_database", false,
        "Database (as clients name it) that `cache.warm_statements` run in; required with them."),
    string_list_key<&config::cache, &cache_section::warm_statements>(
        "cache.warm_statements",
        "Statements pgstash runs through itself at start and after every invalidation of "
        "everything, so that the first clients get hits; empty = none."),
    string_key<&config::cache, &cache_section::warm_user>(
        "cache.warm_user", false,
        "User `cache.warm_statements` run as, with its auth file password if it has one in "
        "clear; required with them. Entries are shared only with clients of the same settings."),
    boolean_key<&config::invalidation, &invalidation_section::persistent_slot>(
        "invalidation.persistent_slot",
        "Keep each database's replication slot when pgstash stops, so that a restart replays "
        "what was written meanwhile and serves the cached results that survived; an instance "
        "gone for good leaves its slots holding WAL on the server until they are dropped."),
    boolean_key<&config::invalidation, &invalidation_section::replication>(
        "invalidation.replication",
        "Follow PostgreSQL's logical replication stream (needs `wal_level = logical` and the "
        "REPLICATION privilege) so that writes bypassing pgstash invalidate the cache."),
    string_key<&config::invalidation, &invalidation_section::slot>(
        "invalidation.slot", true,
        "Prefix of the replication slot of each database (`<slot>_<database oid>`); "
        "unique per pgstash instance: lower-case letters, digits and `_`, at most 40."),
    integer_key<&config::limits, &limits_section::analysis_cache_entries>(
        "limits.analysis_cache_entries", 1, 10'000'000,
        "Statement analyses memoized per worker thread."),
    live(integer_key<&config::limits, &limits_section::client_idle_timeout_ms>(
        "limits.client_idle_timeout_ms", 0, k_max_timeout_ms,
        "A client silent this many ms is disconnected; 0 = never.")),
    live(integer_key<&config::limits, &limits_section::client_login_timeout_ms>(
        "limits.client_login_timeout_ms", 1, k_max_timeout_ms,
        "A client must finish startup and authentication within this many ms.")),
    live(integer_key<&config::limits, &limits_section::idle_transaction_timeout_ms>(
        "limits.idle_transaction_timeout_ms", 0, k_max_timeout_ms,
        "A client silent this many ms inside a transaction is disconnected; 0 = never.")),
    counting(key_unit::bytes, integer_key<&config::limits, &limits_section::io_buffer_size>(
                                  "limits.io_buffer_size", 4096, 16'777'216,
                                  "Bytes buffered per direction of a session.")),
    counting(key_unit::bytes,
             integer_key<&config::limits, &limits_section::max_message_size>(
                 "limits.max_message_size", 1024, 1'073'741'824,
                 "Largest protocol message accepted from a client or server, in bytes.")),
    string_key<&config::listen, &listen_section::host>("listen.host", true,
                                                       "Address to accept clients on."),
    live(integer_key<&config::listen, &listen_section::max_client_conn>(
        "listen.max_client_conn", 1, 1'000'000,
        "Clients beyond this many are refused with SQLSTATE 53300.")),
    integer_key<&config::listen, &listen_section::max_replication_conn>(
        "listen.max_replication_conn", 0, 10000,
        "Replication clients (startup parameter `replication`) beyond this many are refused "
        "with SQLSTATE 53300; each has its own server connection, outside the pools and "
        "`listen.max_client_conn`."),
    integer_key<&config::listen, &listen_section::port>("listen.port", 1, 65535,
                                                        "TCP port to accept clients on."),
    boolean_key<&config::listen, &listen_section::reuse_port>(
        "listen.reuse_port",
        "Bind `listen.port` with SO_REUSEPORT, so that several pgstash instances on one host "
        "share it (the kernel spreads new connections over them); give each a "
        "`process.peer_id` and list them all in `[peers]`."),
    string_key<&config::listen, &listen_section::tls_cert_file>(
        "listen.tls_cert_file", false,
        "PEM certificate; with `listen.tls_key_file`, enables TLS for clients."),
    string_key<&config::listen, &listen_section::tls_key_file>(
        "listen.tls_key_file", false, "PEM private key for `listen.tls_cert_file`."),
    string_key<&config::listen, &listen_section::unix_socket_dir>(
        "listen.unix_socket_dir", false,
        "Directory of a unix socket `.s.PGSQL.<listen.port>` accepting clients too; empty = "
        "none."),
    string_key<&config::listen, &listen_section::unix_socket_mode>(
        "listen.unix_socket_mode", true, "File mode of the unix socket, in octal."),
    choice_key<&config::log, &log_section::format, k_log_formats>(
        "log.format", {},
        "`text` lines, or `json`: one JSON object per line (`time`, `level`, then `msg` or an "
        "event's fields)."),
    live(choice_key<&config::log, &log_section::level, k_log_levels>("log.level", {},
                                                                     "Least severe level logged.")),
    live(integer_key<&config::log, &log_section::slow_query_ms>(
        "log.slow_query_ms", 0, k_max_timeout_ms,
        "A request answered this many ms or more after it began is logged (`slow_query`) with "
        "its statement's first 200 bytes, never its parameter values; 0 = none.")),
    live(integer_key<&config::pool, &pool_section::cleanup_timeout_ms>(
        "pool.cleanup_timeout_ms", 1, k_max_timeout_ms,
        "After its client leaves, a server connection must be clean and idle again within "
        "this many ms (cancel, ROLLBACK, reset) or it is closed.")),
    live(integer_key<&config::pool, &pool_section::max_db_connections>(
        "pool.max_db_connections", 0, 100000,
        "Server connections per database, all users together; 0 = no limit.")),
    integer_key<&config::pool, &pool_section::max_prepared_statements>(
        "pool.max_prepared_statements", 1, 100000,
        "Transaction mode: prepared statements kept per server connection (least recently "
        "used are closed)."),
    live(integer_key<&config::pool, &pool_section::min_pool_size>(
        "pool.min_pool_size", 0, 10000,
        "Server connections kept open per (database, user) once that pool was used.")),
    choice_key<&config::pool, &pool_section::mode, k_pool_modes>(
        "pool.mode", k_pool_modes_later,
        "`transaction`: a client holds a server connection only during a transaction; "
        "`session`: for its whole session."),
    live(integer_key<&config::pool, &pool_section::query_wait_timeout_ms>(
        "pool.query_wait_timeout_ms", 1, k_max_timeout_ms,
        "A client waits this many ms for a server connection, then gets an error (53300).")),
    live(integer_key<&config::pool, &pool_section::reserve_pool_size>(
        "pool.reserve_pool_size", 0, 10000,
        "Extra server connections per (database, user) for clients that waited "
        "`pool.reserve_pool_timeout_ms`.")),
    live(integer_key<&config::pool, &pool_section::reserve_pool_timeout_ms>(
        "pool.reserve_pool_timeout_ms", 1, k_max_timeout_ms,
        "How long a client waits before the reserve pool may serve it.")),
    live(integer_key<&config::pool, &pool_section::server_check_delay_ms>(
        "pool.server_check_delay_ms", 0, k_max_timeout_ms,
        "Idle time after which a connection is checked before reuse.")),
    live(string_key<&config::pool, &pool_section::server_check_query>(
        "pool.server_check_query", false,
        "Run on a connection idle longer than `pool.server_check_delay_ms` before reuse; "
        "empty = no check.")),
    live(integer_key<&config::pool, &pool_section::server_idle_timeout_ms>(
        "pool.server_idle_timeout_ms", 1, k_max_timeout_ms,
        "Server connections idle in the pool longer than this are closed.")),
    live(integer_key<&config::pool, &pool_section::server_lifetime_ms>(
        "pool.server_lifetime_ms", 1, k_max_timeout_ms,
        "Server connections older than this are closed when released.")),
    live(string_key<&config::pool, &pool_section::server_reset_query>(
        "pool.server_reset_query", false,
        "Session mode (and pinned transaction-mode clients): run on a server connection before "
        "another client gets it; empty = none.")),
    live(integer_key<&config::pool, &pool_section::size>(
        "pool.size", 1, 10000, "Server connections per (database, user).")),
    string_list_key<&config::pool, &pool_section::unpooled_databases>(
        "pool.unpooled_databases",
        "Server databases whose connections are never pooled: a client there keeps its own "
        "server connection, closed when it leaves (so `CREATE DATABASE` can copy a template)."),
    integer_key<&config::process, &process_section::peer_id>(
        "process.peer_id", 0, k_max_peer_id,
        "This instance's number among its `[peers]`, carried in every cancel key it hands out, "
        "so that a cancel request that reaches another instance is forwarded here; 0 = no "
        "peering."),
    integer_key<&config::process, &process_section::workers>(
        "process.workers", 0, 256, "Threads running client sessions; 0 = one per CPU core."),
    live(integer_key<&config::server, &server_section::connect_timeout_ms>(
        "server.connect_timeout_ms", 1, k_max_timeout_ms,
        "Limit in ms for TCP connect, TLS and authentication to PostgreSQL, and for delivering a "
        "cancel request.")),
    string_key<&config::server, &server_section::host>("server.host", true,
                                                       "PostgreSQL host (IP address or name)."),
    integer_key<&config::server, &server_section::port>("server.port", 1, 65535,
                                                        "PostgreSQL port."),
    choice_key<&config::server, &server_section::tls, k_server_tls>(
        "server.tls", {}, "TLS toward PostgreSQL, as libpq's `sslmode`."),
    string_key<&config::server, &server_section::tls_ca_file>(
        "server.tls_ca_file", false, "CA bundle for `verify-full`; empty = the system store."),
};
// Sorted so lookups can bisect and the reference reads in order.
static_assert(std::ranges::is_sorted(k_keys, {}, &key_row::name));

}  // namespace

std::span<const key_row> all_keys() { return k_keys; }

const key_row* find_key(std::string_view name) {
  auto it = std::ranges::lower_bound(k_keys, name, {}, &key_row::name);
  return it != k_keys.end() && it->name == name ? &*it : nullptr;
}

std::string_view section_of(std::string_view name) { return name.substr(0, name.find('.')); }
std::string_view key_of(std::string_view name) { return name.substr(name.find('.') + 1); }

namespace {

struct unit_factor {
  std::string_view name;
  std::int64_t milliseconds_or_bytes;
};
constexpr std::array<unit_factor, 5> k_duration_units = {
    {{"ms", 1}, {"s", 1000}, {"min", 60'000}, {"h", 3'600'000}, {"d", 86'400'000}}};
constexpr std::array<unit_factor, 5> k_size_units = {
    {{"B", 1}, {"KiB", 1ll << 10}, {"MiB", 1ll << 20}, {"GiB", 1ll << 30}, {"TiB", 1ll << 40}}};

}  // namespace

std::string_view unit_names(key_unit unit) {
  return unit == key_unit::bytes ? "B, KiB, MiB, GiB, TiB" : "ms, s, min, h, d";
}

std::optional<std::int64_t> parse_quantity(std::string_view text, key_unit unit,
                                           std::string& problem) {
  const auto trim = [](std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return s;
  };
  text = trim(text);
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const std::string_view suffix = trim(text.substr(digits));
  if (digits == 0 || suffix.empty() || suffix.front() == '.' || unit == key_unit::none) {
    problem = "expected a whole number and a unit (" + std::string(unit_names(unit)) + ")";
    return std::nullopt;
  }
  std::int64_t number = 0;
  for (char c : text.substr(0, digits)) {
    if (number > (std::numeric_limits<std::int64_t>::max() - 9) / 10) {
      problem = "too large";
      return std::nullopt;
    }
    number = number * 10 + (c - '0');
  }
  const std::span<const unit_factor> units =
      unit == key_unit::bytes ? std::span<const unit_factor>(k_size_units) : k_duration_units;
  const auto it = std::ranges::find(units, suffix, &unit_factor::name);
  if (it == units.end()) {
    problem =
        "unknown unit \"" + std::string(suffix) + "\" (use " + std::string(unit_names(unit)) + ")";
    return std::nullopt;
  }
  if (number > std::numeric_limits<std::int64_t>::max() / it->milliseconds_or_bytes) {
    problem = "too large";
    return std::nullopt;
  }
  const std::int64_t scaled = number * it->milliseconds_or_bytes;
  if (unit == key_unit::seconds) {
    if (scaled % 1000 != 0) {
      problem = "not a whole number of seconds";
      return std::nullopt;
    }
    return scaled / 1000;
  }
  return scaled;
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string quoted_list(std::span<const std::string_view> values) {
  std::string out;
  for (auto v : values) out += (out.empty() ? "" : ", ") + quoted(v);
  return out;
}

std::string render(const key_row& row, const setting& s) {
  switch (row.type) {
    case key_type::integer:
      return std::to_string(s.number);
    case key_type::boolean:
      return s.number ? "true" : "false";
    case key_type::choice:
      return quoted(row.choices[static_cast<std::size_t>(s.number)]);
    case key_type::string_list: {
      std::string out;
      for (const auto& item : s.list) out += (out.empty() ? "" : ", ") + quoted(item);
      return "[" + out + "]";
    }
    case key_type::string:
      break;
  }
  return quoted(s.text);
}

std::string default_of(const key_row& row) { return render(row, row.load(config{})); }

std::string example_quantity(const key_row& row) {
  switch (row.unit) {
    case key_unit::milliseconds:
      return "\"30s\"";
    case key_unit::seconds:
      return "\"10min\"";
    case key_unit::bytes:
      return "\"512MiB\"";
    case key_unit::none:
      break;
  }
  return default_of(row);
}

std::string type_cell(const key_row& row) {
  switch (row.type) {
    case key_type::string:
      return "string";
    case key_type::integer: {
      const std::string range = std::to_string(row.min) + " to " + std::to_string(row.max);
      switch (row.unit) {
        case key_unit::none:
          return "integer, " + range;
        case key_unit::milliseconds:
          return "integer ms, " + range + ", or a duration (`" + example_quantity(row) + "`)";
        case key_unit::seconds:
          return "integer seconds, " + range + ", or a duration (`" + example_quantity(row) + "`)";
        case key_unit::bytes:
          return "integer bytes, " + range + ", or a size (`" + example_quantity(row) + "`)";
      }
      return range;
    }
    case key_type::boolean:
      return "boolean";
    case key_type::string_list:
      return "list of strings";
    case key_type::choice:
      break;
  }
  std::string out;
  for (auto c : row.choices) out += (out.empty() ? "`" : ", `") + std::string(c) + "`";
  if (!row.unsupported.empty()) {
    out += " (not yet:";
    for (auto c : row.unsupported) out += " `" + std::string(c) + "`";
    out += ")";
  }
  return out;
}

}  // namespace pgstash::conf::detail
