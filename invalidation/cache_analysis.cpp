// Cache analysis: each statement classified by its type, its reads and
// writes found by statement_walk, its canonical hash by canonical_hash.
//
// Statement types are listed by what they may do, and anything not listed
// is taken to write anything (invalidates_database): a statement type
// PostgreSQL adds later then errs the safe way.

#include "invalidation/cache_analysis.hpp"

#include <algorithm>
#include <charconv>

#include "invalidation/cache_functions.hpp"
#include "invalidation/canonical_hash.hpp"
#include "invalidation/parse_tree.hpp"
#include "invalidation/point_filter.hpp"
#include "invalidation/sql_text.hpp"
#include "invalidation/statement_walk.hpp"

namespace pgstash::invalidation {
namespace {

// The reasons a SELECT can have, most telling first: the first found is
// reported. The first three, and session functions, also make it a write.
constexpr uncacheable k_read_reasons[] = {
    uncacheable::select_into,      uncacheable::data_modifying_cte,
    uncacheable::locking_clause,   uncacheable::sample_or_tablesample,
    uncacheable::temp_relation,    uncacheable::system_catalog,
    uncacheable::session_function, uncacheable::time_function,
};

// ISOLATION LEVEL values that keep a transaction in READ COMMITTED
// (PostgreSQL runs READ UNCOMMITTED as READ COMMITTED). A value that is not
// a constant leaves it, to be safe.
bool leaves_read_committed_value(const json* value) {
  const json* c = value ? node_as(*value, "A_Const") : nullptr;
  const json* s = c ? member(*c, "sval") : nullptr;
  if (!s) return true;
  const std::string v = ascii_lower(str_member(*s, "sval"));
  return v != "read committed" && v != "read uncommitted";
}

// BEGIN / START TRANSACTION / SET TRANSACTION / SET SESSION
// CHARACTERISTICS options: DefElems.
bool options_leave_read_committed(const json* options) {
  if (!options || !options->is_array()) return false;
  for (const json& o : *options) {
    const json* def = node_as(o, "DefElem");
    if (!def) return true;
    if (str_member(*def, "defname") == "transaction_isolation" &&
        leaves_read_committed_value(member(*def, "arg"))) {
      return true;
    }
  }
  return false;
}

bool set_leaves_read_committed(const json& stmt) {
  const std::string_view kind = str_member(stmt, "kind");
  if (kind == "VAR_RESET_ALL") return true;  // back to a default not known here
  if (kind == "VAR_SET_MULTI") {
    const std::string_view name = str_member(stmt, "name");
    if (name == "TRANSACTION" || name == "SESSION CHARACTERISTICS") {
      return options_leave_read_committed(member(stmt, "args"));
    }
    return true;  // TRANSACTION SNAPSHOT: an older snapshot, whatever the level
  }
  const std::string name = ascii_lower(str_member(stmt, "name"));
  if (name != "transaction_isolation" && name != "default_transaction_isolation") return false;
  if (kind == "VAR_SET_CURRENT") return false;  // FROM CURRENT: unchanged
  if (kind != "VAR_SET_VALUE") return true;     // DEFAULT, RESET
  const json* args = member(stmt, "args");
  return !args || !args->is_array() || args->size() != 1 ||
         leaves_read_committed_value(&(*args)[0]);
}

// DDL that defines or drops objects without running a query or a
// function of the user's (CREATE TABLE ... AS, ALTER TABLE with a DEFAULT
// it fills in, CREATE EXTENSION's script, REFRESH, DO, CALL would).
bool runs_no_code(std::string_view type) {
  static constexpr std::string_view types[] = {"CreateStmt",        "DropStmt",
                                               "ViewStmt",          "IndexStmt",
                                               "CommentStmt",       "GrantStmt",
                                               "GrantRoleStmt",     "CreateSchemaStmt",
                                               "RenameStmt",        "CreateSeqStmt",
                                               "AlterSeqStmt",      "CreateFunctionStmt",
                                               "AlterFunctionStmt", "CreatePolicyStmt",
                                               "AlterPolicyStmt",   "CreateRoleStmt",
                                               "AlterRoleStmt",     "DropRoleStmt",
                                               "CreateTrigStmt",    "RuleStmt",
                                               "AlterOwnerStmt",    "AlterObjectSchemaStmt",
                                               "DefineStmt",        "CompositeTypeStmt",
                                               "CreateEnumStmt",    "AlterEnumStmt",
                                               "CreateDomainStmt",  "DropOwnedStmt",
                                               "ReassignOwnedStmt"};
  return std::find(std::begin(types), std::end(types), type) != std::end(types);
}

// EXPLAIN runs its statement only with ANALYZE; an option value that is not
// clearly false counts as ANALYZE.
bool explain_runs(const json& explain) {
  const json* options = member(explain, "options");
  if (!options || !options->is_array()) return false;
  for (const json& o : *options) {
    const json* def = node_as(o, "DefElem");
    if (!def || str_member(*def, "defname") != "analyze") continue;
    const json* arg = member(*def, "arg");
    if (!arg) return true;
    if (const json* s = node_as(*arg, "String")) {
      const std::string v = ascii_lower(str_member(*s, "sval"));
      if (v == "false" || v == "off" || v == "no" || v == "0") continue;
    } else if (const json* b = node_as(*arg, "Boolean")) {
      if (!bool_member(*b, "boolval")) continue;
    } else if (const json* i = node_as(*arg, "Integer")) {
      if (!member(*i, "ival")) continue;  // 0 (or negative: rejected)
    }
    return true;
  }
  return false;
}

bool is_relation_object_type(std::string_view t) {
  return t == "OBJECT_TABLE" || t == "OBJECT_VIEW" || t == "OBJECT_MATVIEW" ||
         t == "OBJECT_FOREIGN_TABLE" || t == "OBJECT_SEQUENCE";
}

class analyzer {
 public:
  analyzer(cache_analysis& out, const source_text& src) : out_(out), src_(src), walk_(out, src) {}

