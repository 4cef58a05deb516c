#include "proxy/entry_label.hpp"

#include <algorithm>

namespace pgstash::proxy {

// Lines: database, tables separated by spaces, statement. Names cannot hold
// a newline that matters here: a quoted identifier with one only makes its
// own listing line odd.
std::string encode(const entry_label& label) {
  std::string out = label.database + "\n";
  for (std::size_t i = 0; i < label.tables.size(); ++i) out += (i ? " " : "") + label.tables[i];
  out += "\n";
  std::size_t cut = std::min(label.statement.size(), k_statement_bytes);
  // Not inside a UTF-8 character: back to the start of the one cut.
  if (cut < label.statement.size())
    while (cut > 0 && (static_cast<unsigned char>(label.statement[cut]) & 0xc0) == 0x80) --cut;
  out.append(label.statement, 0, cut);
  return out;
}

entry_label decode_entry_label(std::string_view text) {
  entry_label out;
  const auto first = text.find('\n');
  const auto second = first == std::string_view::npos ? first : text.find('\n', first + 1);
  if (second == std::string_view::npos) {
    out.statement = text;
    return out;
  }
  out.database = text.substr(0, first);
  std::string_view tables = text.substr(first + 1, second - first - 1);
  while (!tables.empty()) {
    const auto space = tables.find(' ');
    out.tables.emplace_back(tables.substr(0, space));
    tables = space == std::string_view::npos ? std::string_view{} : tables.substr(space + 1);
  }
  out.statement = text.substr(second + 1);
  return out;
}

}  // namespace pgstash::proxy
