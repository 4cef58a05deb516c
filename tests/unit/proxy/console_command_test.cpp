#include "proxy/console_command.hpp"

#include <doctest/doctest.h>

using namespace pgstash::proxy;

TEST_CASE("console SHOW commands, in any case, with or without a semicolon") {
  CHECK(parse_console_command("SHOW POOLS;").verb == console_verb::show_pools);
  CHECK(parse_console_command("show clients").verb == console_verb::show_clients);
  CHECK(parse_console_command("  Show   Servers ; ").verb == console_verb::show_servers);
  CHECK(parse_console_command("show stats").verb == console_verb::show_stats);
  CHECK(parse_console_command("show config").verb == console_verb::show_config);
  CHECK(parse_console_command("show version").verb == console_verb::show_version);
  CHECK(parse_console_command("show help").verb == console_verb::show_help);
  CHECK(parse_console_command("show cache").verb == console_verb::show_cache);
  CHECK(parse_console_command("SHOW CACHE ENTRIES").verb == console_verb::show_cache_entries);
  CHECK(parse_console_command("show cache tables;").verb == console_verb::show_cache_tables);
  CHECK(parse_console_command(" ; ").verb == console_verb::empty);
}

TEST_CASE("console INVALIDATE commands name a table, a database or everything") {
  auto t = parse_console_command("INVALIDATE TABLE orders");
  CHECK(t.verb == console_verb::invalidate_table);
  CHECK(t.name == "orders");
  CHECK(parse_console_command("invalidate table public.Orders;").name == "orders");
  CHECK(parse_console_command("invalidate table \"Mixed Case\"").name == "Mixed Case");
  CHECK(parse_console_command("invalidate table s.\"a.b\"").name == "a.b");
  CHECK(parse_console_command("invalidate table \"x\"\"y\"").name == "x\"y");
  auto d = parse_console_command("invalidate database Shop");
  CHECK(d.verb == console_verb::invalidate_database);
  CHECK(d.name == "shop");
  CHECK(parse_console_command("INVALIDATE ALL;").verb == console_verb::invalidate_all);
}

TEST_CASE("console INVALIDATE STATEMENT takes a LIKE pattern as a string literal") {
  auto s = parse_console_command("INVALIDATE STATEMENT '%from  orders where%';");
  CHECK(s.verb == console_verb::invalidate_statement);
  CHECK(s.name == "%from  orders where%");
  CHECK(parse_console_command("invalidate statement 'it''s%'").name == "it's%");
  for (const char* bad : {"invalidate statement", "invalidate statement ''",
                          "invalidate statement 'unclosed", "invalidate statement bare%",
                          "invalidate statement 'a' extra"}) {
    CAPTURE(bad);
    CHECK(parse_console_command(bad).verb == console_verb::invalid);
  }
}

TEST_CASE("anything else is refused with the list of commands") {
  for (const char* bad : {"select 1", "show", "show pools please", "show cache everything",
                          "invalidate", "invalidate table", "invalidate table s.", "invalidate everything",
                          "invalidate table \"unclosed"}) {
    CAPTURE(bad);
    const auto c = parse_console_command(bad);
    CHECK(c.verb == console_verb::invalid);
    CHECK(!c.error.empty());
  }
  for (const char* bad : {"invalidate database \"\"", "invalidate database \"abc",
                          "invalidate database abc\"", "invalidate database \""}) {
    CAPTURE(bad);
    CHECK(parse_console_command(bad).verb == console_verb::invalid);
  }
  CHECK(parse_console_command("invalidate database \"Shop\"").name == "Shop");
}
