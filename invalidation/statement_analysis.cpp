// Statement analysis: a hand-written lexical pre-filter, and a walk over
// libpg_query's parse tree.
//
// Why JSON: pg_query_parse() emits the tree as JSON, which nlohmann::json
// reads into a DOM we walk generically. The typed alternative,
// pg_query_parse_protobuf() plus pg_query__parse_result__unpack(), measured
// about twice as slow (~28 us vs ~15 us for a small SELECT; the JSON text
// itself takes ~3 us): protobuf-c walks every field of a message's
// descriptor, and Node's oneof has ~250. One JSON-only bug needs a
// workaround, see integer_sql() in parse_tree.hpp.
//
// Why settings are rebuilt from the tree rather than sliced from the text:
// the tree is what the server acts on, so literals rebuilt from it are exact
// even for E'..', U&'..', comments between list items, or continued string
// literals, and equal values get equal value_sql.

#include "invalidation/statement_analysis.hpp"

#include "invalidation/parse_tree.hpp"
#include "invalidation/sql_text.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>

namespace pgstash::invalidation {
namespace {

// ---- Characters, classified as PostgreSQL's scan.l does (is_space and
// is_digit are in parse_tree.hpp).

bool is_ident_start(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}
bool is_ident_cont(unsigned char c) { return is_ident_start(c) || is_digit(c) || c == '$'; }
// `lower_prefix` must be lower case.
bool istarts_with(std::string_view s, std::string_view lower_prefix) {
  if (s.size() < lower_prefix.size()) return false;
  for (std::size_t i = 0; i < lower_prefix.size(); ++i) {
    if (ascii_lower(s[i]) != lower_prefix[i]) return false;
  }
  return true;
}
bool iequals(std::string_view s, std::string_view lower_word) {
  return s.size() == lower_word.size() && istarts_with(s, lower_word);
}

// ---- The pre-filter.

// Words that matter only as a statement's first word.
constexpr std::string_view k_leading_words[] = {
    "abort",   "begin",   "commit", "deallocate", "discard",   "end", "listen", "load",
    "prepare", "release", "reset",  "rollback",   "savepoint", "set", "start",  "unlisten",
};
// Words that matter anywhere. Quoted identifiers are checked too, since
// "set_config"(...) still names the function.
constexpr std::string_view k_anywhere_words[] = {
    "execute",  // EXECUTE, EXPLAIN EXECUTE, CREATE TABLE AS EXECUTE
    "hold",     // DECLARE ... WITH HOLD
    "temp",
    "temporary",
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
};

bool flagged_word(std::string_view w, bool leading) {
  if (istarts_with(w, "pg_temp")) return true;
  for (std::string_view k : k_anywhere_words) {
    if (iequals(w, k)) return true;
  }
  if (leading) {
    for (std::string_view k : k_leading_words) {
      if (iequals(w, k)) return true;
    }
  }
  return false;
}

// ---- Building SQL.

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts) {
    if (!out.empty()) out += ", ";
    out += p;
  }
  return out;
}

// One SET argument (an A_Const) as SQL that parses back to the same node.
std::optional<std::string> arg_sql(const json& node, const source_text& src) {
  const json* c = node_as(node, "A_Const");
  if (!c) return std::nullopt;
  if (const json* v = member(*c, "sval")) return quote_literal(src.decode(str_member(*v, "sval")));
  if (const json* v = member(*c, "ival")) return integer_sql(*c, *v, src);
  if (const json* v = member(*c, "fval")) return std::string(str_member(*v, "fval"));
  return std::nullopt;
}

