#include "invalidation/catalog.hpp"

#include <algorithm>
#include <array>
#include <cctype>

#include <libpq-fe.h>

namespace pgstash::invalidation {

namespace {

using namespace std::chrono_literals;

// Reconnect no more often than this: a server that is down must not be
// hammered by every look-up.
constexpr auto k_reconnect_interval = 1s;

// Run once on every new control connection. Our SQL names catalog objects
// unqualified, so it must find pg_catalog's; the connection only ever reads;
// a catalog query never waits on locks long, but a stuck one must not stall
// the caller forever. No JIT: the recursive queries' row estimates are wild,
// and compiling them took 1.5 s for a query that runs in 1 ms.
constexpr const char* k_session_setup =
    "SET search_path = pg_catalog, pg_temp; "
    "SET default_transaction_read_only = on; "
    "SET statement_timeout = '10s'; "
    "SET jit = off";

// The oids a relation name stands for. $1 relname, $2 schemas to search in
// order, $3 the client's role (its missing USAGE hides a schema, as on the
// server; no such role: nothing hidden), $4 whether temporary relations of
// that name, in any session's temp schema, are candidates too.
constexpr const char* k_resolve_relation = R"sql(
SELECT c.oid
  FROM pg_class c
 WHERE $4::bool AND c.relname = $1 AND c.relpersistence = 't' AND c.relkind NOT IN ('i', 'I', 't')
UNION ALL
(SELECT c.oid
   FROM unnest($2::text[]) WITH ORDINALITY AS s(nspname, ord)
   JOIN pg_namespace n ON n.nspname = s.nspname
   JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = $1
  WHERE n.nspname = 'pg_catalog'
     OR coalesce(has_schema_privilege((SELECT r.oid FROM pg_roles r WHERE r.rolname = $3),
                                      n.oid, 'USAGE'), true)
  ORDER BY s.ord
  LIMIT 1)
)sql";

// Everything reachable from the roots $1. `reach`: the relations whose rows a
// read (or, with $2, a write) of the roots can see (or change): what a view's
// _RETURN rule reads, every inheritance/partition descendant and, with $2, the
// referencing side of FK constraints whose actions write. `up`: those plus all
// their ancestors. One row per relation of `up`.
//
// What a view reads: pg_depend does not record dependencies on objects made by
// initdb (pinned: pg_class, now(), ...), so the relations of its range table
// are also read from the stored rule itself (pg_node_tree text, where every
// relation RTE is written " :relid N"; a name or alias spelling that would be
// written with escaped spaces, so cannot fake it). In PostgreSQL 15 a view's
// rule also lists the view itself (as OLD and NEW), hence the `<> rc.oid`.
// pg_depend adds relations named only through constants ('s'::regclass).
constexpr const char* k_closure = R"sql(
WITH RECURSIVE reach(oid) AS (
    SELECT unnest($1::oid[])
  UNION
    SELECT e.oid
      FROM reach r
      JOIN pg_class rc ON rc.oid = r.oid
     CROSS JOIN LATERAL (
          SELECT m[1]::oid
            FROM pg_rewrite w, regexp_matches(w.ev_action::text, ' :relid (\d+)', 'g') AS m
           WHERE rc.relkind = 'v' AND w.ev_class = rc.oid AND w.rulename = '_RETURN'
             AND m[1]::oid <> rc.oid
        UNION ALL
          SELECT d.refobjid
            FROM pg_rewrite w
            JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
                            AND d.refclassid = 'pg_class'::regclass
           WHERE rc.relkind = 'v' AND w.ev_class = rc.oid AND w.rulename = '_RETURN'
             AND d.refobjid <> rc.oid
        UNION ALL
          SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = rc.oid
        UNION ALL
          SELECT k.conrelid
            FROM pg_constraint k
           WHERE $2::bool AND k.contype = 'f' AND k.confrelid = rc.oid
             AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))
     ) AS e(oid)
),
up(oid) AS (
    SELECT oid FROM reach
  UNION
    SELECT i.inhparent FROM up u JOIN pg_inherits i ON i.inhrelid = u.oid
)
SELECT c.oid, c.relname, c.relkind, c.relpersistence,
       n.nspname IN ('pg_catalog', 'information_schema', 'pg_toast') OR c.oid < 16384,
       c.oid IN (SELECT oid FROM reach),
       c.oid = ANY($1::oid[]),
       EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal)
         OR EXISTS (SELECT 1 FROM pg_rewrite w WHERE w.ev_class = c.oid AND w.rulename <> '_RETURN')
  FROM up
  JOIN pg_class c ON c.oid = up.oid
  JOIN pg_namespace n ON n.oid = c.relnamespace
)sql";
enum closure_column : int { c_oid, c_relname, c_relkind, c_persistence, c_system, c_reach, c_root,
                            c_triggers_or_rules };

