#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "proxy/session_state.hpp"

#include <doctest/doctest.h>

#include "invalidation/statement_analysis.hpp"

namespace pgstash::proxy {
namespace {

using parameters = std::vector<std::pair<std::string, std::string>>;

// Effects of the first statement of `sql`, as the analyzer sees them.
invalidation::statement_effects effects_of(const char* sql) {
  invalidation::analysis a = invalidation::analyze(sql);
  REQUIRE(a.statements.size() == 1);
  return a.statements[0];
}

// Runs `sql` to completion for `state` on `server`: the statement completes,
// then its autocommit transaction commits.
void run_autocommit(session_state& state, pool::server_state& server, const char* sql) {
  state.statement_completed(effects_of(sql), server);
  state.transaction_committed(server);
}

TEST_CASE("startup parameters become the client's settings, applied with set_config") {
  session_state state(
      parameters{{"application_name", "app"}, {"options", "-c search_path=a,b --work-mem=64MB"}});
  pool::server_state server(10);
  CHECK(state.sync_settings_sql(server) ==
        "SELECT pg_catalog.set_config('application_name', 'app', false);"
        "SELECT pg_catalog.set_config('search_path', 'a,b', false);"
        "SELECT pg_catalog.set_config('work_mem', '64MB', false)");
  // The server now matches: nothing more to send.
  CHECK(state.sync_settings_sql(server).empty());
}

TEST_CASE("a startup application_name keeps printable ASCII only, as PostgreSQL keeps it") {
  session_state state(parameters{{"application_name", "caf\xe9 \x01ok"}});
  pool::server_state server(10);
  CHECK(state.sync_settings_sql(server) ==
        "SELECT pg_catalog.set_config('application_name', 'caf? ?ok', false)");
}

TEST_CASE("a server left with another client's settings is reset where this client has none") {
  session_state a(parameters{});
  session_state b(parameters{});
  pool::server_state server(10);
  run_autocommit(a, server, "SET search_path = private, public");
  CHECK(server.settings.count("search_path") == 1);
  CHECK(b.sync_settings_sql(server) == "RESET \"search_path\"");
  CHECK(server.settings.empty());
  CHECK(a.sync_settings_sql(server).starts_with("SET \"search_path\" TO "));
}

TEST_CASE("SET follows transactions: kept on commit, dropped on rollback, SET LOCAL never") {
  session_state state(parameters{});
  pool::server_state server(10);
  state.statement_completed(effects_of("SET TimeZone = 'Asia/Tokyo'"), server);
  state.transaction_rolled_back();
  CHECK(state.settings().empty());
  state.statement_completed(effects_of("SET LOCAL TimeZone = 'UTC'"), server);
  state.transaction_committed(server);
  CHECK(state.settings().empty());
  run_autocommit(state, server, "SET TimeZone = 'Asia/Tokyo'");
  REQUIRE(state.settings().count("timezone") == 1);
  CHECK_FALSE(state.settings().at("timezone").raw);
}

TEST_CASE("RESET returns to the startup value, RESET ALL to all of them") {
  session_state state(parameters{{"DateStyle", "German"}});
  pool::server_state server(10);
  run_autocommit(state, server, "SET DateStyle = ISO");
  run_autocommit(state, server, "RESET DateStyle");
  REQUIRE(state.settings().count("datestyle") == 1);
  CHECK(state.settings().at("datestyle") == pool::setting_value{true, "German"});
  run_autocommit(state, server, "SET extra_float_digits = 3");
  run_autocommit(state, server, "RESET ALL");
  CHECK(state.settings().size() == 1);
}

std::vector<std::string> sql_of(const std::vector<session_state::prepared_sync>& steps) {
  std::vector<std::string> out;
  for (const auto& step : steps) out.push_back(step.sql);
  return out;
}

TEST_CASE("SQL PREPARE is re-created where the client EXECUTEs, replacing another client's") {
  session_state mine(parameters{});
  session_state other(parameters{});
  pool::server_state first(10);
  pool::server_state second(10);
  run_autocommit(mine, first, "PREPARE q AS SELECT 1");
  run_autocommit(other, second, "PREPARE q AS SELECT 2");
  const auto execute = effects_of("EXECUTE q");
  CHECK(mine.sync_prepared_statements(execute, first).empty());
  const auto steps = mine.sync_prepared_statements(execute, second);
  CHECK(sql_of(steps) == std::vector<std::string>{"DEALLOCATE \"q\"", "PREPARE q AS SELECT 1"});
  CHECK(mine.sync_prepared_statements(execute, second).empty());
  // The PREPARE failed (say, a table it reads is gone): the server has neither statement.
  steps[1].undo(second);
  CHECK(second.sql_prepared.empty());
  CHECK(sql_of(mine.sync_prepared_statements(execute, second)) ==
        std::vector<std::string>{"PREPARE q AS SELECT 1"});
  // Both skipped (an earlier error in the batch): the other client's statement is still there.
  steps[1].undo(second);
  steps[0].undo(second);
  CHECK(second.sql_prepared.at("q") == "PREPARE q AS SELECT 2");
  run_autocommit(mine, second, "DEALLOCATE q");
  CHECK(second.sql_prepared.empty());
}

TEST_CASE("a second PREPARE of a name the client has reaches a server that has it, to be refused") {
  session_state mine(parameters{});
  session_state other(parameters{});
  pool::server_state first(10);
  pool::server_state second(10);
  run_autocommit(other, second, "PREPARE q AS SELECT 2");
  const auto prepare = effects_of("PREPARE q AS SELECT 1");
  // The name is free for this client: another client's q goes away first.
  CHECK(sql_of(mine.sync_prepared_statements(prepare, second)) ==
        std::vector<std::string>{"DEALLOCATE \"q\""});
  run_autocommit(mine, first, "PREPARE q AS SELECT 1");
  // Now the client has q: PostgreSQL must see the name taken and answer
  // 42P05. A stand-in takes it, which cannot fail as the client's own text
  // may where it no longer analyses.
  CHECK(sql_of(mine.sync_prepared_statements(prepare, second)) ==
        std::vector<std::string>{"PREPARE \"q\" AS SELECT"});
  // Any statement of that name does.
  pool::server_state third(10);
  run_autocommit(other, third, "PREPARE q AS SELECT 2");
  CHECK(mine.sync_prepared_statements(prepare, third).empty());
}

TEST_CASE("DEALLOCATE needs only the name taken where the client has it, free where it has not") {
  session_state mine(parameters{});
  session_state other(parameters{});
  pool::server_state first(10);
  pool::server_state second(10);
  const auto deallocate = effects_of("DEALLOCATE q");
  run_autocommit(other, second, "PREPARE q AS SELECT 2");
  // The client has no q: the other client's must not be deallocated in its name.
  CHECK(sql_of(mine.sync_prepared_statements(deallocate, second)) ==
        std::vector<std::string>{"DEALLOCATE \"q\""});
  run_autocommit(mine, first, "PREPARE q AS SELECT 1 FROM gone");
  pool::server_state fresh(10);
  CHECK(sql_of(mine.sync_prepared_statements(deallocate, fresh)) ==
        std::vector<std::string>{"PREPARE \"q\" AS SELECT"});
  pool::server_state theirs(10);
  run_autocommit(other, theirs, "PREPARE q AS SELECT 2");
  CHECK(mine.sync_prepared_statements(deallocate, theirs).empty());
}

TEST_CASE("pins hold until DISCARD ALL, which also resets the session") {
  session_state state(parameters{{"application_name", "app"}});
  pool::server_state server(10);
  run_autocommit(state, server, "LISTEN jobs");
  CHECK(state.pinned());
  run_autocommit(state, server, "SET search_path = x");
  run_autocommit(state, server, "DISCARD ALL");
  CHECK_FALSE(state.pinned());
  CHECK(state.settings().size() == 1);
  CHECK(server.settings.empty());
}

TEST_CASE("a setting whose name holds a reserved word is re-applied as valid SQL") {
  session_state a(parameters{});
  pool::server_state server(10);
  pool::server_state other(10);
  run_autocommit(a, server, "SET app.\"user\" = 'alice'");
  const std::string sql = a.sync_settings_sql(other);
  CHECK(sql == "SET \"app\".\"user\" TO 'alice'");
  // What pgstash sends parses back to the same setting.
  CHECK(effects_of(sql.c_str()).settings == effects_of("SET app.\"user\" = 'alice'").settings);
}

TEST_CASE("startup options") {
  CHECK(parse_startup_options("-c a=1 -cb=2 --c-d=3 -x y\\ z") ==
        parameters{{"a", "1"}, {"b", "2"}, {"c_d", "3"}});
}

}  // namespace
}  // namespace pgstash::proxy
