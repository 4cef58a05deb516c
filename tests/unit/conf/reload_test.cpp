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

std::string only_error(const std::string& text) {
  load_result r = load_string(text, "t.toml");
  CHECK_FALSE(r.cfg.has_value());
  REQUIRE(r.errors.size() == 1);
  return format(r.errors[0]);
}

std::vector<std::string> keys(const std::vector<setting_change>& changes) {
  std::vector<std::string> out;
  for (const auto& c : changes) out.push_back(c.key);
  return out;
}

}  // namespace

TEST_CASE("durations and sizes may be written with a unit") {
  const config c = parsed(
      "[pool]\nquery_wait_timeout_ms = \"30s\"\nserver_lifetime_ms = \"2h\"\n"
      "server_idle_timeout_ms = \"10 min\"\ncleanup_timeout_ms = \"250ms\"\n"
      "[limits]\nclient_idle_timeout_ms = \"1d\"\nio_buffer_size = \"64KiB\"\n"
      "[cache]\nmax_size = \"512MiB\"\nmax_entry_size = \"2MiB\"\ndefault_ttl = \"10min\"\n");
  CHECK(c.pool.query_wait_timeout_ms == 30'000);
  CHECK(c.pool.server_lifetime_ms == 7'200'000);
  CHECK(c.pool.server_idle_timeout_ms == 600'000);
  CHECK(c.pool.cleanup_timeout_ms == 250);
  CHECK(c.limits.client_idle_timeout_ms == 86'400'000);
  CHECK(c.limits.io_buffer_size == 65'536);
  CHECK(c.cache.max_size == 536'870'912);
  CHECK(c.cache.max_entry_size == 2'097'152);
  CHECK(c.cache.default_ttl == 600);
  // The plain numbers still work.
  CHECK(parsed("[pool]\nquery_wait_timeout_ms = 1500\n").pool.query_wait_timeout_ms == 1500);
}

TEST_CASE("a quantity with a wrong unit, a fraction or out of range is refused with its line") {
  CHECK(only_error("[pool]\nquery_wait_timeout_ms = \"30 parsecs\"\n") ==
        "t.toml:2:25: pool.query_wait_timeout_ms: unknown unit \"parsecs\" (use ms, s, min, h, d) "
        "(e.g. query_wait_timeout_ms = \"30s\")");
  CHECK(only_error("[cache]\nmax_size = \"1GB\"\n") ==
        "t.toml:2:12: cache.max_size: unknown unit \"GB\" (use B, KiB, MiB, GiB, TiB) "
        "(e.g. max_size = \"512MiB\")");
  CHECK(only_error("[pool]\nquery_wait_timeout_ms = \"1.5s\"\n")
            .find("expected a whole number and a unit") != std::string::npos);
  CHECK(only_error("[pool]\nquery_wait_timeout_ms = \"30\"\n")
            .find("expected a whole number and a unit") != std::string::npos);
  CHECK(only_error("[cache]\ndefault_ttl = \"1500ms\"\n").find("not a whole number of seconds") !=
        std::string::npos);
  CHECK(only_error("[pool]\nquery_wait_timeout_ms = \"2d\"\n")
            .find("must be between 1 and 86400000, not 172800000") != std::string::npos);
  CHECK(
      only_error("[pool]\nquery_wait_timeout_ms = \"99999999999999999999s\"\n").find("too large") !=
      std::string::npos);
  // A key that counts nothing takes only a number.
  CHECK(only_error("[pool]\nsize = \"20s\"\n").find("pool.size must be an integer, not a string") !=
        std::string::npos);
}

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