// The column whose equality with a value bounds the rows of relation $1 that
// a read sees, or a write changes, to those of that value: its primary key,
// if that is one integer column, not generated, of a table no write reaches
// other rows of behind the statement's back (no user trigger, no rule, no FK
// to itself, no FK action from a relation among $2, those a write of it
// reaches) and that no other table's reads or writes reach (no inheritance
// or partitioning either way). No row otherwise.
constexpr const char* k_point_key = R"sql(
SELECT a.attname
  FROM pg_class c
  JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary AND i.indnkeyatts = 1
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
 WHERE c.oid = $1 AND c.relkind = 'r' AND c.relpersistence <> 't' AND NOT c.relispartition
   AND a.atttypid IN (20, 21, 23) AND a.attgenerated = ''
   AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid OR h.inhparent = c.oid)
   AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                    WHERE k.contype = 'f' AND k.conrelid = c.oid
                      AND (k.confrelid = c.oid
                           OR (k.confrelid = ANY($2::oid[])
                               AND (k.confdeltype IN ('c', 'n', 'd')
                                    OR k.confupdtype IN ('c', 'n', 'd')))))
   AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal)
   AND NOT EXISTS (SELECT 1 FROM pg_rewrite w WHERE w.ev_class = c.oid)
)sql";

// What the views $1 call, as (provolatile, schema, name) rows: every function
// in their rules' trees (FuncExpr, an operator's code, aggregates, window
// functions; found in the node text, as pg_depend omits built-ins), plus a
// volatile pseudo-row for a time-dependent or CURRENT_SCHEMA SQLValueFunction
// (CURRENT_TIMESTAMP, LOCALTIME, ...: only CURRENT_ROLE/USER, USER,
// SESSION_USER and CURRENT_CATALOG, ops 9-13 in PostgreSQL 15, are fixed by
// the cache key; from 16 on those became function calls and only the time ones
// remain) and for TABLESAMPLE.
// Row-level-security policies of the relations read ($1) whose USING
// expression reads a relation: the rows a read returns then change with
// writes to that relation, which nothing would invalidate.
constexpr const char* k_policies_reading_relations = R"sql(
SELECT 1
  FROM pg_policy p
  JOIN pg_class c ON c.oid = p.polrelid
 WHERE p.polrelid = ANY($1::oid[]) AND c.relrowsecurity AND p.polqual::text ~ ' :relid \d+'
 LIMIT 1
)sql";

constexpr const char* k_view_functions = R"sql(
WITH rules AS (
  SELECT w.ev_action::text AS tree
    FROM pg_rewrite w
   WHERE w.ev_class = ANY($1::oid[]) AND w.rulename = '_RETURN'
  UNION ALL
  SELECT p.polqual::text
    FROM pg_policy p
    JOIN pg_class c ON c.oid = p.polrelid
   WHERE p.polrelid = ANY($2::oid[]) AND c.relrowsecurity AND p.polqual IS NOT NULL
),
refs AS (
  SELECT m[1] AS field, m[2]::oid AS oid
    FROM rules,
         regexp_matches(tree, ' :(funcid|opfuncid|opno|aggfnoid|winfnoid|hashfuncid|negfuncid) (\d+)',
                        'g') AS m
)
SELECT p.provolatile, n.nspname, p.proname
  FROM refs
  JOIN pg_proc p ON p.oid = CASE refs.field
         WHEN 'opno' THEN (SELECT o.oprcode::oid FROM pg_operator o WHERE o.oid = refs.oid)
         ELSE refs.oid
       END
  JOIN pg_namespace n ON n.oid = p.pronamespace
UNION ALL
SELECT 'v', 'pg_catalog', 'SQLValueFunction ' || m[1]
  FROM rules, regexp_matches(tree, '\{SQLVALUEFUNCTION :op (\d+)', 'g') AS m
 WHERE m[1]::int NOT BETWEEN 9 AND 13
UNION ALL
SELECT 'v', 'pg_catalog', 'TABLESAMPLE'
  FROM rules
 WHERE strpos(tree, '{TABLESAMPLECLAUSE ') > 0
)sql";

