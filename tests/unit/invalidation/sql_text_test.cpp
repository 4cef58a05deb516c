#include "invalidation/sql_text.hpp"

#include <doctest/doctest.h>

#include "invalidation/statement_analysis.hpp"

namespace pgstash::invalidation {
namespace {

TEST_CASE("sql_text: literals mean the same with or without standard_conforming_strings") {
  CHECK(quote_literal("plain") == "'plain'");
  CHECK(quote_literal("it's") == "'it''s'");
  CHECK(quote_literal("a\\b'c") == "E'a\\\\b''c'");
  CHECK(quote_literal("") == "''");
  // Each parses back to the text it quotes.
  analysis a = analyze("SET application_name = " + quote_literal("a\\b'c"));
  REQUIRE(a.statements.size() == 1);
  REQUIRE(a.statements[0].settings.size() == 1);
  CHECK(a.statements[0].settings[0].value_sql == "E'a\\\\b''c'");
}

TEST_CASE("sql_text: identifiers and case folding") {
  CHECK(quote_identifier("My \"odd\" name") == "\"My \"\"odd\"\" name\"");
  CHECK(quote_identifier("") == "\"\"");
  CHECK(ascii_lower("Search_PATH") == "search_path");
  // Only ASCII folds, as PostgreSQL folds unquoted names in UTF8.
  CHECK(ascii_lower("ÀB") == "Àb");
}

}  // namespace
}  // namespace pgstash::invalidation
