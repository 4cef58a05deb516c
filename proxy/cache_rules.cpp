#include "proxy/cache_rules.hpp"

#include <algorithm>

#include "invalidation/sql_text.hpp"
#include "proxy/like_pattern.hpp"

namespace pgstash::proxy {

namespace {

// A table name as written in the config ("Public.Orders", "\"Mixed\"") as
// the catalog spells its bare name: the part after the last dot outside
// quotes, folded as PostgreSQL folds it.
std::string bare_table_name(std::string_view written) {
  std::size_t start = 0;
  bool quoted = false;
  for (std::size_t i = 0; i < written.size(); ++i) {
    if (written[i] == '"') quoted = !quoted;
    if (written[i] == '.' && !quoted) start = i + 1;
  }
  return invalidation::fold_identifier(written.substr(start));
}

}  // namespace

cache_rules::cache_rules(const std::vector<conf::cache_rule>& rules) {
  for (const conf::cache_rule& r : rules) {
    rules_.push_back({r, r.table.empty() ? "" : bare_table_name(r.table),
                      invalidation::ascii_lower(r.statement)});
    any_statement_ = any_statement_ || !r.statement.empty();
  }
}

const conf::cache_rule* cache_rules::find(std::string_view sql,
                                          const std::vector<std::string>& tables) const {
  const std::string lowered = any_statement_ ? invalidation::ascii_lower(sql) : std::string();
  for (const rule& r : rules_) {
    if (!r.table.empty() && std::find(tables.begin(), tables.end(), r.table) == tables.end())
      continue;
    if (!r.pattern.empty() && !like_match(lowered, r.pattern)) continue;
    return &r.config;
  }
  return nullptr;
}

}  // namespace pgstash::proxy
