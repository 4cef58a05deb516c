// What the admin API and the admin console show of the result cache and
// do to it, apart from how they present it: the tables results were read
// from, the entries, and the operator's invalidations.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/key.hpp"
#include "proxy/entry_label.hpp"

namespace pgstash::proxy {

class result_cache;
struct proxy_context;

struct table_usage {
  std::string database, table;
  std::uint64_t entries = 0, bytes = 0, hits = 0;
};
// Per (database, table) a result was read from, in that order.
std::vector<table_usage> cache_tables(result_cache& cache);

struct entry_row {
  cache::key key;
  entry_label label;
  std::uint64_t hits = 0, size = 0;
  std::int64_t created_ms = 0, expires_ms = 0;  // result_cache::now_ms()'s clock; 0: never
};
// Most hit first (then newest first).
std::vector<entry_row> cache_entries(result_cache& cache);

// 32 hex digits.
std::string hex_key(const cache::key& k);

// Drops every result read from `table` (a bare name) in `database`, or in
// every database pgstash has seen.
void invalidate_table(proxy_context& ctx, const std::optional<std::string>& database,
                      std::string_view table);
// Every result, in every database pgstash has seen; the store emptied.
// cache.warm_statements are run again.
void invalidate_everything(proxy_context& ctx);
// Drops the entries whose statement (its first 200 bytes, as listed) is
// LIKE `pattern` (proxy/like_pattern), in `database` or in all; returns
// how many, once they are gone. Only removes, so it can never make a
// result stale.
std::size_t invalidate_statements(result_cache& cache, const std::optional<std::string>& database,
                                  std::string_view pattern);

}  // namespace pgstash::proxy