// Every overload of $1 in the schemas $2 that the role $3 may use.
// The default_transaction_isolation a login of $1 starts with: role and
// database settings, most specific first, then the server's own (unless
// this connection's value came from its own role or database: not known).
constexpr const char* k_default_isolation = R"sql(
SELECT coalesce(
  (SELECT substr(c, length('default_transaction_isolation=') + 1)
     FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) AS c
    WHERE c LIKE 'default\_transaction\_isolation=%'
      AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
      AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = $1))
    ORDER BY s.setrole <> 0 DESC, s.setdatabase <> 0 DESC
    LIMIT 1),
  (SELECT setting FROM pg_settings
    WHERE name = 'default_transaction_isolation'
      AND source NOT IN ('database', 'user', 'database user', 'client', 'session')))
)sql";

constexpr const char* k_function_overloads = R"sql(
SELECT p.provolatile, n.nspname, p.proname
  FROM unnest($2::text[]) AS s(nspname)
  JOIN pg_namespace n ON n.nspname = s.nspname
  JOIN pg_proc p ON p.pronamespace = n.oid AND p.proname = $1
 WHERE n.nspname = 'pg_catalog'
    OR coalesce(has_schema_privilege((SELECT r.oid FROM pg_roles r WHERE r.rolname = $3),
                                     n.oid, 'USAGE'), true)
)sql";

// STABLE pg_catalog functions whose result the cache key fixes (settings,
// database, role). See the header for what is left out and why.
constexpr std::array<std::string_view, 4> k_stable_allowed = {
    "current_setting", "current_database", "current_user", "session_user"};

bool overload_cacheable(std::string_view provolatile, std::string_view nspname,
                        std::string_view proname) {
  if (provolatile == "i") return true;
  return provolatile == "s" && nspname == "pg_catalog" &&
         std::find(k_stable_allowed.begin(), k_stable_allowed.end(), proname) !=
             k_stable_allowed.end();
}

// The alias of the session's own temp schema, which the control connection
// cannot know (pg_temp_N are real names and are looked up as such).
bool is_own_temp_schema(std::string_view schema) { return schema == "pg_temp"; }

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// As the server's truncate_identifier: NAMEDATALEN - 1 bytes, not splitting a
// UTF-8 character.
void truncate_identifier(std::string& name) {
  constexpr std::size_t max_len = 63;
  if (name.size() <= max_len) return;
  std::size_t cut = max_len;
  while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) --cut;
  name.resize(cut);
}

// {"a","b"} with the quoting of array_in, for a text[] or oid[] parameter.
std::string array_literal(const std::vector<std::string>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    out += '"';
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

// Where an unqualified name is looked up: pg_catalog first unless the path
// places it, and not pg_temp (functions are never looked up there; temporary
// relations are candidates wherever pg_temp is, see resolve()).
std::vector<std::string> unqualified_search_order(std::vector<std::string> path) {
  std::erase(path, std::string("pg_temp"));
  if (std::find(path.begin(), path.end(), "pg_catalog") == path.end())
    path.insert(path.begin(), "pg_catalog");
  return path;
}

std::string_view value(const PGresult* r, int row, int col) {
  return {PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col))};
}

bool flag(const PGresult* r, int row, int col) { return value(r, row, col) == "t"; }

void sort_unique(std::vector<std::string>& names) {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
}

}  // namespace

std::optional<std::vector<std::string>> search_path_schemas(std::string_view s,
                                                            std::string_view user) {
  // The grammar of the server's SplitIdentifierString(value, ',').
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size() && is_space(s[i])) ++i;
  if (i == s.size()) return out;  // an empty path is allowed
  for (;;) {
    std::string name;
    if (s[i] == '"') {
      ++i;
      for (;;) {
        if (i == s.size()) return std::nullopt;  // unterminated
        if (s[i] == '"') {
          if (i + 1 < s.size() && s[i + 1] == '"') {
            name += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        name += s[i++];
      }
    } else {
      const std::size_t start = i;
      while (i < s.size() && s[i] != ',' && !is_space(s[i])) {
        const char c = s[i++];
        name += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
      }
      if (i == start) return std::nullopt;  // an empty element
    }
    truncate_identifier(name);
    if (name == "$user") {
      if (!user.empty()) out.emplace_back(user);
    } else {
      out.push_back(std::move(name));
    }
    while (i < s.size() && is_space(s[i])) ++i;
    if (i == s.size()) return out;
    if (s[i] != ',') return std::nullopt;
    ++i;
    while (i < s.size() && is_space(s[i])) ++i;
    if (i == s.size()) return std::nullopt;  // a trailing comma
  }
}

void catalog::result_deleter::operator()(PGresult* r) const { PQclear(r); }

catalog::catalog(std::string conninfo) : conninfo_(std::move(conninfo)) { connect(); }

catalog::~catalog() { disconnect(); }

bool catalog::connected() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }

void catalog::disconnect() {
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
}