  struct outcome {
    uncacheable reason = uncacheable::not_a_read;
    bool read_only = false;
  };

  // One statement: a node such as {"SelectStmt": {...}}.
  outcome statement(const json& node) {
    if (!node.is_object() || node.size() != 1) return unbounded(node);
    const std::string& type = node.begin().key();
    const json& body = node.begin().value();
    if (type == "SelectStmt") return select(node);
    if (is_dml(type)) {
      walk_.walk(node);
      return {uncacheable::not_a_read, false};
    }
    if (type == "CopyStmt") return copy(body);
    if (type == "TruncateStmt") {
      if (const json* rels = member(body, "relations"); rels && rels->is_array()) {
        for (const json& r : *rels) walk_.add_write(as_range_var(r));
      }
      if (str_member(body, "behavior") == "DROP_CASCADE") out_.truncate_cascade = true;
      return {uncacheable::not_a_read, false};
    }
    if (type == "RefreshMatViewStmt") {
      walk_.add_write(member(body, "relation"));
      return {uncacheable::not_a_read, false};
    }
    if (type == "ExplainStmt") {
      const json* query = member(body, "query");
      if (!explain_runs(body) || !query) return {uncacheable::cursor_or_utility, true};
      return {uncacheable::cursor_or_utility, statement(*query).read_only};
    }
    if (type == "DeclareCursorStmt") {
      const json* query = member(body, "query");
      if (!query) return unbounded(node);
      return {uncacheable::cursor_or_utility, statement(*query).read_only};
    }
    if (type == "FetchStmt" || type == "ClosePortalStmt" || type == "VariableShowStmt" ||
        type == "PrepareStmt") {  // PREPARE runs nothing
      return {uncacheable::cursor_or_utility, true};
    }
    if (type == "ExecuteStmt") {  // an SQL-prepared statement: could be anything
      out_.invalidates_database = true;
      out_.runs_code = true;
      return {uncacheable::cursor_or_utility, false};
    }
    if (type == "TransactionStmt") {
      const std::string_view kind = str_member(body, "kind");
      if (kind == "TRANS_STMT_COMMIT_PREPARED") {  // commits writes we may never have seen
        out_.invalidates_database = true;
        return {uncacheable::not_a_read, false};
      }
      if (options_leave_read_committed(member(body, "options"))) {
        out_.leaves_read_committed = true;
      }
      return {uncacheable::not_a_read, true};
    }
    if (type == "VariableSetStmt") {
      if (set_leaves_read_committed(body)) out_.leaves_read_committed = true;
      out_.changes_settings = true;
      const std::string name = ascii_lower(str_member(body, "name"));
      if (str_member(body, "kind") == "VAR_RESET_ALL" || name == "search_path" || name == "role" ||
          name == "session_authorization")
        out_.changes_resolution = true;
      return {uncacheable::not_a_read, true};
    }
    if (type == "DiscardStmt") {
      out_.changes_settings = true;
      if (str_member(body, "target") == "DISCARD_ALL") {
        out_.leaves_read_committed = true;
        out_.changes_resolution = true;
      }
      return {uncacheable::not_a_read, true};
    }
    if (type == "DeallocateStmt" || type == "ListenStmt" || type == "UnlistenStmt") {
      return {uncacheable::not_a_read, true};
    }
    // Write nothing, yet are no reads to serve a transaction from the cache
    // after: LOCK (see the header), SET CONSTRAINTS (fires deferred
    // triggers), NOTIFY, maintenance that keeps contents as they are.
    if (type == "LockStmt" || type == "ConstraintsSetStmt" || type == "NotifyStmt" ||
        type == "VacuumStmt" || type == "ClusterStmt" || type == "ReindexStmt" ||
        type == "CheckPointStmt") {
      return {uncacheable::not_a_read, false};
    }
    if (type == "CallStmt") walk_.walk(node);  // the procedure, as a function called
    if (!runs_no_code(type)) out_.runs_code = true;
    return unbounded(node);
  }

