// The config loader: toml++ turns text into a tree, then one pass over the
// tree applies it to a default `config` through the key table
// (config_keys.cpp), and a final pass checks keys that only make sense
// together. Problems are collected, never thrown, so one run of
// `--check-config` shows them all.
//
// toml++ is confined to this file and the [[cache.rules]] reader: it is a
// large header set, and keeping it out of config.hpp keeps its compile cost
// and macros away from every user.
#include "conf/config.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <span>
#include <string_view>
#include <utility>

#include <toml++/toml.h>

#include "conf/cache_rules_reader.hpp"
#include "conf/config_keys.hpp"

namespace pgstash::conf {
namespace {

using namespace detail;

constexpr std::string_view k_databases = "databases";
constexpr std::string_view k_peers = "peers";

// Every section name, sorted, [databases] and [peers] included.
std::vector<std::string_view> section_names() {
  std::vector<std::string_view> names{k_databases, k_peers};
  for (const auto& row : all_keys()) names.push_back(section_of(row.name));
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

// The known keys most likely meant by `key` written under `section` (empty
// for top level), as "a" or "a or b" when equally close, or "" if none is
// close. A right key in the wrong section costs one edit, so `tls` under
// [listen] suggests server.tls.
std::string nearest_key(std::string_view section, std::string_view key) {
  std::string best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  for (const auto& row : all_keys()) {
    std::size_t distance =
        edit_distance(key, key_of(row.name)) + (section_of(row.name) == section ? 0 : 1);
    if (distance == best_distance) best += " or " + std::string(row.name);
    if (distance < best_distance) best = row.name, best_distance = distance;
  }
  return is_near(best_distance, key) ? best : std::string{};
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
      if (name == k_peers) return read_peers(*table);
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
                        : "did you mean " + near + "?");
  }

