#include "invalidation/cache_functions.hpp"

#include <algorithm>
#include <string>

#include "invalidation/sql_text.hpp"

namespace pgstash::invalidation {
namespace {

constexpr std::string_view k_time_functions[] = {
    "now",       "statement_timestamp",      "transaction_timestamp", "clock_timestamp",
    "timeofday", "pg_postmaster_start_time", "pg_conf_load_time",
};

constexpr std::string_view k_session_functions[] = {
    "pg_backend_pid",
    "inet_client_addr",
    "inet_client_port",
    "inet_server_addr",
    "inet_server_port",
    "current_query",
    "currval",
    "lastval",
    "nextval",
    "setval",
    "random",
    "random_normal",
    "setseed",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "pg_notify",
    "pg_listening_channels",
    "pg_notification_queue_usage",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_promote",
    "pg_export_snapshot",
    "pg_trigger_depth",
    "pg_is_in_recovery",
    "pg_my_temp_schema",
    "pg_is_other_temp_schema",
    "pg_stat_file",
    "pg_xact_status",
    "pg_jit_available",
    "pg_log_backend_memory_contexts",
    "loread",
    "lowrite",
};

// Families: transaction ids and snapshots, WAL and replication, server
// files, statistics, sleeping, advisory locks, large objects.
constexpr std::string_view k_session_prefixes[] = {
    "txid_",
    "pg_current_",
    "pg_snapshot_",
    "pg_visible_in_snapshot",
    "pg_last_",
    "pg_wal_",
    "pg_replication_",
    "pg_logical_",
    "pg_create_",
    "pg_drop_replication",
    "pg_backup_",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_",
    "pg_stat_",
    "pg_sleep",
    "pg_advisory",
    "pg_try_advisory",
    "lo_",
};

constexpr std::string_view k_catalog_lookup_types[] = {
    "regclass",    "regcollation", "regconfig",    "regdictionary", "regnamespace", "regoper",
    "regoperator", "regproc",      "regprocedure", "regrole",       "regtype",
};

template <std::size_t N>
bool contains(const std::string_view (&list)[N], std::string_view s) {
  return std::find(std::begin(list), std::end(list), s) != std::end(list);
}

bool is_ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

}  // namespace

function_kind classify_function(std::string_view name, std::size_t arg_count) {
  if (contains(k_time_functions, name)) return function_kind::time;
  if (name == "age" && arg_count == 1) return function_kind::time;  // age(x) = current_date - x
  if (name == "set_config") return function_kind::setting;
  if (name.starts_with("dblink")) return function_kind::remote;
  if (contains(k_session_functions, name)) return function_kind::session;
  for (std::string_view p : k_session_prefixes) {
    if (name.starts_with(p)) return function_kind::session;
  }
  return function_kind::other;
}

bool is_time_value_function(std::string_view op) {
  return op != "SVFOP_CURRENT_ROLE" && op != "SVFOP_CURRENT_USER" && op != "SVFOP_USER" &&
         op != "SVFOP_SESSION_USER" && op != "SVFOP_CURRENT_CATALOG" &&
         op != "SVFOP_CURRENT_SCHEMA";
}

bool names_current_time(std::string_view literal) {
  std::size_t i = 0;
  while (i < literal.size()) {
    if (!is_ascii_letter(literal[i])) {
      ++i;
      continue;
    }
    const std::size_t start = i;
    while (i < literal.size() && is_ascii_letter(literal[i])) ++i;
    const std::string word = ascii_lower(literal.substr(start, i - start));
    if (word == "now" || word == "today" || word == "tomorrow" || word == "yesterday") return true;
  }
  return false;
}

bool is_catalog_lookup_type(std::string_view type_name) {
  if (type_name.starts_with('_')) type_name.remove_prefix(1);  // the array type
  return contains(k_catalog_lookup_types, type_name);
}

bool set_config_leaves_read_committed(const json& call, const source_text& src) {
  const json* args = member(call, "args");
  if (!args || !args->is_array() || args->empty()) return true;
  const json* first = &(*args)[0];
  if (const json* cast = node_as(*first, "TypeCast")) first = member(*cast, "arg");
  const json* c = first ? node_as(*first, "A_Const") : nullptr;
  const json* s = c ? member(*c, "sval") : nullptr;
  if (!s) return true;
  const std::string name = ascii_lower(src.decode(str_member(*s, "sval")));
  return name == "transaction_isolation" || name == "default_transaction_isolation";
}

}  // namespace pgstash::invalidation