// `SET TIME ZONE INTERVAL '+02:00' [HOUR TO MINUTE]`: the server flattens it
// to the string "INTERVAL '...'", which the timezone GUC parses back, but
// without the interval's range. Exact only with no range, or with HOUR TO
// MINUTE on a plain [+-]hh:mm (which the range cannot change).
std::optional<std::string> timezone_interval_sql(const json& node, const source_text& src) {
  const json* cast = node_as(node, "TypeCast");
  if (!cast) return std::nullopt;
  const json* arg = member(*cast, "arg");
  const json* c = arg ? node_as(*arg, "A_Const") : nullptr;
  const json* sval = c ? member(*c, "sval") : nullptr;
  const json* type = member(*cast, "typeName");
  if (!sval || !type) return std::nullopt;
  const auto names = name_list(member(*type, "names"));
  if (names.empty() || names.back() != "interval") return std::nullopt;
  const std::string lit = src.decode(str_member(*sval, "sval"));
  if (lit.empty() || lit.find('\'') != std::string::npos) return std::nullopt;
  if (const json* typmods = member(*type, "typmods"); typmods && !typmods->empty()) {
    constexpr std::int64_t k_hour_to_minute = (1 << 10) | (1 << 11);  // INTERVAL_MASK(HOUR|MINUTE)
    const json* mod = typmods->size() == 1 ? node_as((*typmods)[0], "A_Const") : nullptr;
    const json* ival = mod ? member(*mod, "ival") : nullptr;
    if (!ival || int_member(*ival, "ival") != k_hour_to_minute) return std::nullopt;
    const std::size_t i = (lit[0] == '+' || lit[0] == '-') ? 1 : 0;
    const std::size_t hours = lit.find(':', i);
    if (hours == std::string::npos || hours == i || hours - i > 2 || lit.size() != hours + 3) {
      return std::nullopt;
    }
    for (std::size_t k = i; k < lit.size(); ++k) {
      if (k != hours && !is_digit(static_cast<unsigned char>(lit[k]))) return std::nullopt;
    }
  }
  return quote_literal("INTERVAL '" + lit + "'");
}

// GUCs whose SET arguments the server quotes as identifiers
// (GUC_LIST_QUOTE) and that a session can change. set_config() takes their
// value raw, so it must be split into identifiers to rebuild a SET.
bool is_list_quote_guc(std::string_view name) {
  return name == "search_path" || name == "temp_tablespaces" || name == "local_preload_libraries" ||
         name == "session_preload_libraries";
}

// PostgreSQL's SplitIdentifierString(raw, ','): quoted names keep case and
// collapse "" (and may be empty), unquoted ones are lower-cased. nullopt on
// bad syntax, which the server rejects too.
std::optional<std::vector<std::string>> split_identifiers(std::string_view raw) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; };
  std::vector<std::string> names;
  std::size_t i = 0;
  while (i < raw.size() && space(raw[i])) ++i;
  if (i == raw.size()) return names;
  for (;;) {
    std::string name;
    if (raw[i] == '"') {
      for (++i;; ++i) {
        if (i == raw.size()) return std::nullopt;
        if (raw[i] == '"') {
          if (i + 1 < raw.size() && raw[i + 1] == '"') {
            name.push_back('"');
            ++i;
            continue;
          }
          ++i;
          break;
        }
        name.push_back(raw[i]);
      }
    } else {
      while (i < raw.size() && raw[i] != ',' && !space(raw[i]))
        name.push_back(ascii_lower(raw[i++]));
      if (name.empty()) return std::nullopt;
    }
    names.push_back(std::move(name));
    while (i < raw.size() && space(raw[i])) ++i;
    if (i == raw.size()) return names;
    if (raw[i] != ',') return std::nullopt;
    ++i;
    while (i < raw.size() && space(raw[i])) ++i;
  }
}

// The change set_config(name, raw, false) makes. For list GUCs value_sql
// is equivalent, not byte-identical: SHOW may differ in spacing, quoting
// and case ("A,b" shows as "a, b"). nullopt if `raw` is not a valid list.
std::optional<setting_change> raw_setting(std::string name, std::string_view raw) {
  if (!is_list_quote_guc(name)) return setting_change{setting_change::kind::set, std::move(name), quote_literal(raw)};
  const auto names = split_identifiers(raw);
  if (!names) return std::nullopt;
  // SET cannot spell an empty list: it is kept as the value itself.
  if (names->empty()) return setting_change{setting_change::kind::set, std::move(name), std::string(raw), true};
  std::vector<std::string> parts;
  for (const std::string& n : *names) parts.push_back(quote_literal(n));
  return setting_change{setting_change::kind::set, std::move(name), join(parts)};
}

// Settings that live only for the current transaction even when SET
// without LOCAL.
bool is_transaction_scoped(std::string_view name) {
  return name == "transaction_isolation" || name == "transaction_read_only" ||
         name == "transaction_deferrable";
}

// ---- Constant function arguments, for set_config().

struct text_arg {
  bool constant = false;
  bool null = false;
  std::string text;
};

