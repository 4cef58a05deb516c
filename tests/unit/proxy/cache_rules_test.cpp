#include "proxy/cache_rules.hpp"

#include <doctest/doctest.h>

using pgstash::conf::cache_rule;
using pgstash::proxy::cache_rules;

namespace {

cache_rule rule(std::string table, std::string statement, cache_rule::action what) {
  cache_rule r;
  r.table = std::move(table);
  r.statement = std::move(statement);
  r.what = what;
  return r;
}

}  // namespace

TEST_CASE("cache rules: the first match applies; tables by bare name, statements by ILIKE") {
  const cache_rules rules(
      {rule("Public.Secrets", "", cache_rule::action::never),
       rule("\"Mixed\"", "", cache_rule::action::never),
       rule("orders", "select % from orders where id = %", cache_rule::action::force),
       rule("", "SELECT report(%", cache_rule::action::cache)});
  CHECK_FALSE(rules.empty());
  const cache_rule* found = rules.find("select * from v", {"secrets", "v"});
  REQUIRE(found);
  CHECK(found->table == "Public.Secrets");
  CHECK(rules.find("select 1 from x", {"Mixed"})->table == "\"Mixed\"");
  CHECK_FALSE(rules.find("select 1 from x", {"mixed"}));
  CHECK(rules.find("SELECT * FROM orders WHERE id = 7", {"orders"})->what ==
        cache_rule::action::force);
  // The statement pattern alone is not enough where the rule names a table.
  CHECK_FALSE(rules.find("select * from orders where id = 7", {"lines"}));
  CHECK(rules.find("select report(3)", {})->what == cache_rule::action::cache);
  CHECK_FALSE(rules.find("select reports(3)", {}));
  CHECK(cache_rules({}).empty());
}