void catalog::connect() {
  disconnect();
  last_attempt_ = std::chrono::steady_clock::now();
  // Defaults first: with expand_dbname, the conninfo's own keywords override them.
  const char* const keywords[] = {"connect_timeout", "application_name", "dbname", nullptr};
  const char* const values[] = {"5", "pgstash catalog", conninfo_.c_str(), nullptr};
  conn_ = PQconnectdbParams(keywords, values, 1);
  if (!connected()) {
    disconnect();
    return;
  }
  result setup(PQexec(conn_, k_session_setup));
  if (!setup || PQresultStatus(setup.get()) != PGRES_COMMAND_OK) disconnect();
}

bool catalog::ensure_connected() {
  if (connected()) return true;
  disconnect();
  if (std::chrono::steady_clock::now() - last_attempt_ < k_reconnect_interval) return false;
  connect();
  return connected();
}

catalog::result catalog::exec(const char* sql, const std::vector<std::string>& params) {
  // libpq takes C strings: a name with a NUL in it would silently become
  // another name. The server's parser never produces one.
  for (const auto& p : params)
    if (p.find('\0') != std::string::npos) return nullptr;
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p.c_str());

  // A second attempt only if the first found the connection broken (the
  // server restarted, or closed an idle session).
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!ensure_connected()) return nullptr;
    result r(PQexecParams(conn_, sql, static_cast<int>(values.size()), nullptr, values.data(),
                          nullptr, nullptr, 0));
    if (r && PQresultStatus(r.get()) == PGRES_TUPLES_OK) return r;
    if (connected()) return nullptr;  // this query failed; asking again would not help
    disconnect();
  }
  return nullptr;
}

std::optional<std::vector<std::string>> catalog::resolve(std::string_view search_path,
                                                         std::string_view user,
                                                         const object_name& relation) {
  std::vector<std::string> schemas;
  bool temp_candidates = true;
  std::string role;
  if (is_own_temp_schema(relation.schema)) {
    // Only temporary relations, in whichever session's temp schema.
  } else if (!relation.schema.empty()) {
    schemas.push_back(relation.schema);
    temp_candidates = false;
  } else {
    auto path = search_path_schemas(search_path, user);
    if (!path) return std::nullopt;
    // Temporary relations are covered by temp_candidates, whatever the place
    // of pg_temp in the path.
    schemas = unqualified_search_order(std::move(*path));
    role = user;
  }
  auto r = exec(k_resolve_relation, {relation.name, array_literal(schemas), role,
                                     temp_candidates ? "true" : "false"});
  if (!r) return std::nullopt;
  std::vector<std::string> oids;
  for (int row = 0; row < PQntuples(r.get()); ++row) oids.emplace_back(value(r.get(), row, 0));
  return oids;
}

read_facts catalog::read(std::string_view search_path, std::string_view user,
                         const object_name& relation) {
  read_facts out;
  if (is_own_temp_schema(relation.schema)) {
    out.what = read_facts::verdict::temporary;
    out.depends_on = {relation.name};
    return out;
  }
  const auto roots = resolve(search_path, user, relation);
  if (!roots || roots->empty()) return out;
  const auto r = exec(k_closure, {array_literal(*roots), "false"});
  if (!r || PQntuples(r.get()) == 0) return out;  // no rows: dropped meanwhile

  using verdict = read_facts::verdict;
  // When several relations are read, the first of these that applies wins.
  constexpr std::array<verdict, 5> precedence = {verdict::temporary, verdict::system_catalog,
                                                 verdict::sequence, verdict::foreign_table,
                                                 verdict::other_kind};
  auto worse = [&](verdict a, verdict b) {
    for (verdict v : precedence)
      if (a == v || b == v) return v;
    return verdict::cacheable;
  };

  verdict what = verdict::cacheable;
  std::vector<std::string> views;
  std::vector<std::string> read_oids;  // their row-level-security policies apply
  std::vector<std::string> names;
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    const char relkind = value(r.get(), row, c_relkind).front();
    // A view that selects a field of a composite-typed column depends on that
    // type's pg_class row; it is not something read.
    if (relkind == 'c' && !flag(r.get(), row, c_root)) continue;
    names.emplace_back(value(r.get(), row, c_relname));
    if (!flag(r.get(), row, c_reach)) continue;  // an ancestor: invalidates, is not read
    verdict v = verdict::other_kind;
    if (value(r.get(), row, c_persistence) == "u") out.unlogged = true;
    if (value(r.get(), row, c_persistence) == "t")
      v = verdict::temporary;
    else if (flag(r.get(), row, c_system))
      v = verdict::system_catalog;
    else if (relkind == 'r' || relkind == 'p' || relkind == 'v' || relkind == 'm')
      v = verdict::cacheable;
    else if (relkind == 'S')
      v = verdict::sequence;
    else if (relkind == 'f')
      v = verdict::foreign_table;
    what = worse(what, v);
    if (relkind == 'v') views.emplace_back(value(r.get(), row, c_oid));
    read_oids.emplace_back(value(r.get(), row, c_oid));
  }

  if (what == verdict::cacheable) {
    const auto p = exec(k_policies_reading_relations, {array_literal(read_oids)});
    if (!p) return out;
    if (PQntuples(p.get()) > 0) what = verdict::other_kind;
  }
  if (what == verdict::cacheable) {
    // Functions a view's definition or a row-level-security policy calls.
    const auto f = exec(k_view_functions, {array_literal(views), array_literal(read_oids)});
    if (!f) return out;
    for (int row = 0; row < PQntuples(f.get()); ++row)
      if (!overload_cacheable(value(f.get(), row, 0), value(f.get(), row, 1),
                              value(f.get(), row, 2)))
        what = verdict::other_kind;
  }

  sort_unique(names);
  out.what = what;
  out.depends_on = std::move(names);
  if (what == verdict::cacheable && roots->size() == 1)
    out.point_key = point_key(roots->front(), {});
  return out;
}

