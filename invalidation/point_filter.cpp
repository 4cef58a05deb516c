// What makes a statement's rows those of one value of one column: the
// shapes accepted are few on purpose (see cache_analysis::point). Anything
// else has no point filter, which only ever means invalidating more.

#include "invalidation/point_filter.hpp"

#include <string_view>
#include <vector>

namespace pgstash::invalidation {
namespace {

// How many objects in `node`, at any depth, `match` holds for. Iterative,
// as expressions nest deeply.
template <class Match>
std::size_t count_objects(const json& node, Match match) {
  std::size_t count = 0;
  std::vector<const json*> stack{&node};
  while (!stack.empty()) {
    const json* j = stack.back();
    stack.pop_back();
    if (j->is_array()) {
      for (const json& e : *j) stack.push_back(&e);
    } else if (j->is_object()) {
      if (match(*j)) ++count;
      for (const auto& item : j->items()) stack.push_back(&item.value());
    }
  }
  return count;
}

// RangeVars, wrapped or not: the relations a statement names.
std::size_t count_range_vars(const json& node) {
  return count_objects(node, [](const json& j) {
    return member(j, "relname") != nullptr && member(j, "relpersistence") != nullptr;
  });
}

// How many times the parameter $`number` appears in `node`.
std::size_t count_parameter(const json& node, int number) {
  return count_objects(node, [number](const json& j) {
    const json* p = node_as(j, "ParamRef");
    return p && int_member(*p, "number") == number;
  });
}

// The column a ColumnRef names, if it is one of the relation called
// `qualifier` (its alias, else its name): `col` or `qualifier.col`.
std::optional<std::string> column_of(const json& node, std::string_view qualifier,
                                     const source_text& src) {
  const json* ref = node_as(node, "ColumnRef");
  if (!ref) return std::nullopt;
  const json* fields = member(*ref, "fields");
  if (!fields || !fields->is_array() || fields->empty() || fields->size() > 2) return std::nullopt;
  std::vector<std::string_view> names;
  for (const json& f : *fields) {
    const json* s = node_as(f, "String");
    if (!s) return std::nullopt;  // A_Star
    names.push_back(str_member(*s, "sval"));
  }
  if (names.size() == 2 && names[0] != qualifier) return std::nullopt;
  return src.decode(names.back());
}

// The value of a constant or parameter compared with the column.
std::optional<point_filter::equality> value_of(const json& node, const source_text& src) {
  if (const json* param = node_as(node, "ParamRef")) {
    const std::int64_t number = int_member(*param, "number");
    if (number < 1 || number > 65535) return std::nullopt;
    return point_filter::equality{{}, std::nullopt, static_cast<int>(number)};
  }
  const json* c = node_as(node, "A_Const");
  if (!c || bool_member(*c, "isnull")) return std::nullopt;
  std::optional<std::string> text;
  if (const json* i = member(*c, "ival")) {
    text = integer_sql(*c, *i, src);
  } else if (const json* f = member(*c, "fval")) {
    text = std::string(str_member(*f, "fval"));  // an integer beyond int4 is one
  } else if (const json* s = member(*c, "sval")) {
    text = std::string(str_member(*s, "sval"));  // '7', read by the column's type
  }
  const std::optional<std::int64_t> value = text ? integer_value(*text) : std::nullopt;
  if (!value) return std::nullopt;
  return point_filter::equality{{}, value, 0};
}

// Adds each top-level conjunct of `where` that is `column = value` (either
// way round) to out.equalities.
void add_equalities(const json& where, std::string_view qualifier, const source_text& src,
                    point_filter& out) {
  std::vector<const json*> stack{&where};
  while (!stack.empty()) {
    const json& node = *stack.back();
    stack.pop_back();
    if (const json* b = node_as(node, "BoolExpr")) {
      const json* args = member(*b, "args");
      // Reversed, so that they are taken in the order written.
      if (str_member(*b, "boolop") == "AND_EXPR" && args && args->is_array())
        for (auto a = args->rbegin(); a != args->rend(); ++a) stack.push_back(&*a);
      continue;
    }
    const json* e = node_as(node, "A_Expr");
    if (!e || str_member(*e, "kind") != "AEXPR_OP") continue;
    const std::vector<std::string_view> op = name_list(member(*e, "name"));
    const json* l = member(*e, "lexpr");
    const json* r = member(*e, "rexpr");
    if (op.size() != 1 || op[0] != "=" || !l || !r) continue;
    for (auto [col, val] : {std::pair{l, r}, std::pair{r, l}}) {
      auto column = column_of(*col, qualifier, src);
      auto value = column ? value_of(*val, src) : std::nullopt;
      if (!value) continue;
      value->column = std::move(*column);
      out.equalities.push_back(std::move(*value));
      break;
    }
  }
}

}  // namespace

std::optional<point_filter> find_point_filter(const json& stmt, const source_text& src) {
  if (!stmt.is_object() || stmt.size() != 1) return std::nullopt;
  const std::string& type = stmt.begin().key();
  const json& body = stmt.begin().value();
  if (member(body, "withClause")) return std::nullopt;
  const json* rv = nullptr;
  std::vector<std::string_view> assigned;
  if (type == "SelectStmt") {
    // The one relation anywhere in it: no join, subquery or set operation
    // reads other rows.
    const json* from = member(body, "fromClause");
    if (member(body, "intoClause") || !from || !from->is_array() || from->size() != 1)
      return std::nullopt;
    rv = node_as((*from)[0], "RangeVar");
    if (!rv || count_range_vars(body) != 1) return std::nullopt;
  } else if (type == "UpdateStmt") {
    if (member(body, "fromClause")) return std::nullopt;
    rv = member(body, "relation");
    if (const json* targets = member(body, "targetList"); targets && targets->is_array()) {
      for (const json& t : *targets) {
        const json* res = node_as(t, "ResTarget");
        if (!res) return std::nullopt;
        assigned.push_back(str_member(*res, "name"));
      }
    }
  } else if (type == "DeleteStmt") {
    if (member(body, "usingClause")) return std::nullopt;
    rv = member(body, "relation");
  } else {
    return std::nullopt;
  }
  const json* where = member(body, "whereClause");
  if (!rv || !where) return std::nullopt;
  point_filter out;
  out.relation = {src.decode(str_member(*rv, "schemaname")),
                  src.decode(str_member(*rv, "relname"))};
  const json* alias = member(*rv, "alias");
  // FROM t AS x(a, b) renames the columns: `a` is t's first, whatever its name.
  if (alias && member(*alias, "colnames")) return std::nullopt;
  const std::string_view qualifier =
      alias ? str_member(*alias, "aliasname") : str_member(*rv, "relname");
  add_equalities(*where, qualifier, src, out);
  // An UPDATE that sets the column moves rows to another value.
  std::erase_if(out.equalities, [&](const point_filter::equality& e) {
    for (std::string_view name : assigned)
      if (src.decode(name) == e.column) return true;
    return false;
  });
  // An untyped parameter takes its type from its first use, which may be
  // another (`$1::float4`): used once, it is the column's.
  std::erase_if(out.equalities, [&](const point_filter::equality& e) {
    return e.parameter != 0 && count_parameter(body, e.parameter) != 1;
  });
  if (out.equalities.empty()) return std::nullopt;
  return out;
}

}  // namespace pgstash::invalidation
