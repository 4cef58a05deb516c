#include "proxy/console_command.hpp"

#include <array>
#include <cctype>
#include <optional>
#include <utility>
#include <vector>

#include "invalidation/sql_text.hpp"

namespace pgstash::proxy {

namespace {

// Words split at blanks and semicolons, except inside double quotes.
std::vector<std::string_view> words_of(std::string_view sql) {
  const auto separator = [](char c) { return std::isspace(static_cast<unsigned char>(c)) || c == ';'; };
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < sql.size()) {
    while (i < sql.size() && separator(sql[i])) ++i;
    const std::size_t start = i;
    bool quoted = false;
    while (i < sql.size() && (quoted || !separator(sql[i]))) {
      if (sql[i] == '"') quoted = !quoted;
      ++i;
    }
    if (i > start) words.push_back(sql.substr(start, i - start));
  }
  return words;
}

bool is(std::string_view word, std::string_view keyword) {
  if (word.size() != keyword.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(word[i])) != keyword[i]) return false;
  return true;
}

// The SQL string literal ('...', '' for a quote) that starts `text`, and
// nothing after it but blanks and semicolons; nullopt otherwise.
std::optional<std::string> string_literal(std::string_view text) {
  if (text.empty() || text.front() != '\'') return std::nullopt;
  std::string out;
  std::size_t i = 1;
  for (;; ++i) {
    if (i >= text.size()) return std::nullopt;
    if (text[i] == '\'') {
      if (i + 1 < text.size() && text[i + 1] == '\'') {
        out += '\'';
        ++i;
        continue;
      }
      break;
    }
    out += text[i];
  }
  for (++i; i < text.size(); ++i)
    if (!std::isspace(static_cast<unsigned char>(text[i])) && text[i] != ';') return std::nullopt;
  return out;
}

console_command invalid(std::string why) {
  return {console_verb::invalid, {}, std::move(why)};
}

}  // namespace

std::string_view console_help() {
  return "SHOW POOLS | CLIENTS | SERVERS | STATS | CONFIG | VERSION | HELP\n"
         "SHOW CACHE | SHOW CACHE ENTRIES | SHOW CACHE TABLES\n"
         "INVALIDATE TABLE [schema.]name | INVALIDATE DATABASE name | INVALIDATE ALL\n"
         "INVALIDATE STATEMENT 'LIKE pattern'\n"
         "PAUSE [db] | RESUME [db]\n"
         "RELOAD";
}

console_command parse_console_command(std::string_view sql) {
  const std::vector<std::string_view> w = words_of(sql);
  if (w.empty()) return {console_verb::empty, {}, {}};
  if (is(w[0], "show") && w.size() == 2) {
    static constexpr std::array<std::pair<std::string_view, console_verb>, 7> k_shows = {{
        {"pools", console_verb::show_pools},
        {"clients", console_verb::show_clients},
        {"servers", console_verb::show_servers},
        {"stats", console_verb::show_stats},
        {"config", console_verb::show_config},
        {"version", console_verb::show_version},
        {"help", console_verb::show_help},
    }};
    for (const auto& [keyword, verb] : k_shows)
      if (is(w[1], keyword)) return {verb, {}, {}};
    if (is(w[1], "cache")) return {console_verb::show_cache, {}, {}};
  }
  if (is(w[0], "show") && w.size() == 3 && is(w[1], "cache")) {
    if (is(w[2], "entries")) return {console_verb::show_cache_entries, {}, {}};
    if (is(w[2], "tables")) return {console_verb::show_cache_tables, {}, {}};
  }
  if (is(w[0], "reload") && w.size() == 1) return {console_verb::reload, {}, {}};
  if ((is(w[0], "pause") || is(w[0], "resume")) && w.size() <= 2) {
    const console_verb verb = is(w[0], "pause") ? console_verb::pause : console_verb::resume;
    if (w.size() == 1) return {verb, {}, {}};
    std::string name = invalidation::fold_identifier(w[1]);
    if (name.empty() || (w[1].front() == '"') != (w[1].back() == '"') || w[1] == "\"")
      return invalid("PAUSE and RESUME take a database name, or none for all");
    return {verb, std::move(name), {}};
  }
  if (is(w[0], "invalidate")) {
    if (w.size() == 2 && is(w[1], "all")) return {console_verb::invalidate_all, {}, {}};
    if (w.size() >= 3 && is(w[1], "statement")) {
      // The literal as typed: words_of() splits at its blanks.
      const std::size_t at = static_cast<std::size_t>(w[2].data() - sql.data());
      auto pattern = string_literal(sql.substr(at));
      if (!pattern || pattern->empty())
        return invalid("INVALIDATE STATEMENT needs a pattern in single quotes, e.g. '%from orders%'");
      return {console_verb::invalidate_statement, std::move(*pattern), {}};
    }
    if (w.size() == 3 && is(w[1], "database")) {
      std::string name = invalidation::fold_identifier(w[2]);
      if (name.empty() || w[2] == "\"" || (w[2].front() == '"') != (w[2].back() == '"'))
        return invalid("INVALIDATE DATABASE needs a database name");
      return {console_verb::invalidate_database, std::move(name), {}};
    }
    if (w.size() == 3 && is(w[1], "table")) {
      // The generations know a relation by its bare name: the schema, if
      // given, is dropped (which only ever invalidates more).
      std::string_view name = w[2];
      bool quoted = false;
      std::size_t last_dot = std::string_view::npos;
      for (std::size_t i = 0; i < name.size(); ++i) {
        if (name[i] == '"') quoted = !quoted;
        if (name[i] == '.' && !quoted) last_dot = i;
      }
      if (last_dot != std::string_view::npos) name.remove_prefix(last_dot + 1);
      if (name.empty() || quoted) return invalid("INVALIDATE TABLE needs a table name");
      return {console_verb::invalidate_table, invalidation::fold_identifier(name), {}};
    }
    return invalid("INVALIDATE takes TABLE name, DATABASE name or ALL");
  }
  return invalid("unknown admin console command");
}

}  // namespace pgstash::proxy
