// The JSON shapes of the admin API's views, one function per kind of row,
// with PgBouncer's names where the concept is the same (cl_active,
// sv_idle, maxwait, ...). Internal to the admin API.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "conf/config.hpp"
#include "proxy/admin_api.hpp"
#include "proxy/client_registry.hpp"
#include "proxy/pool_rows.hpp"
#include "proxy/traffic_stats.hpp"

namespace pgstash::proxy {

admin_response json_response(const nlohmann::json& j, unsigned status = 200);
// {"error": message} with `status`.
admin_response admin_error(unsigned status, std::string_view message);

nlohmann::json pool_json(const pool_row& row, const conf::config& cfg);
nlohmann::json client_json(const client_info& c, std::chrono::steady_clock::time_point now);
nlohmann::json server_json(const pool::pool_key& key, const pool::server_record& s,
                           std::chrono::steady_clock::time_point now);
nlohmann::json stats_json(const traffic_stats::pool_name& name, const traffic_totals& t);

// Seconds as a number with microsecond precision.
double seconds(std::chrono::steady_clock::duration d);
// `t` in UTC, to the second, as strftime `format` writes it.
std::string utc_time(std::chrono::system_clock::time_point t, const char* format);
// A steady-clock instant on the wall clock.
std::chrono::system_clock::time_point wall_time(std::chrono::steady_clock::time_point t);

}  // namespace pgstash::proxy
