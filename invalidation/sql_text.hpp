// Writing SQL text that pgstash sends itself: string literals, identifiers,
// and PostgreSQL's case folding of unquoted names (ASCII only, as its
// downcase_identifier does for multibyte encodings). Pure.
#pragma once

#include <string>
#include <string_view>

namespace pgstash::invalidation {

// `value` as a string literal that means the same whatever the server's
// standard_conforming_strings: 'it''s', or E'a\\b' when it has a backslash.
std::string quote_literal(std::string_view value);
// `name` as a quoted identifier: "My ""odd"" name".
std::string quote_identifier(std::string_view name);

char ascii_lower(char c);
std::string ascii_lower(std::string_view s);
// A name as typed: "Quoted" keeps its case (and "" stands for "), a bare
// one is folded to lower case, as PostgreSQL folds identifiers.
std::string fold_identifier(std::string_view word);

}  // namespace pgstash::invalidation