 private:
  // DDL, DO, CALL, and whatever is not recognised: writes named where the
  // statement has an obvious target, and the whole database invalidated.
  outcome unbounded(const json& node) {
    out_.invalidates_database = true;
    if (node.is_object() && node.size() == 1) {
      const json& body = node.begin().value();
      for (const char* key : {"relation", "view", "table"}) {
        if (const json* rel = member(body, key)) walk_.add_write(as_range_var(*rel));
      }
      if (const json* into = member(body, "into")) walk_.add_write(member(*into, "rel"));
      const json* objects = member(body, "objects");
      if (objects && objects->is_array()) {
        const bool named = is_relation_object_type(str_member(body, "removeType"));
        for (const json& o : *objects) {
          if (const json* list = node_as(o, "List"); list && named) {
            add_unique(out_.writes, qualified(name_list(member(*list, "items")), src_));
          } else {
            walk_.add_write(as_range_var(o));  // GRANT ... ON TABLE t
          }
        }
      }
    }
    return {uncacheable::not_a_read, false};
  }

  outcome select(const json& node) {
    walk_.restart();
    walk_.walk(node);
    if (walk_.found(uncacheable::select_into)) out_.invalidates_database = true;  // CREATE TABLE AS
    const bool writes =
        walk_.found(uncacheable::select_into) || walk_.found(uncacheable::data_modifying_cte) ||
        walk_.found(uncacheable::locking_clause) || walk_.found(uncacheable::session_function);
    for (uncacheable r : k_read_reasons) {
      if (walk_.found(r)) return {r, !writes};
    }
    return {walk_.read_any() ? uncacheable::none : uncacheable::no_relation, !writes};
  }

  outcome copy(const json& body) {
    const json* rel = member(body, "relation");
    if (bool_member(body, "is_from")) {
      walk_.add_write(rel);
      // FROM PROGRAM runs a shell command as the server: it may do anything.
      if (bool_member(body, "is_program")) out_.invalidates_database = true;
      if (const json* where = member(body, "whereClause")) walk_.walk(*where);
      return {uncacheable::not_a_read, false};
    }
    if (const json* query = member(body, "query")) {
      return {uncacheable::cursor_or_utility, statement(*query).read_only};
    }
    if (rel) walk_.walk(*rel);
    return {uncacheable::cursor_or_utility, true};
  }