text_arg const_text(const json& node, const source_text& src) {
  const json* c = node_as(node, "A_Const");
  if (const json* cast = node_as(node, "TypeCast")) {
    const json* type = member(*cast, "typeName");
    const auto names = type ? name_list(member(*type, "names")) : std::vector<std::string_view>{};
    const json* typmods = type ? member(*type, "typmods") : nullptr;
    const bool texty = !names.empty() && (names.back() == "text" || names.back() == "varchar");
    if (!texty || (typmods && !typmods->empty())) return {};
    const json* arg = member(*cast, "arg");
    c = arg ? node_as(*arg, "A_Const") : nullptr;
  }
  if (!c) return {};
  if (bool_member(*c, "isnull")) return {true, true, {}};
  if (const json* v = member(*c, "sval")) return {true, false, src.decode(str_member(*v, "sval"))};
  return {};  // a number or bool: not a text argument
}

// PostgreSQL's parse_bool(), as boolin() applies it.
std::optional<bool> parse_bool(std::string_view s) {
  while (!s.empty() && is_space(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && is_space(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  if (s.empty()) return std::nullopt;
  auto prefix_of = [&](std::string_view word) {
    return s.size() <= word.size() && istarts_with(word, ascii_lower(s));
  };
  if (prefix_of("true") || prefix_of("yes")) return true;
  if (prefix_of("false") || prefix_of("no")) return false;
  if (s.size() >= 2 && prefix_of("on")) return true;
  if (s.size() >= 2 && prefix_of("off")) return false;
  if (s == "1") return true;
  if (s == "0") return false;
  return std::nullopt;
}

// set_config's is_local argument; NULL counts as false, as in the server.
std::optional<bool> const_bool(const json& node) {
  const json* c = node_as(node, "A_Const");
  if (const json* cast = node_as(node, "TypeCast")) {
    const json* type = member(*cast, "typeName");
    const auto names = type ? name_list(member(*type, "names")) : std::vector<std::string_view>{};
    if (names.empty() || names.back() != "bool") return std::nullopt;
    const json* arg = member(*cast, "arg");
    c = arg ? node_as(*arg, "A_Const") : nullptr;
  }
  if (!c) return std::nullopt;
  if (bool_member(*c, "isnull")) return false;
  if (const json* v = member(*c, "boolval")) return bool_member(*v, "boolval");
  if (const json* v = member(*c, "sval")) return parse_bool(str_member(*v, "sval"));
  return std::nullopt;
}

// ---- Statements.

constexpr std::int64_t k_cursor_opt_hold = 0x0020;  // CURSOR_OPT_HOLD

constexpr std::string_view k_advisory_lock_functions[] = {
    "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared"};

// Keys whose value is a qualified name (a list of String): a first
// component of pg_temp creates or uses a temporary object.
constexpr std::string_view k_name_list_keys[] = {
    "funcname", "names", "defnames", "domainname", "typeName", "collname", "conversion_name"};

bool is_set_config(const std::vector<std::string_view>& names) {
  return !names.empty() && names.back() == "set_config";
}

void on_set_config(const json& call, bool runs_once, statement_effects& fx,
                   const source_text& src) {
  const json* args = member(call, "args");
  if (!args || !args->is_array() || args->size() != 3) {
    fx.pins |= pin_opaque_setting;  // named or missing arguments
    return;
  }
  const std::optional<bool> is_local = const_bool((*args)[2]);
  if (is_local == true) return;  // undone at transaction end
  const text_arg name = const_text((*args)[0], src);
  const text_arg value = const_text((*args)[1], src);
  if (!is_local || !name.constant || !value.constant || !runs_once) {
    fx.pins |= pin_opaque_setting;
    return;
  }
  if (name.null) return;  // the call fails: "SET requires parameter name"
  std::string guc = ascii_lower(name.text);
  if (guc.empty()) {
    fx.pins |= pin_opaque_setting;
    return;
  }
  if (guc == "session_authorization") {
    fx.pins |= pin_session_authorization;
    return;
  }
  if (is_transaction_scoped(guc)) return;
  if (value.null) {  // set_config(name, NULL, false) resets
    fx.settings.push_back({setting_change::kind::reset, std::move(guc), {}});
    return;
  }
  std::optional<setting_change> change = raw_setting(std::move(guc), value.text);
  if (!change) {
    fx.pins |= pin_opaque_setting;
    return;
  }
  fx.settings.push_back(std::move(*change));
}

void on_func_call(const json& call, bool runs_once, statement_effects& fx, const source_text& src) {
  const auto names = name_list(member(call, "funcname"));
  if (names.empty()) return;
  for (std::string_view f : k_advisory_lock_functions) {
    if (names.back() == f) fx.pins |= pin_advisory_lock;  // any schema: pins are cheap
  }
  if (!is_set_config(names)) return;
  if (names.size() == 1 || (names.size() == 2 && names[0] == "pg_catalog")) {
    on_set_config(call, runs_once, fx, src);
  } else {
    fx.pins |= pin_opaque_setting;  // someone's own set_config: unknown
  }
}

// set_config() calls that certainly run exactly once: the targets of a
// top-level `SELECT f(...), ...` with no FROM, WHERE, GROUP BY, HAVING,
// LIMIT/OFFSET or set operation, whose targets are all set_config() calls
// or constants (a set-returning target could yield no row).
std::vector<const json*> calls_run_once(const json& select) {
  std::vector<const json*> calls;
  for (const char* key : {"fromClause", "whereClause", "groupClause", "havingClause", "limitCount",
                          "limitOffset", "valuesLists", "larg", "rarg", "windowClause"}) {
    if (member(select, key)) return {};
  }
  const json* targets = member(select, "targetList");
  if (!targets || !targets->is_array()) return {};
  for (const json& t : *targets) {
    const json* rt = node_as(t, "ResTarget");
    const json* val = rt ? member(*rt, "val") : nullptr;
    if (!val) return {};
    if (node_as(*val, "A_Const")) continue;
    const json* call = node_as(*val, "FuncCall");
    if (!call || !is_set_config(name_list(member(*call, "funcname")))) return {};
    calls.push_back(call);
  }
  return calls;
}

// Walks the whole statement tree (iteratively: expressions nest deeply) for
// effects that can sit anywhere: function calls, temporary relations,
// EXECUTE, DECLARE ... WITH HOLD.
void scan_tree(const json& root, const std::vector<const json*>& run_once, statement_effects& fx,
               const source_text& src) {
  std::vector<const json*> stack{&root};
  std::vector<const json*> dropped_at_commit;  // RangeVars created ON COMMIT DROP
  while (!stack.empty()) {
    const json& j = *stack.back();
    stack.pop_back();
    if (j.is_array()) {
      // Reversed, so elements are visited in order (settings keep theirs).
      for (auto e = j.rbegin(); e != j.rend(); ++e) {
        if (e->is_structured()) stack.push_back(&*e);
      }
      continue;
    }
    if (!j.is_object()) continue;
    // A temp table dropped at commit outlives nothing (and inside a
    // transaction, the transaction already holds the connection).
    if (str_member(j, "oncommit") == "ONCOMMIT_DROP") {
      if (const json* rel = member(j, "relation")) dropped_at_commit.push_back(rel);
    }
    if (str_member(j, "onCommit") == "ONCOMMIT_DROP") {
      if (const json* rel = member(j, "rel")) dropped_at_commit.push_back(rel);
    }
    // A RangeVar, wrapped or not, is the object with relpersistence.
    if (const json* p = member(j, "relpersistence"); p && p->is_string()) {
      const bool temp = *p == "t" || istarts_with(str_member(j, "schemaname"), "pg_temp");
      if (temp && std::find(dropped_at_commit.begin(), dropped_at_commit.end(), &j) ==
                      dropped_at_commit.end()) {
        fx.pins |= pin_temp_object;
      }
    }
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& key = it.key();
      const json& v = it.value();
      if (key == "FuncCall") {
        const bool once = std::find(run_once.begin(), run_once.end(), &v) != run_once.end();
        on_func_call(v, once, fx, src);
      } else if (key == "ExecuteStmt") {
        fx.execute_name = src.decode(str_member(v, "name"));
        const json* params = member(v, "params");
        fx.execute_arguments = params && params->is_array() ? static_cast<int>(params->size()) : 0;
      } else if (key == "DeclareCursorStmt") {
        if (int_member(v, "options") & k_cursor_opt_hold) fx.pins |= pin_hold_cursor;
      } else if (v.is_array() && !v.empty() &&
                 std::find(std::begin(k_name_list_keys), std::end(k_name_list_keys), key) !=
                     std::end(k_name_list_keys)) {
        const json* first = node_as(v[0], "String");
        if (first && istarts_with(str_member(*first, "sval"), "pg_temp"))
          fx.pins |= pin_temp_object;
      }
      if (v.is_structured()) stack.push_back(&v);
    }
  }
}

void on_variable_set(const json& stmt, statement_effects& fx, const source_text& src) {
  const std::string_view kind = str_member(stmt, "kind");
  if (kind == "VAR_RESET_ALL") {
    fx.settings.push_back({setting_change::kind::reset_all, {}, {}});
    return;
  }
  if (bool_member(stmt, "is_local")) return;  // SET LOCAL: gone at transaction end
  const std::string name = src.decode(str_member(stmt, "name"));
  const json* args = member(stmt, "args");
  if (kind == "VAR_SET_MULTI") {
    if (name == "TRANSACTION" || name == "TRANSACTION SNAPSHOT") return;  // this transaction only
    if (name != "SESSION CHARACTERISTICS" || !args || !args->is_array()) {
      fx.pins |= pin_opaque_setting;
      return;
    }
    // SET SESSION CHARACTERISTICS AS TRANSACTION ... sets the session's
    // default_transaction_* settings (ExecSetVariableStmt).
    for (const json& a : *args) {
      const json* def = node_as(a, "DefElem");
      const json* arg = def ? member(*def, "arg") : nullptr;
      const std::optional<std::string> value = arg ? arg_sql(*arg, src) : std::nullopt;
      const std::string_view defname = def ? str_member(*def, "defname") : std::string_view();
      if (!value || !defname.starts_with("transaction_")) {
        fx.pins |= pin_opaque_setting;
        continue;
      }
      fx.settings.push_back({setting_change::kind::set, "default_" + std::string(defname), *value});
    }
    return;
  }
  std::string guc = ascii_lower(name);
  if (guc == "session_authorization") {
    fx.pins |= pin_session_authorization;
    return;
  }
  if (is_transaction_scoped(guc)) return;
  if (kind == "VAR_SET_DEFAULT" || kind == "VAR_RESET") {  // also SET TIME ZONE LOCAL
    fx.settings.push_back({setting_change::kind::reset, std::move(guc), {}});
    return;
  }
  if (kind == "VAR_SET_CURRENT") return;  // SET x FROM CURRENT: the value does not change
  if (kind != "VAR_SET_VALUE" || !args || !args->is_array() || args->empty()) {
    fx.pins |= pin_opaque_setting;
    return;
  }
  std::vector<std::string> parts;
  for (const json& a : *args) {
    std::optional<std::string> part = arg_sql(a, src);
    if (!part && guc == "timezone") part = timezone_interval_sql(a, src);
    if (!part) {
      fx.pins |= pin_opaque_setting;
      return;
    }
    parts.push_back(std::move(*part));
  }
  fx.settings.push_back({setting_change::kind::set, std::move(guc), join(parts)});
}

transaction_effect transaction_kind(std::string_view kind) {
  if (kind == "TRANS_STMT_BEGIN" || kind == "TRANS_STMT_START") return transaction_effect::begin;
  if (kind == "TRANS_STMT_COMMIT") return transaction_effect::commit;
  if (kind == "TRANS_STMT_ROLLBACK") return transaction_effect::rollback;
  if (kind == "TRANS_STMT_SAVEPOINT") return transaction_effect::savepoint;
  if (kind == "TRANS_STMT_RELEASE") return transaction_effect::release_savepoint;
  if (kind == "TRANS_STMT_ROLLBACK_TO") return transaction_effect::rollback_to_savepoint;
  if (kind == "TRANS_STMT_PREPARE") return transaction_effect::prepare_transaction;
  return transaction_effect::none;  // COMMIT/ROLLBACK PREPARED: no transaction of ours
}

// The text of one statement, for replaying a PREPARE: without the
// whitespace and comments that precede it, and ending in a newline if its
// last line might end in a -- comment that would swallow appended text.
std::string statement_text(const json& raw, const source_text& src) {
  const std::int64_t location = int_member(raw, "stmt_location");
  const std::int64_t length = int_member(raw, "stmt_len");  // 0: to the end
  const std::string& text = src.original();
  const std::size_t begin = src.to_original(location);
  const std::size_t end = length > 0 ? src.to_original(location + length) : text.size();
  std::string_view s = std::string_view(text).substr(begin, end - std::min(begin, end));
  for (;;) {
    while (!s.empty() && is_space(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    if (s.starts_with("--")) {
      const std::size_t eol = s.find_first_of("\r\n");
      s.remove_prefix(eol == std::string_view::npos ? s.size() : eol);
    } else if (s.starts_with("/*")) {
      const std::size_t after = skip_block_comment(s, 0);
      s.remove_prefix(after == std::string_view::npos ? s.size() : after);
    } else {
      break;
    }
  }
  while (!s.empty() && is_space(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  std::string out(s);
  const std::size_t last_line = s.find_last_of("\r\n");
  if (s.find("--", last_line == std::string_view::npos ? 0 : last_line) != std::string_view::npos) {
    out.push_back('\n');
  }
  return out;
}

// The highest $n a parse tree refers to: PostgreSQL gives a PREPARE as many
// parameters as that, or as it declares if more.
int highest_parameter(const json& node) {
  int highest = 0;
  std::vector<const json*> stack{&node};
  while (!stack.empty()) {
    const json& j = *stack.back();
    stack.pop_back();
    if (j.is_object()) {
      if (const json* ref = member(j, "ParamRef"))
        highest = std::max(highest, static_cast<int>(int_member(*ref, "number")));
      for (auto it = j.begin(); it != j.end(); ++it)
        if (it.value().is_structured()) stack.push_back(&it.value());
    } else if (j.is_array()) {
      for (const json& e : j)
        if (e.is_structured()) stack.push_back(&e);
    }
  }
  return highest;
}

// A statement node that returns rows: a query, or a write with RETURNING.
bool returns_rows(const json* node) {
  if (!node || !node->is_object() || node->size() != 1) return false;
  const std::string& type = node->begin().key();
  if (type == "SelectStmt") return true;
  const bool write = type == "InsertStmt" || type == "UpdateStmt" || type == "DeleteStmt";
  return write && member(node->begin().value(), "returningList") != nullptr;
}

statement_effects analyze_statement(const json& raw, const source_text& src) {
  statement_effects fx;
  const json* stmt = member(raw, "stmt");
  if (!stmt || !stmt->is_object() || stmt->size() != 1) return fx;
  const std::string& type = stmt->begin().key();
  const json& body = stmt->begin().value();
  std::vector<const json*> run_once;
  if (type == "VariableSetStmt") {
    on_variable_set(body, fx, src);
  } else if (type == "TransactionStmt") {
    fx.transaction = transaction_kind(str_member(body, "kind"));
    fx.savepoint_name = std::string(str_member(body, "savepoint_name"));
  } else if (type == "ListenStmt") {
    fx.pins |= pin_listen;
  } else if (type == "UnlistenStmt") {
    fx.unlisten_all = !member(body, "conditionname");
  } else if (type == "LoadStmt") {
    fx.pins |= pin_load;
  } else if (type == "PrepareStmt") {
    fx.prepare_name = src.decode(str_member(body, "name"));
    fx.prepare_sql = statement_text(raw, src);
    fx.prepare_returns_rows = returns_rows(member(body, "query"));
    const json* types = member(body, "argtypes");
    const int declared = types && types->is_array() ? static_cast<int>(types->size()) : 0;
    const json* query = member(body, "query");
    fx.prepare_parameters = std::max(declared, query ? highest_parameter(*query) : 0);
  } else if (type == "DeallocateStmt") {
    fx.deallocate_name = src.decode(str_member(body, "name"));
    fx.deallocate_all = fx.deallocate_name.empty();
  } else if (type == "DiscardStmt") {
    fx.discard_all = str_member(body, "target") == "DISCARD_ALL";
  } else if (type == "SelectStmt") {
    run_once = calls_run_once(body);
  }
  scan_tree(*stmt, run_once, fx, src);
  return fx;
}

}  // namespace

bool analysis::any_effect() const {
  const statement_effects none;
  return std::any_of(statements.begin(), statements.end(),
                     [&](const statement_effects& s) { return !(s == none); });
}

bool analysis::changes_prepared_statements() const {
  return std::any_of(statements.begin(), statements.end(), [](const statement_effects& s) {
    return !s.prepare_name.empty() || !s.deallocate_name.empty() || s.deallocate_all ||
           s.discard_all;
  });
}

bool may_have_effects(std::string_view sql) {
  bool leading = true;  // the next word would be a statement's first
  std::size_t i = 0;
  const std::size_t n = sql.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(sql[i]);
    if (is_space(c)) {
      ++i;
    } else if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
      while (i < n && sql[i] != '\n' && sql[i] != '\r') ++i;
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
      i = skip_block_comment(sql, i);
      if (i == std::string_view::npos) return true;
    } else if (c == ';') {
      leading = true;
      ++i;
    } else if (c == '\'') {
      // A literal. A backslash may escape a quote (E'', or a server with
      // standard_conforming_strings off): give up rather than guess.
      for (++i;; ++i) {
        if (i >= n || sql[i] == '\\') return true;
        if (sql[i] == '\'') {
          if (i + 1 < n && sql[i + 1] == '\'') {
            ++i;
            continue;
          }
          ++i;
          break;
        }
      }
      leading = false;
    } else if (c == '"') {
      // U&"..." can spell any name with escapes.
      if (i > 0 && sql[i - 1] == '&') return true;
      const std::size_t start = i + 1;
      bool doubled = false;  // contains "", which stands for "
      for (++i;; ++i) {
        if (i >= n) return true;
        if (sql[i] == '"') {
          if (i + 1 < n && sql[i + 1] == '"') {
            doubled = true;
            ++i;
            continue;
          }
          break;
        }
      }
      std::string_view word = sql.substr(start, i - start);
      std::string unescaped;
      if (doubled) {
        for (std::size_t k = 0; k < word.size(); ++k) {
          unescaped.push_back(word[k]);
          if (word[k] == '"') ++k;
        }
        word = unescaped;
      }
      if (flagged_word(word, false)) return true;
      ++i;
      leading = false;
    } else if (c == '$') {
      // $1 is a parameter; anything else may open a dollar quote.
      if (i + 1 >= n || !is_digit(static_cast<unsigned char>(sql[i + 1]))) return true;
      for (++i; i < n && is_digit(static_cast<unsigned char>(sql[i]));) ++i;
      leading = false;
    } else if (is_ident_start(c)) {
      const std::size_t start = i;
      while (i < n && is_ident_cont(static_cast<unsigned char>(sql[i]))) ++i;
      if (flagged_word(sql.substr(start, i - start), leading)) return true;
      leading = false;
    } else if (is_digit(c)) {
      // Digits only: whatever letters follow are checked as a word.
      while (i < n && is_digit(static_cast<unsigned char>(sql[i]))) ++i;
      leading = false;
    } else {
      ++i;
      leading = false;
    }
  }
  return false;
}

analysis analyze(std::string_view sql) {
  analysis out;
  const source_text src(sql);
  const parse_result parsed = parse(src);
  if (parsed.error) {
    out.parse_error = true;
    return out;
  }
  // Should libpg_query ever hand us JSON we cannot read, assume the worst
  // (pin) rather than "no effect".
  statement_effects unknown;
  unknown.pins = pin_opaque_setting;
  const json& tree = parsed.tree;
  const json* stmts = member(tree, "stmts");
  if (tree.is_discarded() || !stmts || !stmts->is_array()) {
    out.statements.push_back(unknown);
    return out;
  }
  try {
    for (const json& raw : *stmts) out.statements.push_back(analyze_statement(raw, src));
  } catch (const json::exception&) {
    out.statements.assign(1, unknown);
  }
  return out;
}

std::string describe_pins(unsigned pins) {
  static constexpr std::pair<pin_reason, std::string_view> k_names[] = {
      {pin_listen, "LISTEN"},
      {pin_advisory_lock, "session advisory lock"},
      {pin_temp_object, "temporary object"},
      {pin_hold_cursor, "WITH HOLD cursor"},
      {pin_session_authorization, "SET SESSION AUTHORIZATION"},
      {pin_opaque_setting, "a setting change pgstash cannot repeat"},
      {pin_load, "LOAD"},
  };
  std::string out;
  for (const auto& [bit, name] : k_names) {
    if ((pins & bit) == 0) continue;
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

std::string to_sql(const setting_change& c) {
  if (c.what == setting_change::kind::reset_all) return "RESET ALL";
  std::string name;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = c.name.find('.', start);
    name += quote_identifier(std::string_view(c.name).substr(
        start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    name += '.';
    start = dot + 1;
  }
  if (c.what == setting_change::kind::reset) return "RESET " + name;
  if (c.raw)
    return "SELECT pg_catalog.set_config(" + quote_literal(c.name) + ", " + quote_literal(c.value_sql) +
           ", false)";
  return "SET " + name + " TO " + c.value_sql;
}

}  // namespace pgstash::invalidation
