// What one SQL text means for the result cache: whether its result may be
// cached (and keyed how), what it reads, and what it writes.
//
// analyze_for_cache() parses with libpg_query (PostgreSQL 15's grammar) and
// is pure and reentrant like analyze() in statement_analysis.hpp: no I/O, no
// globals; memoize it with text_memo<cache_analysis> (text_memo.hpp).
//
// What the analysis promises, and what it leaves to others:
// - It errs one way only. What it does not fully understand is uncacheable
//   (for reads) and invalidates_database (for writes), never the reverse.
// - reason == none means "cacheable as far as the text shows". The caller
//   still has to clear every relation in `reads` (a temporary table reached
//   without pg_temp., a sequence, a foreign table, a system catalog reached
//   through search_path, a view over any of those) and every function in
//   `functions` (volatility; STABLE ones the key does not fix) against the
//   catalog, and to look at bind values: a text-format parameter such as
//   'now' or 'today' cast to a date/time type is as time-dependent as now().
// - Writes are what the text names. Side effects it cannot see (triggers, FK
//   cascades, rules, functions) are flagged by write_calls_functions or
//   invalidates_database, and are the caller's to widen (DESIGN.md,
//   Coherence 3); views and partitions are names here, not yet tables.
// - A parse error reports nothing else: PostgreSQL 15 rejects the text and
//   runs none of it. Against a newer server, whose grammar is wider, treat
//   parse_error as invalidates_database.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "invalidation/object_name.hpp"

namespace pgstash::invalidation {

// Why a statement's result is not cached; none = cacheable as far as the
// text shows (the catalog still has to clear its functions and relations).
// One enum names every reason, including those only the proxy can see.
enum class uncacheable : std::uint8_t {
  none,
  // ---- Found by analyze_for_cache().
  parse_error,
  not_a_read,             // INSERT/UPDATE/DDL/SET/BEGIN/...; also an empty text
  several_statements,     // more than one statement in one text
  locking_clause,         // FOR UPDATE/NO KEY UPDATE/SHARE/KEY SHARE, anywhere
  select_into,            // SELECT ... INTO t
  data_modifying_cte,     // WITH x AS (INSERT/UPDATE/DELETE ...)
  time_function,          // now(), CURRENT_DATE, 'now'::timestamptz, age(x), ...
  session_function,       // pg_backend_pid(), nextval(), random(), set_config(), ...
  system_catalog,         // pg_catalog./information_schema./pg_toast., pg_* names, ::regclass
  temp_relation,          // pg_temp.x
  no_relation,            // reads no table: SELECT 1, VALUES, FROM f() alone
  sample_or_tablesample,  // TABLESAMPLE
  cursor_or_utility,      // DECLARE, FETCH, EXPLAIN, SHOW, COPY ... TO, PREPARE, EXECUTE
  // ---- Reserved for the proxy (catalog, transaction, response).
  volatile_function,
  unknown_function,
  unknown_relation,
  sequence,
  foreign_table,
  unlogged_relation,  // its writes are in no replication stream (only when following it)
  in_writing_transaction,
  isolation_level,
  too_large,
  partial_fetch,
  notice_or_error,
  // Settings the key does not follow: changed in session mode, staged in
  // the open transaction, or possibly by code pgstash cannot see (DO, a
  // volatile function calling set_config()).
  unfollowed_settings,
  rule_or_config,
};
// Number of reasons, for arrays indexed by reason (metrics).
inline constexpr std::size_t uncacheable_count =
    static_cast<std::size_t>(uncacheable::rule_or_config) + 1;

// Stable snake_case names ("none", "parse_error", ...), used as metric labels.
std::string_view to_string(uncacheable reason);

// The rows of one table a statement reads or writes, when they are only
// rows whose column equals an integer value: what lets a write of one value
// invalidate only the reads of that value (generations.hpp, row keys).
struct point_filter {
  object_name relation;  // as written
  struct equality {
    std::string column;                    // as the parser spells it
    std::optional<std::int64_t> constant;  // the value, written as a constant
    int parameter = 0;                     // or the parameter ($n) that holds it
    bool operator==(const equality&) const = default;
  };
  // The top-level conjuncts of its WHERE of the form `column = value`,
  // either way round, with the column bare or qualified by the relation's
  // alias (else its name), and the value an integer constant (a string
  // constant only if it spells one plainly) or a parameter. Which column
  // counts (the table's key) is the catalog's to say.
  std::vector<equality> equalities;
  bool operator==(const point_filter&) const = default;
};

// What one SQL text (a simple Query's whole text, or one Parse's text)
// means for the cache.
struct cache_analysis {
  uncacheable reason = uncacheable::none;

