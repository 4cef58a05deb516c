#include "conf/cache_rules_reader.hpp"

#include <algorithm>
#include <array>
#include <string_view>

namespace pgstash::conf::detail {

namespace {

constexpr std::array<std::string_view, 3> k_actions = {"never", "cache", "force"};
constexpr std::string_view k_example =
    "write [[cache.rules]] followed by table = \"...\" or statement = \"...\", and action = "
    "\"never\", \"cache\" or \"force\"";
constexpr std::int64_t k_max_ttl = 31'536'000;

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

// One [[cache.rules]] table; nullopt after reporting what is wrong.
std::optional<cache_rule> read_rule(const toml::table& table, const rule_problem& report) {
  cache_rule rule;
  bool ok = true;
  auto fail = [&](const toml::node& at, std::string message, std::string hint) {
    report(at.source(), std::move(message), std::move(hint));
    ok = false;
  };
  auto text = [&](const toml::node& node, std::string_view field) -> std::string {
    const auto* s = node.as_string();
    if (s == nullptr || s->get().empty()) {
      fail(node,
           std::string(k_cache_rules) + "." + std::string(field) + " must be a non-empty string",
           std::string(k_example));
      return {};
    }
    return s->get();
  };
  for (auto&& [key, node] : table) {
    const std::string_view field = key.str();
    if (field == "table") {
      rule.table = text(node, field);
    } else if (field == "statement") {
      rule.statement = text(node, field);
    } else if (field == "action") {
      const std::string action = text(node, field);
      const auto* found = std::find(k_actions.begin(), k_actions.end(), action);
      if (found == k_actions.end()) {
        if (!action.empty())
          fail(node, "invalid " + std::string(k_cache_rules) + ".action " + quote(action),
               "expected \"never\", \"cache\" or \"force\"");
      } else {
        rule.what = static_cast<cache_rule::action>(found - k_actions.begin());
      }
    } else if (field == "ttl") {
      const auto* n = node.as_integer();
      if (n == nullptr || n->get() < 0 || n->get() > k_max_ttl) {
        fail(node,
             std::string(k_cache_rules) + ".ttl must be an integer from 0 to " +
                 std::to_string(k_max_ttl),
             "seconds a matching result is served; 0 = until invalidated");
      } else {
        rule.ttl = static_cast<std::uint32_t>(n->get());
      }
    } else {
      report(key.source(),
             "unknown key " + quote(std::string(k_cache_rules) + "." + std::string(field)),
             "a rule accepts table, statement, action and ttl");
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  if (rule.table.empty() && rule.statement.empty()) {
    report(table.source(), "a cache rule needs table or statement", std::string(k_example));
    return std::nullopt;
  }
  if (rule.what == cache_rule::action::never && rule.ttl) {
    report(table.source(), "a cache rule with action = \"never\" has no ttl",
           "remove ttl, or use action = \"cache\"");
    return std::nullopt;
  }
  return rule;
}

}  // namespace

std::vector<cache_rule> read_cache_rules(const toml::node& node, const rule_problem& report) {
  std::vector<cache_rule> rules;
  const auto* array = node.as_array();
  if (array == nullptr) {
    report(node.source(), std::string(k_cache_rules) + " must be an array of tables",
           std::string(k_example));
    return rules;
  }
  for (const toml::node& item : *array) {
    const auto* table = item.as_table();
    if (table == nullptr) {
      report(item.source(), "each of " + std::string(k_cache_rules) + " must be a table",
             std::string(k_example));
      continue;
    }
    if (auto rule = read_rule(*table, report)) rules.push_back(std::move(*rule));
  }
  return rules;
}

std::string render_cache_rules(const std::vector<cache_rule>& rules) {
  std::string out = "[";
  for (const cache_rule& rule : rules) {
    if (out.size() > 1) out += ", ";
    out += "{";
    std::string fields;
    auto add = [&](std::string_view name, const std::string& value) {
      fields += (fields.empty() ? "" : ", ") + std::string(name) + " = " + value;
    };
    if (!rule.table.empty()) add("table", quote(rule.table));
    if (!rule.statement.empty()) add("statement", quote(rule.statement));
    add("action", quote(k_actions[static_cast<std::size_t>(rule.what)]));
    if (rule.ttl) add("ttl", std::to_string(*rule.ttl));
    out += fields + "}";
  }
  return out + "]";
}

}  // namespace pgstash::conf::detail