write_facts catalog::write(std::string_view search_path, std::string_view user,
                           const object_name& relation) {
  write_facts out;
  const auto roots = resolve(search_path, user, relation);
  if (!roots || roots->empty()) return out;
  const auto r = exec(k_closure, {array_literal(*roots), "true"});
  if (!r || PQntuples(r.get()) == 0) return out;

  std::string root_name;
  std::vector<std::string> reached;  // by the write: its FK actions may come back
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    if (value(r.get(), row, c_relkind) == "c" && !flag(r.get(), row, c_root)) continue;
    if (flag(r.get(), row, c_reach)) reached.emplace_back(value(r.get(), row, c_oid));
    out.affected.emplace_back(value(r.get(), row, c_relname));
    if (flag(r.get(), row, c_root)) root_name = out.affected.back();
    if (flag(r.get(), row, c_triggers_or_rules)) out.has_triggers_or_rules = true;
  }
  // Another relation of the same bare name (an FK action's table in another
  // schema) shares its generations: a write to it is not of one key.
  const bool name_shared = std::count(out.affected.begin(), out.affected.end(), root_name) != 1;
  sort_unique(out.affected);
  out.known = true;
  if (roots->size() == 1 && !name_shared) out.point_key = point_key(roots->front(), reached);
  return out;
}

std::string catalog::point_key(const std::string& oid, const std::vector<std::string>& reached) {
  const auto r = exec(k_point_key, {oid, array_literal(reached)});
  if (!r || PQntuples(r.get()) != 1) return {};
  return std::string(value(r.get(), 0, 0));
}

function_verdict catalog::function(std::string_view search_path, std::string_view user,
                                   const object_name& function) {
  // Some session's temporary function: which one, we cannot know.
  if (is_own_temp_schema(function.schema)) return function_verdict::may_write;
  std::vector<std::string> schemas;
  std::string role;
  if (!function.schema.empty()) {
    schemas.push_back(function.schema);
  } else {
    auto path = search_path_schemas(search_path, user);
    if (!path) return function_verdict::unknown;
    schemas = unqualified_search_order(std::move(*path));
    role = user;
  }
  const auto r = exec(k_function_overloads, {function.name, array_literal(schemas), role});
  if (!r || PQntuples(r.get()) == 0) return function_verdict::unknown;
  function_verdict out = function_verdict::cacheable;
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    const std::string_view volatility = value(r.get(), row, 0), schema = value(r.get(), row, 1);
    if (overload_cacheable(volatility, schema, value(r.get(), row, 2))) continue;
    // PostgreSQL's check that a non-volatile function writes nothing can be
    // got round (one that calls a volatile one, C code): only its own
    // functions are trusted.
    if (volatility != "s" || schema != "pg_catalog") return function_verdict::may_write;
    out = function_verdict::stable;
  }
  return out;
}

default_isolation catalog::isolation(std::string_view user) {
  const auto r = exec(k_default_isolation, {std::string(user)});
  if (!r || PQntuples(r.get()) != 1 || PQgetisnull(r.get(), 0, 0))
    return default_isolation::unknown;
  std::string level(value(r.get(), 0, 0));
  std::transform(level.begin(), level.end(), level.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return level == "read committed" || level == "read uncommitted"
             ? default_isolation::read_committed
             : default_isolation::other;
}

}  // namespace pgstash::invalidation