  cache_analysis& out_;
  const source_text& src_;
  statement_walk walk_;
};

}  // namespace

std::string_view to_string(uncacheable reason) {
  switch (reason) {
    case uncacheable::none:
      return "none";
    case uncacheable::parse_error:
      return "parse_error";
    case uncacheable::not_a_read:
      return "not_a_read";
    case uncacheable::several_statements:
      return "several_statements";
    case uncacheable::locking_clause:
      return "locking_clause";
    case uncacheable::select_into:
      return "select_into";
    case uncacheable::data_modifying_cte:
      return "data_modifying_cte";
    case uncacheable::time_function:
      return "time_function";
    case uncacheable::session_function:
      return "session_function";
    case uncacheable::system_catalog:
      return "system_catalog";
    case uncacheable::temp_relation:
      return "temp_relation";
    case uncacheable::no_relation:
      return "no_relation";
    case uncacheable::sample_or_tablesample:
      return "sample_or_tablesample";
    case uncacheable::cursor_or_utility:
      return "cursor_or_utility";
    case uncacheable::volatile_function:
      return "volatile_function";
    case uncacheable::unknown_function:
      return "unknown_function";
    case uncacheable::unknown_relation:
      return "unknown_relation";
    case uncacheable::sequence:
      return "sequence";
    case uncacheable::foreign_table:
      return "foreign_table";
    case uncacheable::unlogged_relation:
      return "unlogged_relation";
    case uncacheable::in_writing_transaction:
      return "in_writing_transaction";
    case uncacheable::isolation_level:
      return "isolation_level";
    case uncacheable::too_large:
      return "too_large";
    case uncacheable::partial_fetch:
      return "partial_fetch";
    case uncacheable::notice_or_error:
      return "notice_or_error";
    case uncacheable::unfollowed_settings:
      return "unfollowed_settings";
    case uncacheable::rule_or_config:
      return "rule_or_config";
  }
  return "unknown";
}

cache_analysis analyze_for_cache(std::string_view sql) {
  cache_analysis out;
  const source_text src(sql);
  const parse_result parsed = parse(src);
  if (parsed.error) {
    out.reason = uncacheable::parse_error;
    return out;
  }
  const json* stmts = member(parsed.tree, "stmts");
  // JSON we cannot read: assume the worst.
  auto unreadable = [&] {
    out = cache_analysis{};
    out.reason = uncacheable::not_a_read;
    out.invalidates_database = true;
    return out;
  };
  if (parsed.tree.is_discarded() || !stmts || !stmts->is_array()) return unreadable();
  try {
    const text_digest canonical = canonical_digest(*stmts, src);
    out.canonical_low = canonical.low;
    out.canonical_high = canonical.high;
    analyzer a(out, src);
    bool read_only = true;
    uncacheable reason = uncacheable::not_a_read;  // an empty text runs nothing
    for (const json& raw : *stmts) {
      const json* stmt = member(raw, "stmt");
      const analyzer::outcome o = stmt ? a.statement(*stmt) : analyzer::outcome{};
      read_only = read_only && o.read_only;
      reason = o.reason;
    }
    out.reason = stmts->size() > 1 ? uncacheable::several_statements : reason;
    out.read_only = read_only;
    if (stmts->size() == 1) {
      if (const json* stmt = member((*stmts)[0], "stmt")) out.point = find_point_filter(*stmt, src);
    }
  } catch (const json::exception&) {
    return unreadable();
  }
  return out;
}

bool parameter_names_current_time(std::string_view value) { return names_current_time(value); }

std::optional<std::int64_t> integer_value(std::string_view text) {
  const std::string_view digits = text.starts_with('-') ? text.substr(1) : text;
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) {
        return is_digit(static_cast<unsigned char>(c));
      }))
    return std::nullopt;
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace pgstash::invalidation