  // ---- Reads: complete when reason == none (filled from every statement
  // otherwise, for information).
  // Every relation the statement reads by name (FROM, JOIN, subqueries,
  // lateral, set operations, CTE bodies, COPY's table or query; not a name
  // that resolves to a WITH item), deduplicated. A catalog name (db.s.t) is
  // dropped.
  std::vector<object_name> reads;
  // Every function called by name (FuncCall: in targets, WHERE, FROM,
  // ORDER/GROUP BY, HAVING, windows, CALL), deduplicated, with the schema
  // as written: pg_catalog.now() is {"pg_catalog", "now"}, now() {"", "now"}.
  std::vector<object_name> functions;
  // 128-bit hash of the canonical statement: libpg_query's parse tree
  // without token locations, constants included. Equal for texts differing
  // only in whitespace, keyword case or comments; different when a constant
  // differs or constants move. 0 on parse_error.
  std::uint64_t canonical_low = 0;
  std::uint64_t canonical_high = 0;

  // ---- Writes, for invalidation: from every statement, whatever reason.
  // INSERT/UPDATE/DELETE/MERGE targets (also in data-modifying CTEs),
  // TRUNCATE and COPY ... FROM targets, REFRESH MATERIALIZED VIEW, the new
  // table of SELECT INTO / CREATE TABLE AS, and DDL targets where named
  // (CREATE/ALTER/DROP/RENAME of a table, view, sequence...). LOCK is not a
  // write. Deduplicated.
  std::vector<object_name> writes;
  bool truncate_cascade = false;  // TRUNCATE ... CASCADE: also FK-referencing tables
  // Writes the text cannot bound: DDL of any kind (also COMMENT, GRANT,
  // REVOKE, roles, policies, rules, triggers, extensions), DO, CALL,
  // EXECUTE, COPY FROM PROGRAM, COMMIT PREPARED, dblink*(), LOAD, and any
  // statement not recognised as a read, a bounded write, or transaction or
  // session control. The caller invalidates the whole database.
  bool invalidates_database = false;
  // A statement calls a function by name (a read included): a VOLATILE one
  // may write anything, so read_only and writes hold only if the catalog
  // shows every entry of `functions` is IMMUTABLE or STABLE.
  bool write_calls_functions = false;
  // The reads after it in that transaction (or session) bypass the cache:
  // BEGIN/START TRANSACTION or SET [SESSION CHARACTERISTICS AS] TRANSACTION
  // with ISOLATION LEVEL REPEATABLE READ or SERIALIZABLE, SET TRANSACTION
  // SNAPSHOT, SET [default_]transaction_isolation to anything but read
  // committed/uncommitted (DEFAULT, RESET, RESET ALL and DISCARD ALL
  // included: the default is not known here), set_config() of those or of a
  // name not known here.
  bool leaves_read_committed = false;
  // DO, CALL or EXECUTE: code pgstash does not see runs, which may change
  // settings (set_config()) as well as write.
  bool runs_code = false;
  // SET (LOCAL too), RESET or DISCARD: a setting a later read may depend on
  // changed. (set_config() is a session function: not read_only.)
  bool changes_settings = false;
  // ...and of those, SET or RESET (LOCAL too) of search_path, the role or
  // the session authorization, RESET ALL or DISCARD ALL: what names and
  // operators resolve to may change.
  bool changes_resolution = false;
  // Every statement writes nothing by itself, as far as the text shows (see
  // write_calls_functions): SELECT without INTO, data-modifying CTE, locking
  // clause or session function (nextval(), pg_advisory_lock(), ...); SHOW;
  // BEGIN/COMMIT/ROLLBACK/SAVEPOINT/...; SET/RESET; EXPLAIN without
  // ANALYZE; DECLARE of such a SELECT, FETCH, MOVE, CLOSE; PREPARE;
  // DEALLOCATE; DISCARD; LISTEN/UNLISTEN; COPY ... TO. True for an empty
  // text; false on parse_error. The proxy stops serving hits in a
  // transaction after a statement that is not read_only.
  // LOCK TABLE is not read_only though it writes nothing: a client locks to
  // order itself after concurrent writers, and a cached result could predate
  // a write committed just before the lock was granted. Nor are SET
  // CONSTRAINTS (it fires deferred triggers), NOTIFY, VACUUM, ANALYZE,
  // CLUSTER, REINDEX, CHECKPOINT: no writes, no invalidation, no hits after.
  bool read_only = false;

  // Set only for a text of one statement of these shapes, whose rows are
  // all in the filter: a SELECT from one table (no join, no other relation
  // anywhere in it, no WITH, no set operation, no INTO); an UPDATE of one
  // table without FROM or WITH (an equality on a column it assigns does not
  // count); a DELETE without USING or WITH. Triggers, rules and what a
  // write reaches through FKs are the caller's to rule out.
  std::optional<point_filter> point;
};

// Analyzes `sql`. Text after an embedded NUL is ignored, as the server
// would never see it.
cache_analysis analyze_for_cache(std::string_view sql);

// `text` as an integer, if it spells one plainly: an optional '-' and
// digits, nothing else (no sign '+', spaces, underscores or other bases,
// which some servers read and some do not). nullopt beyond 64 bits.
std::optional<std::int64_t> integer_value(std::string_view text);

// A text-format bind parameter that date/time input would read as the
// current time ('now', 'today', ...): a statement bound to it is as
// time-dependent as one calling now().
bool parameter_names_current_time(std::string_view value);

}  // namespace pgstash::invalidation