  void read_key(std::string_view section, const toml::key& key, const toml::node& node) {
    std::string name = std::string(section) + "." + std::string(key.str());
    if (name == k_cache_rules) {
      cfg_.cache.rules = read_cache_rules(
          node, [this](const toml::source_region& at, std::string message, std::string hint) {
            report(place_of(at), std::move(message), std::move(hint));
          });
      return;
    }
    const key_row* row = find_key(name);
    if (row == nullptr) {
      auto near = nearest_key(section, key.str());
      std::string hint;
      if (!near.empty()) {
        hint = "did you mean " + near + "?";
      } else {
        hint = "[" + std::string(section) + "] accepts";
        for (const auto& r : all_keys()) {
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
  std::optional<setting> in_range(const key_row& row, std::int64_t n, place at) {
    if (n >= row.min && n <= row.max) return number_setting(n);
    report(at,
           std::string(row.name) + " must be between " + std::to_string(row.min) + " and " +
               std::to_string(row.max) + ", not " + std::to_string(n),
           "the default is " + default_of(row));
    return std::nullopt;
  }

  std::optional<setting> parse_value(const key_row& row, const toml::node& node) {
    const place at = place_of(node.source());
    const std::string name(row.name);
    const bool want_integer = row.type == key_type::integer;
    const bool want_boolean = row.type == key_type::boolean;
    const bool want_list = row.type == key_type::string_list;
    if (want_integer && row.unit != key_unit::none && node.is_string()) {
      std::string problem;
      const auto n = parse_quantity(node.as_string()->get(), row.unit, problem);
      if (!n) {
        report(at, name + ": " + problem,
               "e.g. " + std::string(key_of(row.name)) + " = " + example_quantity(row));
        return std::nullopt;
      }
      return in_range(row, *n, at);
    }
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
      case key_type::integer:
        return in_range(row, node.as_integer()->get(), at);
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

  void read_peers(const toml::table& table) {
    for (auto&& [key, node] : table) {
      const std::string name = "peers." + std::string(key.str());
      std::uint32_t id = 0;
      const auto [end, ec] =
          std::from_chars(key.str().data(), key.str().data() + key.str().size(), id);
      if (ec != std::errc() || end != key.str().data() + key.str().size() || id == 0 ||
          id > k_max_peer_id) {
        report(place_of(key.source()),
               "peer id " + quoted(key.str()) + " is not a number from 1 to " +
                   std::to_string(k_max_peer_id),
               "write <peer_id> = \"host:port\", e.g. 2 = \"10.0.0.2:6432\"");
        continue;
      }
      const auto* value = node.as_string();
      const std::string text = value ? value->get() : "";
      const auto colon = text.rfind(':');
      std::uint32_t port = 0;
      const char* port_end = text.data() + text.size();
      const bool parsed =
          colon != std::string::npos && colon > 0 &&
          std::from_chars(text.data() + colon + 1, port_end, port).ptr == port_end &&
          colon + 1 < text.size() && port >= 1 && port <= 65535;
      if (!parsed) {
        report(place_of(node.source()), name + " must be \"host:port\"",
               "the address peer " + std::to_string(id) + " accepts clients on, e.g. " +
                   quoted("10.0.0." + std::to_string(id) + ":6432"));
        continue;
      }
      cfg_.peers[id] = {text.substr(0, colon), static_cast<std::uint16_t>(port)};
      if (!set_at_.contains(k_peers)) set_at_[k_peers] = place_of(key.source());
    }
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
    auto method = find_key("auth.method")->choices[static_cast<std::size_t>(cfg_.auth.method)];
    if (cfg_.auth.method != auth_method::trust && cfg_.auth.file.empty() &&
        cfg_.auth.user.empty()) {
      report(set_at_["auth.method"], "auth.file is required when auth.method is " + quoted(method),
             "set file = \"/path/to/userlist.txt\" under [auth], or user = \"...\" to look "
             "secrets up with auth.query");
    }
    if (cfg_.auth.method == auth_method::trust && !cfg_.auth.user.empty()) {
      report(set_at_["auth.user"], "auth.user is never used when auth.method is \"trust\"",
             "set method = \"scram-sha-256\" or \"md5\" under [auth], or remove user");
    }
    const auto& l = cfg_.listen;
    if (!parse_file_mode(l.unix_socket_mode)) {
      report(set_at_["listen.unix_socket_mode"],
             "listen.unix_socket_mode " + quoted(l.unix_socket_mode) + " is not an octal file mode",
             "e.g. unix_socket_mode = \"0777\"");
    }
    const std::string& slot = cfg_.invalidation.slot;
    if (slot.size() > 40 || !std::ranges::all_of(slot, [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        })) {
      report(set_at_["invalidation.slot"],
             "invalidation.slot " + quoted(slot) +
                 " is not a replication slot name prefix (lower-case letters, digits and _, at "
                 "most 40)",
             "e.g. slot = \"pgstash_a\"");
    }
    if (!cfg_.peers.empty() && cfg_.process.peer_id == 0) {
      report(set_at_[k_peers], "[peers] is set without process.peer_id",
             "give this instance its own number, e.g. peer_id = 1 under [process]");
    }
    const auto& c = cfg_.cache;
    if (c.enabled && c.consistency == cache_consistency::strict && !cfg_.invalidation.replication) {
      report(set_at_["cache.consistency"],
             "cache.consistency \"strict\" needs invalidation.replication = true",
             "set replication = true under [invalidation] (wal_level = logical on the server), "
             "or consistency = \"instance\"");
    }
    if (cfg_.invalidation.persistent_slot && !cfg_.invalidation.replication) {
      report(set_at_["invalidation.persistent_slot"],
             "invalidation.persistent_slot needs invalidation.replication = true",
             "set replication = true under [invalidation] as well");
    }
    if (!c.warm_statements.empty() && (c.warm_database.empty() || c.warm_user.empty())) {
      report(set_at_["cache.warm_statements"],
             "cache.warm_statements needs cache.warm_database and cache.warm_user",
             "name the database and the user they run as, e.g. warm_database = \"shop\"");
    }
    if (cfg_.admin.port != 0 && cfg_.admin.port == l.port) {
      report(set_at_["admin.port"], "admin.port is listen.port (" + std::to_string(l.port) + ")",
             "give the admin port a port of its own, e.g. port = 6433");
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
      "| key | type | default | on reload | description |\n"
      "|---|---|---|---|---|\n";
  for (const auto& row : all_keys()) {
    out += "| `" + std::string(row.name) + "` | " + type_cell(row) + " | `" + default_of(row) +
           "` | " + (row.live ? "applied" : "restart") + " | " + std::string(row.doc) + " |\n";
  }
  out +=
      "| `cache.rules` | array of tables (`[[cache.rules]]`) | `[]` | restart | Exceptions to "
      "the cache's defaults, the first that matches applying: `table` (results that read it, "
      "through views too), `statement` (an ILIKE pattern on the statement's text), or both; "
      "`action` `\"never\"`, `\"cache\"` (the default) or `\"force\"` (also when it calls "
      "functions pgstash does not trust, or time functions); `ttl` seconds (0 = until "
      "invalidated; `cache.default_ttl` if unset). |\n";
  out +=
      "| `databases.<name>` | string | none | restart | Server database that client database "
      "`<name>` maps to. With no [databases] entries every name passes through unchanged; "
      "otherwise names not listed are refused with SQLSTATE 3D000. |\n";
  out +=
      "| `peers.<id>` | string, `\"host:port\"` | none | restart | Where peer `<id>` (its "
      "`process.peer_id`, 1 to 255) accepts clients, as an address that reaches that instance "
      "only (a host, or the directory of its unix socket): a cancel request carrying that id is "
      "forwarded there. The instance's own entry may be listed too (one file for all). |\n";
  return out;
}

bool applies_on_reload(std::string_view key) {
  const key_row* row = find_key(key);
  return row != nullptr && row->live;
}

std::vector<std::pair<std::string, std::string>> current_settings(const config& cfg) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& row : all_keys()) {
    const setting value = row.load(cfg);
    const bool hidden = row.secret && !value.text.empty();
    out.emplace_back(std::string(row.name), hidden ? quoted("********") : render(row, value));
  }
  out.emplace_back(std::string(k_cache_rules), render_cache_rules(cfg.cache.rules));
  for (const auto& [client, server] : cfg.databases)
    out.emplace_back("databases." + quoted(client), quoted(server));
  for (const auto& [id, peer] : cfg.peers)
    out.emplace_back("peers." + std::to_string(id),
                     quoted(peer.host + ":" + std::to_string(peer.port)));
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
