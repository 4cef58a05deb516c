#include "proxy/session_state.hpp"

#include <cctype>

#include "invalidation/sql_text.hpp"

namespace pgstash::proxy {

namespace {

std::string set_statement(const std::string& name, const pool::setting_value& v) {
  return invalidation::to_sql({invalidation::setting_change::kind::set, name, v.text, v.raw});
}

// PostgreSQL (15) keeps only printable ASCII of a startup packet's
// application_name, each other byte turned into '?'. Done here too, as the
// server would: replayed in SQL, other bytes may not even be valid UTF-8.
std::string clean_application_name(std::string_view value) {
  std::string out(value);
  for (char& c : out) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 32 || byte > 126) c = '?';
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> parse_startup_options(std::string_view options) {
  // Split on unescaped whitespace; a backslash escapes the next character,
  // as PostgreSQL's pg_split_opts does.
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (std::size_t i = 0; i < options.size(); ++i) {
    char c = options[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (in_word) words.push_back(std::move(word)), word.clear(), in_word = false;
      continue;
    }
    if (c == '\\' && i + 1 < options.size()) c = options[++i];
    word += c;
    in_word = true;
  }
  if (in_word) words.push_back(std::move(word));

  std::vector<std::pair<std::string, std::string>> out;
  for (std::size_t i = 0; i < words.size(); ++i) {
    std::string_view w = words[i];
    std::string_view setting;
    if (w == "-c" && i + 1 < words.size()) {
      setting = words[++i];
    } else if (w.starts_with("-c")) {
      setting = w.substr(2);
    } else if (w.starts_with("--")) {
      setting = w.substr(2);
    } else {
      continue;
    }
    auto eq = setting.find('=');
    if (eq == std::string_view::npos) continue;
    std::string name = invalidation::ascii_lower(setting.substr(0, eq));
    for (char& c : name)
      if (c == '-') c = '_';
    out.emplace_back(std::move(name), std::string(setting.substr(eq + 1)));
  }
  return out;
}

session_state::session_state(const std::vector<std::pair<std::string, std::string>>& startup) {
  for (const auto& [name, value] : startup) {
    if (name == "options") {
      for (auto& [n, v] : parse_startup_options(value)) startup_[n] = {true, v};
    } else {
      const std::string key = invalidation::ascii_lower(name);
      startup_[key] = {true, key == "application_name" ? clean_application_name(value) : value};
    }
  }
  settings_ = startup_;
}

void session_state::statement_completed(const invalidation::statement_effects& effects,
                                        pool::server_state& server) {
  pins_ |= effects.pins;
  if (!effects.prepare_name.empty()) {
    sql_prepared_[effects.prepare_name] = effects.prepare_sql;
    server.sql_prepared[effects.prepare_name] = effects.prepare_sql;
  }
  if (!effects.deallocate_name.empty()) {
    sql_prepared_.erase(effects.deallocate_name);
    server.sql_prepared.erase(effects.deallocate_name);
  }
  if (effects.deallocate_all) {
    sql_prepared_.clear();
    // DEALLOCATE ALL drops protocol-level statements too, pgstash's included.
    server.sql_prepared.clear();
    server.prepared.clear();
  }
  if (effects.discard_all) {
    // DISCARD ALL cannot run inside a transaction block: it takes effect now.
    sql_prepared_.clear();
    settings_ = startup_;
    staged_.clear();
    savepoints_.clear();
    pins_ = invalidation::pin_none;
    server.clear();
    resync_ = !startup_.empty();
  }
  if (effects.unlisten_all) pins_ &= ~static_cast<unsigned>(invalidation::pin_listen);
  for (const auto& change : effects.settings) staged_.push_back(change);
}

const std::string* session_state::sql_prepared(const std::string& name) const {
  auto it = sql_prepared_.find(name);
  return it == sql_prepared_.end() ? nullptr : &it->second;
}

void session_state::transaction_committed(pool::server_state& server) {
  for (const auto& change : staged_) apply(change, server);
  staged_.clear();
  savepoints_.clear();
}

void session_state::transaction_rolled_back() {
  staged_.clear();
  savepoints_.clear();
}

void session_state::savepoint_created(const std::string& name) {
  savepoints_.push_back({name, staged_.size()});
}

void session_state::savepoint_released(const std::string& name) {
  for (auto it = savepoints_.rbegin(); it != savepoints_.rend(); ++it) {
    if (it->name != name) continue;
    savepoints_.erase(std::next(it).base(), savepoints_.end());
    return;
  }
}

void session_state::savepoint_rolled_back(const std::string& name) {
  for (auto it = savepoints_.rbegin(); it != savepoints_.rend(); ++it) {
    if (it->name != name) continue;
    staged_.resize(it->staged);
    // The savepoint itself survives ROLLBACK TO; later ones do not.
    savepoints_.erase(it.base(), savepoints_.end());
    return;
  }
}

void session_state::apply(const invalidation::setting_change& change, pool::server_state& server) {
  using kind = invalidation::setting_change::kind;
  switch (change.what) {
    case kind::set:
      settings_[change.name] = {change.raw, change.value_sql};
      server.settings[change.name] = {change.raw, change.value_sql};
      break;
    case kind::reset:
      // RESET returns to the session's default, which for the client is
      // its startup value; the server returns to its own default.
      if (auto it = startup_.find(change.name); it != startup_.end()) {
        settings_[change.name] = it->second;
        resync_ = true;
      } else {
        settings_.erase(change.name);
      }
      server.settings.erase(change.name);
      break;
    case kind::reset_all:
      settings_ = startup_;
      server.settings.clear();
      resync_ = !startup_.empty();
      break;
  }
}

std::string session_state::sync_settings_sql(pool::server_state& server) const {
  std::string sql;
  auto add = [&sql](const std::string& statement) { sql += (sql.empty() ? "" : ";") + statement; };
  for (auto it = server.settings.begin(); it != server.settings.end();) {
    if (settings_.count(it->first) == 0) {
      add(invalidation::to_sql({invalidation::setting_change::kind::reset, it->first, {}}));
      it = server.settings.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [name, value] : settings_) {
    auto it = server.settings.find(name);
    if (it != server.settings.end() && it->second == value) continue;
    add(set_statement(name, value));
    server.settings[name] = value;
  }
  return sql;
}

void session_state::prepared_sync::undo(pool::server_state& server) const {
  if (before) {
    server.sql_prepared[name] = *before;
  } else {
    server.sql_prepared.erase(name);
  }
}

std::vector<session_state::prepared_sync> session_state::sync_prepared_statements(
    const invalidation::statement_effects& effects, pool::server_state& server) const {
  std::vector<prepared_sync> sql;
  auto drop_theirs = [&](const std::string& name) {
    auto there = server.sql_prepared.find(name);
    if (there == server.sql_prepared.end()) return;
    sql.push_back({"DEALLOCATE " + invalidation::quote_identifier(name), name, there->second});
    server.sql_prepared.erase(there);
  };
  auto create = [&](const std::string& name, const std::string& text) {
    sql.push_back({text, name, std::nullopt});
    server.sql_prepared[name] = text;
  };
  // EXECUTE needs the client's own statement.
  if (!effects.execute_name.empty()) {
    const std::string& name = effects.execute_name;
    auto ours = sql_prepared_.find(name);
    auto there = server.sql_prepared.find(name);
    const bool ours_there = ours != sql_prepared_.end() && there != server.sql_prepared.end() &&
                            there->second == ours->second;
    if (!ours_there) {
      drop_theirs(name);
      if (ours != sql_prepared_.end()) create(name, ours->second);
    }
  }
  // DEALLOCATE, and a PREPARE that must be refused (42P05), need only the
  // name to be taken where the client has it, and free where it does not:
  // a stand-in that cannot fail serves where the client's own text may no
  // longer analyse (a table gone, another search_path), which PostgreSQL
  // would not check there.
  for (const std::string* name : {&effects.deallocate_name, &effects.prepare_name}) {
    if (name->empty()) continue;
    const bool taken = server.sql_prepared.count(*name) != 0;
    if (sql_prepared_.count(*name) == 0) {
      drop_theirs(*name);
    } else if (!taken) {
      create(*name, "PREPARE " + invalidation::quote_identifier(*name) + " AS SELECT");
    }
  }
  return sql;
}

}  // namespace pgstash::proxy
