// The operator's exceptions to the result cache's defaults ([[cache.rules]]
// in the config): which rule, if any, applies to a statement. Pure.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "conf/config.hpp"

namespace pgstash::proxy {

class cache_rules {
 public:
  explicit cache_rules(const std::vector<conf::cache_rule>& rules);

  bool empty() const { return rules_.empty(); }
  // The first rule whose statement pattern matches `sql` (ASCII case
  // ignored) and whose table is one of `tables` (bare relation names, as
  // the catalog lists what a read depends on), or null.
  const conf::cache_rule* find(std::string_view sql, const std::vector<std::string>& tables) const;

 private:
  struct rule {
    conf::cache_rule config;
    std::string table;    // the bare name, as the catalog spells it
    std::string pattern;  // lower-cased
  };
  std::vector<rule> rules_;
  bool any_statement_ = false;
};

}  // namespace pgstash::proxy
