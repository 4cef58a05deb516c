// Reads [[cache.rules]], the one config key whose value is an array of
// tables. Internal to the loader (config.cpp): it speaks toml++.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "conf/config.hpp"

namespace pgstash::conf::detail {

inline constexpr std::string_view k_cache_rules = "cache.rules";

// Reports a problem at a place in the file: message, hint.
using rule_problem = std::function<void(const toml::source_region&, std::string, std::string)>;

// The rules `node` holds; what is wrong with them goes to `report` (and the
// rule is left out).
std::vector<cache_rule> read_cache_rules(const toml::node& node, const rule_problem& report);

// The rules as TOML would write them inline, for current_settings().
std::string render_cache_rules(const std::vector<cache_rule>& rules);

}  // namespace pgstash::conf::detail
