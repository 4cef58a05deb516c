#include "proxy/admin_json.hpp"

#include <ctime>
#include <string>

namespace pgstash::proxy {

using nlohmann::json;

namespace {

constexpr const char* k_rfc3339 = "%Y-%m-%dT%H:%M:%SZ";

}  // namespace

std::string utc_time(std::chrono::system_clock::time_point t, const char* format) {
  const std::time_t seconds_since_epoch = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&seconds_since_epoch, &tm);
  char out[64];
  std::strftime(out, sizeof out, format, &tm);
  return out;
}

std::chrono::system_clock::time_point wall_time(std::chrono::steady_clock::time_point t) {
  const auto ago = std::chrono::steady_clock::now() - t;
  return std::chrono::system_clock::now() -
         std::chrono::duration_cast<std::chrono::system_clock::duration>(ago);
}

admin_response json_response(const json& j, unsigned status) {
  // Names and statements are the clients' bytes: invalid UTF-8 is replaced,
  // not thrown on.
  return {status, "application/json",
          j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"};
}

admin_response admin_error(unsigned status, std::string_view message) {
  return json_response(json{{"error", message}}, status);
}

double seconds(std::chrono::steady_clock::duration d) {
  return static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(d).count()) / 1e6;
}

json pool_json(const pool_row& row, const conf::config& cfg) {
  using pool::server_list;
  const auto& s = row.servers;
  const auto max_wait_us =
      std::chrono::duration_cast<std::chrono::microseconds>(s.max_wait).count();
  return {{"database", row.key.database},
          {"user", row.key.user},
          // PgBouncer's cl_active: logged in and not waiting, with or
          // without a server connection; cl_linked: with one.
          {"cl_active", row.client_count(client_state::active) + row.client_count(client_state::idle)},
          {"cl_waiting", row.client_count(client_state::waiting)},
          {"cl_linked", row.client_count(client_state::active)},
          {"sv_active", s.count(server_list::active)},
          {"sv_idle", s.count(server_list::idle) - s.check_due},
          {"sv_used", s.check_due},
          {"sv_tested", s.count(server_list::testing)},
          {"sv_login", s.count(server_list::connecting)},
          {"sv_closing", s.count(server_list::closing)},
          {"maxwait", max_wait_us / 1000000},
          {"maxwait_us", max_wait_us % 1000000},
          {"pool_size", cfg.pool.size},
          {"pool_mode", cfg.pool.mode == conf::pool_mode::transaction ? "transaction" : "session"}};
}

json client_json(const client_info& c, std::chrono::steady_clock::time_point now) {
  json j = {{"id", c.id},
            {"addr", c.peer},
            {"database", c.database},
            {"user", c.user},
            {"application_name", c.application_name},
            {"state", to_string(c.state)},
            {"state_seconds", seconds(now - c.state_since)},
            {"connect_time", utc_time(c.connected, k_rfc3339)},
            {"tls", c.tls},
            {"kind", to_string(c.kind)}};
  j["server_id"] = c.server_id ? json(c.server_id) : json(nullptr);
  return j;
}

json server_json(const pool::pool_key& key, const pool::server_record& s,
                 std::chrono::steady_clock::time_point now) {
  json j = {{"id", s.id},
            {"database", key.database},
            {"user", key.user},
            {"state", to_string(s.list)},
            {"state_seconds", seconds(now - s.since)},
            {"age_seconds", seconds(now - s.opened)},
            {"tls", s.details.tls}};
  j["pid"] = s.details.process_id ? json(s.details.process_id) : json(nullptr);
  j["client_id"] = s.details.client_id ? json(s.details.client_id) : json(nullptr);
  return j;
}

json stats_json(const traffic_stats::pool_name& name, const traffic_totals& t) {
  return {{"database", name.first},
          {"user", name.second},
          {"total_xact_count", t.transactions},
          {"total_query_count", t.requests},
          {"total_received", t.bytes_received},
          {"total_sent", t.bytes_sent},
          {"total_query_time", t.request_time_us},
          {"total_wait_time", t.wait_time_us},
          {"avg_query_time", t.requests ? t.request_time_us / t.requests : 0}};
}

}  // namespace pgstash::proxy
