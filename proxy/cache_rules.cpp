#include "proxy/cache_rules.hpp"

#include <algorithm>
#include <cctype>

#include "proxy/like_pattern.hpp"

namespace pgstash::proxy {

namespace {

std::string ascii_lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A table name as written in the config ("Public.Orders", "\"Mixed\"") as
// the catalog spells its bare name: the part after the last dot outside
// quotes; quoted kept as is, unquoted lower-cased, as PostgreSQL folds it.
std::string bare_table_name(std::string_view written) {
  std::size_t start = 0;
  bool quoted = false;
  for (std::size_t i = 0; i < written.size(); ++i) {
    if (written[i] == '"') quoted = !quoted;
    if (written[i] == '.' && !quoted) start = i + 1;
  }
  std::string_view name = written.substr(start);
  if (name.size() >= 2 && name.front() == '"' && name.back() == '"') {
    std::string out;
    for (std::size_t i = 1; i + 1 < name.size(); ++i) {
      out += name[i];
      if (name[i] == '"' && name[i + 1] == '"') ++i;
    }
    return out;
  }
  return ascii_lower(name);
}

}  // namespace

cache_rules::cache_rules(const std::vector<conf::cache_rule>& rules) {
  for (const conf::cache_rule& r : rules) {
    rules_.push_back(
        {r, r.table.empty() ? "" : bare_table_name(r.table), ascii_lower(r.statement)});
    any_statement_ = any_statement_ || !r.statement.empty();
  }
}

const conf::cache_rule* cache_rules::find(std::string_view sql,
                                          const std::vector<std::string>& tables) const {
  const std::string lowered = any_statement_ ? ascii_lower(sql) : std::string();
  for (const rule& r : rules_) {
    if (!r.table.empty() && std::find(tables.begin(), tables.end(), r.table) == tables.end())
      continue;
    if (!r.pattern.empty() && !like_match(lowered, r.pattern)) continue;
    return &r.config;
  }
  return nullptr;
}

}  // namespace pgstash::proxy
