// The config loader: toml++ turns text into a tree, then one pass over the
// tree applies it to a default `config` through the key table below, and a
// final pass checks keys that only make sense together. Problems are
// collected, never thrown, so one run of `--check-config` shows them all.
//
// toml++ is confined to this file: it is a large header set, and keeping it
// out of config.hpp keeps its compile cost and macros away from every user.
#include "conf/config.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include <toml++/toml.h>

namespace pgstash::conf {
namespace {

enum class key_type { string, integer, boolean, choice, string_list };

// A value from the file, already checked against its row.
struct setting {
  std::int64_t number = 0;  // integer keys; 0 or 1 for booleans; the index into choices
  std::string text;         // string keys
  std::vector<std::string> list;  // string_list keys
};

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

// One config key. Rows are built by the *_key factories below, which bind
// `store` and `load` to one struct member.
struct key_row {
  std::string_view name;  // "section.key"
  key_type type = key_type::string;
  std::string_view doc;
  // integer: inclusive range. string: min is the minimum length (0 or 1).
  std::int64_t min = 0;
  std::int64_t max = 0;
  // choice: accepted spellings, in the member enum's declaration order.
  std::span<const std::string_view> choices = {};
  // choice: spellings that are documented but refused for now.
  std::span<const std::string_view> unsupported = {};
  void (*store)(config&, const setting&) = nullptr;
  setting (*load)(const config&) = nullptr;
};

template <auto Section, auto Member>
using member_type = std::remove_cvref_t<decltype(std::declval<config&>().*Section.*Member)>;

template <auto Section, auto Member>
consteval key_row string_key(std::string_view name, bool non_empty, std::string_view doc) {
  return {.name = name,
          .type = key_type::string,
          .doc = doc,
          .min = non_empty ? 1 : 0,
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

constexpr std::array<std::string_view, 3> k_auth_methods = {"trust", "md5", "scram-sha-256"};
constexpr std::array<std::string_view, 6> k_log_levels = {"trace", "debug", "info",
                                                          "warn",  "error", "off"};
constexpr std::array<std::string_view, 2> k_pool_modes = {"session", "transaction"};
constexpr std::array<std::string_view, 1> k_pool_modes_later = {"statement"};
constexpr std::array<std::string_view, 4> k_server_tls = {"disable", "prefer", "require",
                                                          "verify-full"};
constexpr std::int64_t k_max_timeout_ms = 86'400'000;  // one day

constexpr std::array k_keys = {
    string_key<&config::auth, &auth_section::file>(
        "auth.file", false,
        "Userlist file (`\"user\" \"secret\"` per line); required unless `auth.method` is "
        "`trust`."),
    choice_key<&config::auth, &auth_section::method, k_auth_methods>(
        "auth.method", {}, "How clients prove who they are."),
    integer_key<&config::cache, &cache_section::compress_min_size>(
        "cache.compress_min_size", 64, 1'073'741'824,
        "Cached responses at least this many bytes are stored zstd-compressed."),
    integer_key<&config::cache, &cache_section::default_ttl>(
        "cache.default_ttl", 0, 31'536'000,
        "Seconds a cached result may be served at most; 0 = until invalidated. Bounds how "
        "long a write that bypasses pgstash can go unseen."),
    boolean_key<&config::cache, &cache_section::enabled>(
        "cache.enabled", "Answer repeated cacheable SELECTs from the result cache."),
    integer_key<&config::cache, &cache_section::max_entry_size>(
        "cache.max_entry_size", 1024, 1'073'741'824,
        "A response larger than this many bytes is never cached (it streams through)."),
    integer_key<&config::cache, &cache_section::max_size>(
        "cache.max_size", 1'048'576, 1'099'511'627'776,
        "Bytes of cached responses kept; least recently used entries are evicted beyond it."),
    string_key<&config::cache, &cache_section::path>(
        "cache.path", true,
        "Directory of the cache's LMDB files (created; entries of an earlier run are "
        "discarded)."),
    integer_key<&config::limits, &limits_section::analysis_cache_entries>(
        "limits.analysis_cache_entries", 1, 10'000'000,
        "Statement analyses memoized per worker thread."),
    integer_key<&config::limits, &limits_section::client_idle_timeout_ms>(
        "limits.client_idle_timeout_ms", 0, k_max_timeout_ms,
        "A client silent this many ms is disconnected; 0 = never."),
    integer_key<&config::limits, &limits_section::client_login_timeout_ms>(
        "limits.client_login_timeout_ms", 1, k_max_timeout_ms,
        "A client must finish startup and authentication within this many ms."),
    integer_key<&config::limits, &limits_section::idle_transaction_timeout_ms>(
        "limits.idle_transaction_timeout_ms", 0, k_max_timeout_ms,
        "A client silent this many ms inside a transaction is disconnected; 0 = never."),
    integer_key<&config::limits, &limits_section::io_buffer_size>(
        "limits.io_buffer_size", 4096, 16'777'216, "Bytes buffered per direction of a session."),
    integer_key<&config::limits, &limits_section::max_message_size>(
        "limits.max_message_size", 1024, 1'073'741'824,
        "Largest protocol message accepted from a client or server, in bytes."),
    string_key<&config::listen, &listen_section::host>("listen.host", true,
                                                       "Address to accept clients on."),
    integer_key<&config::listen, &listen_section::max_client_conn>(
        "listen.max_client_conn", 1, 1'000'000,
        "Clients beyond this many are refused with SQLSTATE 53300."),
    integer_key<&config::listen, &listen_section::max_replication_conn>(
        "listen.max_replication_conn", 0, 10000,
        "Replication clients (startup parameter `replication`) beyond this many are refused "
        "with SQLSTATE 53300; each has its own server connection, outside the pools and "
        "`listen.max_client_conn`."),
    integer_key<&config::listen, &listen_section::port>("listen.port", 1, 65535,
                                                        "TCP port to accept clients on."),
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
    choice_key<&config::log, &log_section::level, k_log_levels>("log.level", {},
                                                                "Least severe level logged."),
    integer_key<&config::pool, &pool_section::cleanup_timeout_ms>(
        "pool.cleanup_timeout_ms", 1, k_max_timeout_ms,
        "After its client leaves, a server connection must be clean and idle again within "
        "this many ms (cancel, ROLLBACK, reset) or it is closed."),
    integer_key<&config::pool, &pool_section::max_db_connections>(
        "pool.max_db_connections", 0, 100000,
        "Server connections per database, all users together; 0 = no limit."),
    integer_key<&config::pool, &pool_section::max_prepared_statements>(
        "pool.max_prepared_statements", 1, 100000,
        "Transaction mode: prepared statements kept per server connection (least recently "
        "used are closed)."),
    integer_key<&config::pool, &pool_section::min_pool_size>(
        "pool.min_pool_size", 0, 10000,
        "Server connections kept open per (database, user) once that pool was used."),
    choice_key<&config::pool, &pool_section::mode, k_pool_modes>(
        "pool.mode", k_pool_modes_later,
        "`transaction`: a client holds a server connection only during a transaction; "
        "`session`: for its whole session."),
    integer_key<&config::pool, &pool_section::query_wait_timeout_ms>(
        "pool.query_wait_timeout_ms", 1, k_max_timeout_ms,
        "A client waits this many ms for a server connection, then gets an error (53300)."),
    integer_key<&config::pool, &pool_section::reserve_pool_size>(
        "pool.reserve_pool_size", 0, 10000,
        "Extra server connections per (database, user) for clients that waited "
        "`pool.reserve_pool_timeout_ms`."),
    integer_key<&config::pool, &pool_section::reserve_pool_timeout_ms>(
        "pool.reserve_pool_timeout_ms", 1, k_max_timeout_ms,
        "How long a client waits before the reserve pool may serve it."),
    integer_key<&config::pool, &pool_section::server_check_delay_ms>(
        "pool.server_check_delay_ms", 0, k_max_timeout_ms,
        "Idle time after which a connection is checked before reuse."),
    string_key<&config::pool, &pool_section::server_check_query>(
        "pool.server_check_query", false,
        "Run on a connection idle longer than `pool.server_check_delay_ms` before reuse; "
        "empty = no check."),
    integer_key<&config::pool, &pool_section::server_idle_timeout_ms>(
        "pool.server_idle_timeout_ms", 1, k_max_timeout_ms,
        "Server connections idle in the pool longer than this are closed."),
    integer_key<&config::pool, &pool_section::server_lifetime_ms>(
        "pool.server_lifetime_ms", 1, k_max_timeout_ms,
        "Server connections older than this are closed when released."),
    string_key<&config::pool, &pool_section::server_reset_query>(
        "pool.server_reset_query", false,
        "Session mode (and pinned transaction-mode clients): run on a server connection before "
        "another client gets it; empty = none."),
    integer_key<&config::pool, &pool_section::size>("pool.size", 1, 10000,
                                                    "Server connections per (database, user)."),
    string_list_key<&config::pool, &pool_section::unpooled_databases>(
        "pool.unpooled_databases",
        "Server databases whose connections are never pooled: a client there keeps its own "
        "server connection, closed when it leaves (so `CREATE DATABASE` can copy a template)."),
    integer_key<&config::process, &process_section::workers>(
        "process.workers", 0, 256, "Threads running client sessions; 0 = one per CPU core."),
    integer_key<&config::server, &server_section::connect_timeout_ms>(
        "server.connect_timeout_ms", 1, k_max_timeout_ms,
        "Limit in ms for TCP connect, TLS and authentication to PostgreSQL, and for delivering a "
        "cancel request."),
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

constexpr std::string_view k_databases = "databases";

const key_row* find_key(std::string_view name) {
  auto it = std::ranges::lower_bound(k_keys, name, {}, &key_row::name);
  return it != k_keys.end() && it->name == name ? &*it : nullptr;
}

std::string_view section_of(std::string_view name) { return name.substr(0, name.find('.')); }
std::string_view key_of(std::string_view name) { return name.substr(name.find('.') + 1); }

// Every section name, sorted, [databases] included.
std::vector<std::string_view> section_names() {
  std::vector<std::string_view> names{k_databases};
  for (const auto& row : k_keys) names.push_back(section_of(row.name));
  std::ranges::sort(names);
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

bool is_section(std::string_view name) { return std::ranges::binary_search(section_names(), name); }

// Optimal string alignment distance: Levenshtein plus adjacent
// transpositions, so the common "prot" for "port" costs one edit.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// Close enough to be a typo rather than a different word.
bool is_near(std::size_t distance, std::string_view written) {
  return distance <= std::max<std::size_t>(2, written.size() / 3);
}

// The known key most likely meant by `key` written under `section` (empty
// for top level), or "" if none is close. A right key in the wrong section
// costs one edit, so `tls` under [listen] suggests server.tls.
std::string_view nearest_key(std::string_view section, std::string_view key) {
  std::string_view best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  for (const auto& row : k_keys) {
    std::size_t distance =
        edit_distance(key, key_of(row.name)) + (section_of(row.name) == section ? 0 : 1);
    if (distance < best_distance) best = row.name, best_distance = distance;
  }
  return is_near(best_distance, key) ? best : std::string_view{};
}

std::string_view nearest_of(std::span<const std::string_view> names, std::string_view written) {
  std::string_view best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  for (auto name : names) {
    std::size_t distance = edit_distance(written, name);
    if (distance < best_distance) best = name, best_distance = distance;
  }
  return is_near(best_distance, written) ? best : std::string_view{};
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// `"a", "b", "c"`
std::string quoted_list(std::span<const std::string_view> values) {
  std::string out;
  for (auto v : values) out += (out.empty() ? "" : ", ") + quoted(v);
  return out;
}

// The value as it would be written in the file.
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

std::string_view type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

struct place {
  int line = 0;
  int column = 0;
};

place place_of(const toml::source_region& r) {
  return {static_cast<int>(r.begin.line), static_cast<int>(r.begin.column)};
}

// One load: applies a parsed tree to a default config, collecting problems.
class loader {
 public:
  explicit loader(const std::string& name) : name_(name) {}

  load_result run(const toml::table& root) {
    for (auto&& [key, node] : root) read_top(key, node);
    check_combinations();
    std::ranges::stable_sort(errors_, {},
                             [](const diagnostic& d) { return std::pair(d.line, d.column); });
    load_result result;
    if (errors_.empty()) result.cfg = std::move(cfg_);
    result.errors = std::move(errors_);
    return result;
  }

 private:
  void report(place at, std::string message, std::string hint) {
    errors_.push_back({name_, at.line, at.column, std::move(message), std::move(hint)});
  }

  void read_top(const toml::key& key, const toml::node& node) {
    std::string_view name = key.str();
    if (const auto* table = node.as_table()) {
      if (name == k_databases) return read_databases(*table);
      if (is_section(name)) {
        for (auto&& [k, v] : *table) read_key(name, k, v);
        return;
      }
      auto sections = section_names();
      auto near = nearest_of(sections, name);
      std::string hint;
      if (!near.empty()) {
        hint = "did you mean [" + std::string(near) + "]?";
      } else {
        hint = "sections are";
        for (auto s : sections) hint += " [" + std::string(s) + "]";
      }
      return report(place_of(key.source()), "unknown section [" + std::string(name) + "]", hint);
    }
    if (is_section(name)) {
      return report(
          place_of(node.source()),
          std::string(name) + " must be a table, not " + std::string(type_name(node.type())),
          "start the section with [" + std::string(name) + "]");
    }
    auto near = nearest_key("", name);
    report(place_of(key.source()), "unknown key " + quoted(name),
           near.empty() ? "keys belong in a section such as [listen]"
                        : "did you mean " + std::string(near) + "?");
  }

  void read_key(std::string_view section, const toml::key& key, const toml::node& node) {
    std::string name = std::string(section) + "." + std::string(key.str());
    const key_row* row = find_key(name);
    if (row == nullptr) {
      auto near = nearest_key(section, key.str());
      std::string hint;
      if (!near.empty()) {
        hint = "did you mean " + std::string(near) + "?";
      } else {
        hint = "[" + std::string(section) + "] accepts";
        for (const auto& r : k_keys) {
          if (section_of(r.name) == section) hint += " " + std::string(key_of(r.name));
        }
      }
      return report(place_of(key.source()), "unknown key " + quoted(name), hint);
    }
    if (auto value = parse_value(*row, node)) {
      row->store(cfg_, *value);
      set_at_[row->name] = place_of(node.source());
    }
  }

  // The setting `node` holds for `row`, or nullopt after reporting why not.
  std::optional<setting> parse_value(const key_row& row, const toml::node& node) {
    const place at = place_of(node.source());
    const std::string name(row.name);
    const bool want_integer = row.type == key_type::integer;
    const bool want_boolean = row.type == key_type::boolean;
    const bool want_list = row.type == key_type::string_list;
    if (want_integer   ? !node.is_integer()
        : want_boolean ? !node.is_boolean()
        : want_list    ? !node.is_array()
                       : !node.is_string()) {
      std::string example = default_of(row);
      if (example == "\"\"") example = "\"...\"";
      std::string hint = row.type == key_type::choice
                             ? "expected one of " + quoted_list(row.choices)
                             : "e.g. " + std::string(key_of(row.name)) + " = " + example;
      report(at,
             name + " must be " +
                 (want_integer   ? "an integer"
                  : want_boolean ? "true or false"
                  : want_list    ? "a list of strings"
                                 : "a string") +
                 ", not " +
                 std::string(type_name(node.type())),
             hint);
      return std::nullopt;
    }
    switch (row.type) {
      case key_type::integer: {
        std::int64_t n = node.as_integer()->get();
        if (n < row.min || n > row.max) {
          report(at,
                 name + " must be between " + std::to_string(row.min) + " and " +
                     std::to_string(row.max) + ", not " + std::to_string(n),
                 "the default is " + default_of(row));
          return std::nullopt;
        }
        return number_setting(n);
      }
      case key_type::boolean:
        return number_setting(node.as_boolean()->get() ? 1 : 0);
      case key_type::string_list: {
        setting out;
        for (const toml::node& item : *node.as_array()) {
          const auto* text = item.as_string();
          if (text == nullptr || text->get().empty()) {
            report(place_of(item.source()), name + " must hold only non-empty strings",
                   "e.g. " + std::string(key_of(row.name)) + " = " + default_of(row));
            return std::nullopt;
          }
          out.list.push_back(text->get());
        }
        return out;
      }
      case key_type::string: {
        const std::string& s = node.as_string()->get();
        if (static_cast<std::int64_t>(s.size()) < row.min) {
          report(at, name + " must not be empty", "the default is " + default_of(row));
          return std::nullopt;
        }
        return text_setting(s);
      }
      case key_type::choice:
        break;
    }
    const std::string& s = node.as_string()->get();
    if (auto it = std::ranges::find(row.choices, s); it != row.choices.end()) {
      return number_setting(it - row.choices.begin());
    }
    if (std::ranges::find(row.unsupported, s) != row.unsupported.end()) {
      report(at, name + " " + quoted(s) + " is not supported yet",
             "supported: " + quoted_list(row.choices));
      return std::nullopt;
    }
    auto near = nearest_of(row.choices, s);
    report(at, "invalid " + name + " " + quoted(s),
           near.empty() ? "expected one of " + quoted_list(row.choices)
                        : "did you mean " + quoted(near) + "?");
    return std::nullopt;
  }

  void read_databases(const toml::table& table) {
    for (auto&& [key, node] : table) {
      std::string name = "databases." + quoted(key.str());
      if (key.str().empty()) {
        report(place_of(key.source()), "database name must not be empty",
               "write \"client_name\" = \"server_database\"");
        continue;
      }
      const auto* value = node.as_string();
      if (value == nullptr) {
        report(place_of(node.source()),
               name + " must be a string, not " + std::string(type_name(node.type())),
               node.is_table() ? "quote names that contain dots: \"a.b\" = \"server_database\""
                               : "write \"client_name\" = \"server_database\"");
        continue;
      }
      if (value->get().empty()) {
        report(place_of(node.source()), name + " must not be empty",
               "give the server database name, e.g. " + quoted(key.str()));
        continue;
      }
      cfg_.databases.emplace(std::string(key.str()), value->get());
    }
  }

  // Keys that are each valid alone but not together.
  void check_combinations() {
    if (cfg_.auth.method != auth_method::trust && cfg_.auth.file.empty()) {
      auto method = k_auth_methods[static_cast<std::size_t>(cfg_.auth.method)];
      report(set_at_["auth.method"], "auth.file is required when auth.method is " + quoted(method),
             "set file = \"/path/to/userlist.txt\" under [auth]");
    }
    const auto& l = cfg_.listen;
    if (!parse_file_mode(l.unix_socket_mode)) {
      report(set_at_["listen.unix_socket_mode"],
             "listen.unix_socket_mode " + quoted(l.unix_socket_mode) + " is not an octal file mode",
             "e.g. unix_socket_mode = \"0777\"");
    }
    if (!l.tls_cert_file.empty() && l.tls_key_file.empty()) {
      report(set_at_["listen.tls_cert_file"],
             "listen.tls_cert_file is set without listen.tls_key_file",
             "set both to enable TLS for clients, or neither");
    }
    if (l.tls_cert_file.empty() && !l.tls_key_file.empty()) {
      report(set_at_["listen.tls_key_file"],
             "listen.tls_key_file is set without listen.tls_cert_file",
             "set both to enable TLS for clients, or neither");
    }
  }

  const std::string& name_;
  config cfg_;
  std::vector<diagnostic> errors_;
  std::map<std::string_view, place> set_at_;  // key -> where the file set it
};

std::string type_cell(const key_row& row) {
  switch (row.type) {
    case key_type::string:
      return "string";
    case key_type::integer:
      return "integer, " + std::to_string(row.min) + " to " + std::to_string(row.max);
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

}  // namespace

std::optional<unsigned> parse_file_mode(std::string_view text) {
  if (text.empty() || text.size() > 4) return std::nullopt;
  unsigned mode = 0;
  for (char c : text) {
    if (c < '0' || c > '7') return std::nullopt;
    mode = mode * 8 + static_cast<unsigned>(c - '0');
  }
  return mode;
}

std::string format(const diagnostic& d) {
  std::string out = d.file;
  if (d.line > 0) {
    out += ":" + std::to_string(d.line);
    if (d.column > 0) out += ":" + std::to_string(d.column);
  }
  out += ": " + d.message;
  if (!d.hint.empty()) out += " (" + d.hint + ")";
  return out;
}

load_result load_string(const std::string& text, const std::string& name) {
  toml::table root;
  try {
    root = toml::parse(text, std::string_view(name));
  } catch (const toml::parse_error& e) {
    const auto& at = e.source().begin;
    load_result result;
    result.errors.push_back({name, static_cast<int>(at.line), static_cast<int>(at.column),
                             std::string(e.description()), "TOML syntax, see https://toml.io"});
    return result;
  }
  return loader(name).run(root);
}

load_result load_file(const std::string& path) {
  std::string text;
  if (auto error = detail::read_text_file(path, text)) {
    load_result result;
    result.errors.push_back(std::move(*error));
    return result;
  }
  return load_string(text, path);
}

std::string reference_markdown() {
  std::string out =
      "| key | type | default | description |\n"
      "|---|---|---|---|\n";
  for (const auto& row : k_keys) {
    out += "| `" + std::string(row.name) + "` | " + type_cell(row) + " | `" + default_of(row) +
           "` | " + std::string(row.doc) + " |\n";
  }
  out +=
      "| `databases.<name>` | string | none | Server database that client database `<name>` "
      "maps to. With no [databases] entries every name passes through unchanged; otherwise "
      "names not listed are refused with SQLSTATE 3D000. |\n";
  return out;
}

namespace detail {

std::optional<diagnostic> read_text_file(const std::string& path, std::string& out) {
  auto failed = [&](int error) {
    return diagnostic{path, 0, 0, "cannot read file: " + std::string(std::strerror(error)), ""};
  };
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return failed(errno);
  out.clear();
  char buffer[8192];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) out.append(buffer, n);
  // fread on a directory opens fine and fails here with EISDIR.
  int error = std::ferror(f) ? errno : 0;
  std::fclose(f);
  if (error != 0) return failed(error);
  return std::nullopt;
}

}  // namespace detail
}  // namespace pgstash::conf
