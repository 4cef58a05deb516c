#include "proxy/entry_label.hpp"

#include <string>

#include <doctest/doctest.h>

using namespace pgstash::proxy;

TEST_CASE("an entry label gives back what was encoded") {
  const entry_label label{"app", {"orders", "order_items"}, "select * from orders_v where id = $1"};
  const entry_label back = decode_entry_label(encode(label));
  CHECK(back.database == "app");
  CHECK(back.tables == std::vector<std::string>{"orders", "order_items"});
  CHECK(back.statement == label.statement);
}

TEST_CASE("an entry label keeps the start of a long statement and a statement's own newlines") {
  const std::string sql = "select\n  x\nfrom t where s = '" + std::string(500, 'a') + "'";
  const entry_label back = decode_entry_label(encode({"db", {"t"}, sql}));
  CHECK(back.statement == sql.substr(0, k_statement_bytes));
  CHECK(back.tables == std::vector<std::string>{"t"});
}

TEST_CASE("an entry label cuts a long statement between UTF-8 characters") {
  // "é" is two bytes: 199 ASCII bytes put one across the 200-byte cut.
  std::string sql(199, 'a');
  sql.append("\xc3\xa9");
  sql.append("bbb");
  const entry_label back = decode_entry_label(encode({"db", {"t"}, sql}));
  CHECK(back.statement == std::string(199, 'a'));
}

TEST_CASE("a label encode() did not write is all statement") {
  CHECK(decode_entry_label("select 1").statement == "select 1");
  CHECK(decode_entry_label("select 1").database.empty());
  CHECK(decode_entry_label("db\nonly two lines").statement == "db\nonly two lines");
  CHECK(decode_entry_label("db\n\nselect 2").tables.empty());
}
