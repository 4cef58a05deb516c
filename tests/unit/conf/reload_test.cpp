#include "conf/reload.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "conf/config.hpp"

namespace {

using namespace pgstash::conf;

config parsed(const std::string& text) {
  load_result r = load_string(text, "t.toml");
  const std::string first = r.errors.empty() ? std::string() : format(r.errors[0]);
  INFO(first);
  REQUIRE(r.cfg.has_value());
  return *r.cfg;
}

std::vector<std::string> keys(const std::vector<setting_change>& changes) {
  std::vector<std::string> out;
  for (const auto& c : changes) out.push_back(c.key);
  return out;
}

}  // namespace

TEST_CASE("a reload applies the live keys and reports the others as needing a restart") {
  const config running = parsed("[pool]\nsize = 20\nmode = \"session\"\n[listen]\nport = 6000\n");
  const config loaded = parsed(
      "[pool]\nsize = 5\nmode = \"transaction\"\nquery_wait_timeout_ms = \"3s\"\n"
      "[listen]\nport = 7000\n[log]\nlevel = \"debug\"\n[databases]\napp = \"app_db\"\n");
  const reload_plan plan = plan_reload(running, loaded);
  CHECK(keys(plan.applied) ==
        std::vector<std::string>{"log.level", "pool.query_wait_timeout_ms", "pool.size"});
  CHECK(keys(plan.need_restart) ==
        std::vector<std::string>{"listen.port", "pool.mode", "databases"});
  CHECK(plan.next.pool.size == 5);
  CHECK(plan.next.pool.query_wait_timeout_ms == 3000);
  CHECK(plan.next.log.level == "debug");
  // What needs a restart keeps its running value.
  CHECK(plan.next.listen.port == 6000);
  CHECK(plan.next.pool.mode == pool_mode::session);
  CHECK(plan.next.databases.empty());
  const auto size = std::ranges::find(plan.applied, std::string("pool.size"), &setting_change::key);
  CHECK(size->from == "20");
  CHECK(size->to == "5");
}

TEST_CASE("an unchanged file reloads to no change, and a secret's change never shows its value") {
  const config running = parsed("[admin]\ntoken = \"old-secret\"\n");
  const reload_plan same = plan_reload(running, running);
  CHECK(same.applied.empty());
  CHECK(same.need_restart.empty());
  const reload_plan changed = plan_reload(running, parsed("[admin]\ntoken = \"new-secret\"\n"));
  REQUIRE(changed.need_restart.size() == 1);
  CHECK(changed.need_restart[0].key == "admin.token");
  CHECK(changed.need_restart[0].from == "\"********\"");
  CHECK(changed.need_restart[0].to == "\"********\"");
  CHECK(changed.next.admin.token == "old-secret");
}
