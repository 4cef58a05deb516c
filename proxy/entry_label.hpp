// What a cache entry's label holds for the admin port's listing: the
// database, the tables the result was read from (bare names, as the
// generations know them) and the start of the statement. Written when the
// entry is stored; the store keeps it as opaque text.
//
// Pure.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgstash::proxy {

struct entry_label {
  std::string database;
  std::vector<std::string> tables;
  std::string statement;  // at most k_statement_bytes of it, cut between characters
};

inline constexpr std::size_t k_statement_bytes = 200;

std::string encode(const entry_label& label);
// A label encode() did not write (none, or cut) gives what it can: the
// rest of the text as the statement.
entry_label decode_entry_label(std::string_view text);

}  // namespace pgstash::proxy
