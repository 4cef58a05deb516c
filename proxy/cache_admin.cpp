#include "proxy/cache_admin.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <utility>

#include "proxy/like_pattern.hpp"
#include "proxy/proxy_context.hpp"
#include "proxy/result_cache.hpp"

namespace pgstash::proxy {

namespace {

// Entries read for one listing: bounds the work one request does.
constexpr std::size_t k_listing_limit = 100000;

}  // namespace

std::vector<table_usage> cache_tables(result_cache& cache) {
  std::map<std::pair<std::string, std::string>, table_usage> tables;
  for (const auto& e : cache.store().list(k_listing_limit)) {
    const entry_label label = decode_entry_label(e.label);
    for (const auto& table : label.tables) {
      table_usage& t = tables[{label.database, table}];
      t.database = label.database;
      t.table = table;
      ++t.entries;
      t.bytes += e.size;
      t.hits += e.hits;
    }
  }
  std::vector<table_usage> out;
  out.reserve(tables.size());
  for (auto& [name, t] : tables) out.push_back(std::move(t));
  return out;
}

std::vector<entry_row> cache_entries(result_cache& cache) {
  std::vector<entry_row> out;
  for (auto& e : cache.store().list(k_listing_limit)) {
    out.push_back({e.k, decode_entry_label(e.label), e.hits, e.size, e.created_ms, e.expires_ms});
  }
  std::ranges::sort(out, [](const entry_row& a, const entry_row& b) {
    return a.hits != b.hits ? a.hits > b.hits : a.created_ms > b.created_ms;
  });
  return out;
}

std::string hex_key(const cache::key& k) {
  char out[33];
  std::snprintf(out, sizeof out, "%016llx%016llx", static_cast<unsigned long long>(k.high),
                static_cast<unsigned long long>(k.low));
  return out;
}

void invalidate_table(proxy_context& ctx, const std::optional<std::string>& database,
                      std::string_view table) {
  if (database) {
    ctx.cache->invalidate_table(*database, table);
    return;
  }
  for (const auto& known : ctx.cache->databases(ctx.traffic.databases()))
    ctx.cache->invalidate_table(known, table);
}

void invalidate_everything(proxy_context& ctx) {
  ctx.cache->invalidate_all(ctx.traffic.databases());
  if (ctx.warmer) ctx.warmer->request();
}

std::size_t invalidate_statements(result_cache& cache, const std::optional<std::string>& database,
                                  std::string_view pattern) {
  std::vector<cache::key> doomed;
  for (auto& e : cache.store().list(k_listing_limit)) {
    const entry_label label = decode_entry_label(e.label);
    if (database && label.database != *database) continue;
    if (like_match(label.statement, pattern)) doomed.push_back(e.k);
  }
  const std::size_t n = doomed.size();
  cache.store().erase(std::move(doomed));
  // Gone when the caller answers: the next read must reach the server.
  cache.store().flush();
  return n;
}

}  // namespace pgstash::proxy
