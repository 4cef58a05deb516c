// The admin API's views of the result cache (counters, streams, tables,
// entries) and the operator's invalidations, as JSON.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <nlohmann/json.hpp>

#include "proxy/admin_api.hpp"
#include "proxy/admin_json.hpp"
#include "proxy/cache_admin.hpp"
#include "proxy/proxy_context.hpp"

namespace pgstash::proxy {

namespace {

using nlohmann::json;

constexpr std::size_t k_default_page = 50;
constexpr std::size_t k_max_page = 1000;

// The value of `name` in a query string, as a count; `fallback` if absent.
// nullopt if present but not a count.
std::optional<std::size_t> count_param(std::string_view query, std::string_view name,
                                       std::size_t fallback) {
  while (!query.empty()) {
    const std::string_view pair = query.substr(0, query.find('&'));
    query.remove_prefix(std::min(query.size(), pair.size() + 1));
    if (!pair.starts_with(name) || pair.size() <= name.size() || pair[name.size()] != '=') continue;
    const std::string_view value = pair.substr(name.size() + 1);
    std::size_t n = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc() || end != value.data() + value.size()) return std::nullopt;
    return n;
  }
  return fallback;
}


}  // namespace

admin_response admin_api::cache() const {
  if (!ctx_.cache) return json_response({{"enabled", false}});
  result_cache& c = *ctx_.cache;
  const cache::store_stats s = c.store().stats();
  const std::uint64_t hits = c.hits(), misses = c.misses();
  json reasons = json::object();
  for (std::size_t i = 1; i < invalidation::uncacheable_count; ++i) {
    const auto why = static_cast<invalidation::uncacheable>(i);
    reasons[std::string(invalidation::to_string(why))] = c.uncacheable(why);
  }
  const auto now = std::chrono::steady_clock::now();
  json streams = json::array();
  for (const auto& [database, status] : c.streams()) {
    const auto heard = status->last_heard();
    streams.push_back(
        {{"database", database},
         {"state", invalidation::to_string(status->state())},
         {"last_heard_seconds",
          heard.time_since_epoch().count() == 0 ? json(nullptr) : json(seconds(now - heard))},
         {"commits_applied", status->commits_applied()},
         {"strict_polls", status->strict_polls()},
         {"strict_flushes", status->strict_flushes()}});
  }
  json table_rows = json::array();
  for (const auto& t : cache_tables(c)) {
    table_rows.push_back({{"database", t.database},
                          {"table", t.table},
                          {"entries", t.entries},
                          {"bytes", t.bytes},
                          {"hits", t.hits}});
  }
  return json_response(
      {{"enabled", true},
       {"hits", hits},
       {"misses", misses},
       {"strict_unproven", c.unproven()},
       {"hit_rate",
        hits + misses ? static_cast<double>(hits) / static_cast<double>(hits + misses) : 0.0},
       {"entries", s.entries},
       {"bytes", s.bytes},
       {"max_size", c.config().max_size},
       {"map_size", s.map_size},
       {"map_used", s.map_used},
       {"stores", s.stores},
       {"evictions", s.evictions},
       {"expirations", s.expirations},
       {"invalidated_entries", s.invalidations},
       {"rejected", s.rejected},
       {"failures", s.failures},
       {"uncacheable", reasons},
       {"streams", streams},
       {"tables", table_rows}});
}

admin_response admin_api::cache_entries(std::string_view query) const {
  const auto limit = count_param(query, "limit", k_default_page);
  const auto offset = count_param(query, "offset", 0);
  if (!limit || !offset || *limit == 0 || *limit > k_max_page)
    return admin_error(400, "limit must be 1 to 1000 and offset a count");
  if (!ctx_.cache) return json_response({{"total", 0}, {"entries", json::array()}});
  const auto entries = proxy::cache_entries(*ctx_.cache);
  const std::int64_t now = result_cache::now_ms();
  json rows = json::array();
  for (std::size_t i = *offset; i < entries.size() && i < *offset + *limit; ++i) {
    const auto& e = entries[i];
    rows.push_back({{"key", hex_key(e.key)},
                    {"database", e.label.database},
                    {"tables", e.label.tables},
                    {"statement", e.label.statement},
                    {"age_seconds", static_cast<double>(now - e.created_ms) / 1000.0},
                    {"ttl_seconds_left", e.expires_ms ? json(static_cast<double>(std::max<std::int64_t>(
                                                                 0, e.expires_ms - now)) /
                                                             1000.0)
                                                      : json(nullptr)},
                    {"hits", e.hits},
                    {"size", e.size}});
  }
  return json_response({{"total", entries.size()}, {"offset", *offset}, {"entries", rows}});
}

admin_response admin_api::invalidate(std::string_view body) {
  const json request = json::parse(body, nullptr, false);
  if (request.is_discarded() || !request.is_object())
    return admin_error(400, "the body must be a JSON object: {\"table\": t} or {\"statement\": "
                            "LIKE pattern} (in every database, or with \"database\": d), "
                            "{\"database\": d} or {\"all\": true}");
  if (!ctx_.cache) return admin_error(409, "the result cache is off");
  auto text = [&](const char* key) -> std::optional<std::string> {
    auto it = request.find(key);
    if (it == request.end() || !it->is_string() || it->get<std::string>().empty()) return std::nullopt;
    return it->get<std::string>();
  };
  if (const auto all = request.find("all"); all != request.end()) {
    if (!all->is_boolean() || !all->get<bool>()) return admin_error(400, "\"all\" must be true");
    invalidate_everything(ctx_);
    return json_response({{"invalidated", "all"}});
  }
  const auto database = text("database");
  if (const auto pattern = text("statement")) {
    const std::size_t n = invalidate_statements(*ctx_.cache, database, *pattern);
    json what = {{"statement", *pattern}, {"entries", n}};
    what["database"] = database ? json(*database) : json("every database");
    return json_response({{"invalidated", what}});
  }
  if (const auto table = text("table")) {
    // The generations know relations by bare name: a schema is dropped,
    // which only ever invalidates more.
    std::string_view bare = *table;
    if (const auto dot = bare.rfind('.'); dot != std::string_view::npos) bare.remove_prefix(dot + 1);
    invalidate_table(ctx_, database, bare);
    json what = {{"table", bare}};
    what["database"] = database ? json(*database) : json("every database");
    return json_response({{"invalidated", what}});
  }
  if (!database)
    return admin_error(400, "name a \"table\", a \"statement\" pattern, a \"database\", or send "
                            "{\"all\": true}");
  ctx_.cache->invalidate_database(*database);
  return json_response({{"invalidated", {{"database", *database}}}});
}

}  // namespace pgstash::proxy
