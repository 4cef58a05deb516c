#include "conf/reload.hpp"

#include "conf/config_keys.hpp"

namespace pgstash::conf {

namespace {

std::string shown(const detail::key_row& row, const detail::setting& value) {
  if (row.secret && !value.text.empty()) return detail::quoted("********");
  return detail::render(row, value);
}

std::string databases_text(const database_map& databases) {
  std::string out;
  for (const auto& [client, server] : databases)
    out += (out.empty() ? "" : ", ") + client + " = " + server;
  return "{" + out + "}";
}

}  // namespace

reload_plan plan_reload(const config& running, const config& loaded) {
  reload_plan plan{running, {}, {}};
  for (const auto& row : detail::all_keys()) {
    const detail::setting before = row.load(running);
    const detail::setting after = row.load(loaded);
    const std::string from = shown(row, before);
    const std::string to = shown(row, after);
    // Rendered values compare secrets too: a changed token shows as a
    // change with both sides masked.
    if (detail::render(row, before) == detail::render(row, after)) continue;
    if (row.live) {
      row.store(plan.next, after);
      plan.applied.push_back({std::string(row.name), from, to});
    } else {
      plan.need_restart.push_back({std::string(row.name), from, to});
    }
  }
  if (running.databases != loaded.databases)
    plan.need_restart.push_back(
        {"databases", databases_text(running.databases), databases_text(loaded.databases)});
  return plan;
}

}  // namespace pgstash::conf
