// The statements of the admin console, PgBouncer's style: a client logs in
// to the database `pgstash` as one of admin.users and types commands in
// psql. Keywords are case-insensitive; a trailing semicolon is optional.
//
//   SHOW POOLS | CLIENTS | SERVERS | STATS | CONFIG | VERSION | HELP
//   SHOW CACHE | SHOW CACHE ENTRIES | SHOW CACHE TABLES
//   INVALIDATE TABLE [schema.]name    in every database pgstash has seen
//   INVALIDATE DATABASE name
//   INVALIDATE STATEMENT 'LIKE pattern'   cached statements by their text
//   INVALIDATE ALL
//   RELOAD                            reads the config file again (as SIGHUP)
//   PAUSE [db] | RESUME [db]          PgBouncer's: drain a server database's
//                                     connections (all without a name)
//
// Pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace pgstash::proxy {

inline constexpr std::string_view k_console_database = "pgstash";

enum class console_verb : std::uint8_t {
  empty,  // nothing but blanks and semicolons
  show_pools,
  show_clients,
  show_servers,
  show_stats,
  show_config,
  show_version,
  show_help,
  show_cache,
  show_cache_entries,
  show_cache_tables,
  invalidate_table,
  invalidate_database,
  invalidate_statement,
  invalidate_all,
  reload,
  pause,
  resume,
  invalid,  // `error` says why
};

struct console_command {
  console_verb verb = console_verb::invalid;
  // The table (bare) or database named; the statement pattern; for PAUSE
  // and RESUME the database, empty for all.
  std::string name;
  std::string error;  // for invalid
};

console_command parse_console_command(std::string_view sql);

// One line per kind of command, for SHOW HELP and the hint of an error.
std::string_view console_help();

}  // namespace pgstash::proxy
