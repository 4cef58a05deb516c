#include "invalidation/statement_walk.hpp"

#include <algorithm>

#include "invalidation/cache_functions.hpp"

namespace pgstash::invalidation {

bool is_dml(std::string_view node_type) {
  return node_type == "InsertStmt" || node_type == "UpdateStmt" || node_type == "DeleteStmt" ||
         node_type == "MergeStmt";
}

void add_unique(std::vector<object_name>& names, object_name n) {
  if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(std::move(n));
}

object_name qualified(const std::vector<std::string_view>& names, const source_text& src) {
  if (names.empty()) return {};
  return {names.size() >= 2 ? src.decode(names[names.size() - 2]) : std::string(),
          src.decode(names.back())};
}

const json* as_range_var(const json& node) {
  if (const json* rv = node_as(node, "RangeVar")) return rv;
  return member(node, "relpersistence") && member(node, "relname") ? &node : nullptr;
}

void statement_walk::add_write(const json* range_var) {
  if (!range_var) return;
  add_unique(out_.writes, {src_.decode(str_member(*range_var, "schemaname")),
                           src_.decode(str_member(*range_var, "relname"))});
  targets_.push_back(range_var);
}

bool statement_walk::is_cte(std::size_t s, std::string_view name) const {
  for (; s != k_no_scope; s = scopes_[s].parent) {
    const auto& c = scopes_[s].ctes;
    if (std::find(c.begin(), c.end(), name) != c.end()) return true;
  }
  return false;
}

void statement_walk::on_range_var(const json& rv, std::size_t s) {
  if (std::find(targets_.begin(), targets_.end(), &rv) != targets_.end()) return;
  const std::string_view schema = str_member(rv, "schemaname");
  const std::string_view name = str_member(rv, "relname");
  if (schema.empty() && is_cte(s, name)) return;  // only an unqualified name can be
  read_any_ = true;
  if (schema.starts_with("pg_temp") || str_member(rv, "relpersistence") == "t") {
    note(uncacheable::temp_relation);
  } else if (schema == "pg_catalog" || schema == "information_schema" ||
             schema.starts_with("pg_toast") || (schema.empty() && name.starts_with("pg_"))) {
    note(uncacheable::system_catalog);
  }
  add_unique(out_.reads, {src_.decode(schema), src_.decode(name)});
}

void statement_walk::on_func_call(const json& call) {
  const std::vector<std::string_view> names = name_list(member(call, "funcname"));
  if (names.empty()) return;
  out_.write_calls_functions = true;
  const json* args = member(call, "args");
  const std::size_t arg_count = args && args->is_array() ? args->size() : 0;
  switch (classify_function(names.back(), arg_count)) {
    case function_kind::time:
      note(uncacheable::time_function);
      break;
    case function_kind::session:
      note(uncacheable::session_function);
      break;
    case function_kind::remote:  // dblink: writes through another connection
      note(uncacheable::session_function);
      out_.invalidates_database = true;
      break;
    case function_kind::setting:
      note(uncacheable::session_function);
      if (set_config_leaves_read_committed(call, src_)) out_.leaves_read_committed = true;
      break;
    case function_kind::other:
      break;
  }
  add_unique(out_.functions, qualified(names, src_));
}

// WITH: each body sees the names before it (all of them if RECURSIVE), the
// rest of the statement sees all. Returns the statement's scope.
std::size_t statement_walk::enter_with(const json& with, std::size_t parent, work& stack) {
  const json* ctes = member(with, "ctes");
  if (!ctes || !ctes->is_array()) return parent;
  const bool recursive = bool_member(with, "recursive");
  std::vector<std::string_view> names;
  for (const json& c : *ctes) {
    const json* cte = node_as(c, "CommonTableExpr");
    names.push_back(cte ? str_member(*cte, "ctename") : std::string_view());
  }
  scopes_.push_back({parent, names});
  const std::size_t all = scopes_.size() - 1;
  for (std::size_t i = 0; i < ctes->size(); ++i) {
    const json* cte = node_as((*ctes)[i], "CommonTableExpr");
    const json* query = cte ? member(*cte, "ctequery") : nullptr;
    if (!query) continue;
    if (query->is_object() && query->size() == 1 && is_dml(query->begin().key())) {
      note(uncacheable::data_modifying_cte);
    }
    std::size_t body_scope = all;
    if (!recursive) {
      scopes_.push_back({parent, std::vector<std::string_view>(names.begin(), names.begin() + i)});
      body_scope = scopes_.size() - 1;
    }
    stack.emplace_back(query, body_scope);
  }
  return all;
}

void statement_walk::walk(const json& root) {
  work stack{{&root, k_no_scope}};
  while (!stack.empty()) {
    const auto [node, outer] = stack.back();
    stack.pop_back();
    const json& j = *node;
    if (j.is_array()) {
      for (auto e = j.rbegin(); e != j.rend(); ++e) {
        if (e->is_structured()) stack.emplace_back(&*e, outer);
      }
      continue;
    }
    if (!j.is_object()) continue;
    if (as_range_var(j) == &j) {
      on_range_var(j, outer);
      continue;  // only an alias below
    }
    std::size_t s = outer;
    if (const json* with = member(j, "withClause")) s = enter_with(*with, outer, stack);
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& key = it.key();
      const json& v = it.value();
      if (key == "withClause") continue;
      // Targets are registered before their RangeVar is walked.
      if (is_dml(key)) {
        add_write(member(v, "relation"));
      } else if (key == "intoClause") {
        note(uncacheable::select_into);
        add_write(member(v, "rel"));
      } else if (key == "lockingClause" && v.is_array() && !v.empty()) {
        note(uncacheable::locking_clause);
      } else if (key == "RangeTableSample") {
        note(uncacheable::sample_or_tablesample);
      } else if (key == "FuncCall" || key == "funccall") {  // funccall: CALL's, unwrapped
        on_func_call(v);
      } else if (key == "SQLValueFunction") {
        if (is_time_value_function(str_member(v, "op"))) note(uncacheable::time_function);
      } else if (key == "A_Const") {
        const json* text = member(v, "sval");
        if (text && names_current_time(str_member(*text, "sval"))) {
          note(uncacheable::time_function);
        }
      } else if (key == "typeName") {
        const auto names = name_list(member(v, "names"));
        if (!names.empty() && is_catalog_lookup_type(names.back())) {
          note(uncacheable::system_catalog);
        }
      }
      if (v.is_structured()) stack.emplace_back(&v, s);
    }
  }
}

}  // namespace pgstash::invalidation
