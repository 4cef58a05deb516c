// What a server connection carries over from one client to the next in
// transaction mode: the session settings in effect, the SQL-level prepared
// statements (PREPARE), and the protocol-level prepared statements pgstash
// created on it. Plain data: the proxy decides what it means; the pool only
// keeps it with the connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>

namespace pgstash::pool {

// A session setting's value, in the form it can be re-applied in.
struct setting_value {
  // true: `text` is the value itself (from a startup packet or set_config),
  // applied with set_config(); false: `text` is SQL that follows
  // "SET name TO", taken verbatim from the client's statement.
  bool raw = true;
  std::string text;
  bool operator==(const setting_value&) const = default;
};

// name (lower case) -> value, for settings that differ from the server
// connection's defaults.
using settings_map = std::map<std::string, setting_value>;

// Server-side prepared statement names, least recently used first out,
// each with the version it was prepared at (when the client that defined it
// Parsed it; see proxy/statement_map).
class statement_lru {
 public:
  explicit statement_lru(std::size_t capacity) : capacity_(capacity) {}
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // The version `name` was prepared at, if it is prepared here.
  std::optional<std::uint64_t> version(const std::string& name) const;
  // Marks `name` as most recently used. REQUIRES: contains(name).
  void touch(const std::string& name);
  // Adds `name` (or replaces its version); returns the name evicted to make
  // room, if any.
  std::optional<std::string> insert(const std::string& name, std::uint64_t version);
  void erase(const std::string& name);
  void clear();
  std::size_t size() const { return index_.size(); }

 private:
  struct entry {
    std::list<std::string>::iterator position;
    std::uint64_t version;
  };
  std::size_t capacity_;
  std::list<std::string> order_;  // most recently used first
  std::unordered_map<std::string, entry> index_;
};

struct server_state {
  explicit server_state(std::size_t max_prepared) : prepared(max_prepared) {}
  settings_map settings;
  std::map<std::string, std::string> sql_prepared;  // PREPARE name -> its statement text
  statement_lru prepared;
  // Reset to a fresh connection's state (after DISCARD ALL).
  void clear() {
    settings.clear();
    sql_prepared.clear();
    prepared.clear();
  }
};

}  // namespace pgstash::pool
