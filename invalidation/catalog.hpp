// What the result cache needs to know from the system catalogs, asked over
// one libpq control connection to one database.
//
// The cache's unit of invalidation is a relation's bare name (pg_class.relname)
// within a database: two tables of the same name in different schemas share one
// generation counter. That only ever invalidates more, and it lets a write be
// mapped without resolving search_path. So every set of relations below is a
// set of bare names.
//
// Names are resolved as the client's session would resolve them:
// - A qualified name is looked up in that schema. `pg_temp.x` is a temporary
//   relation of the client's own session, which the control connection cannot
//   see: a read of it is `temporary` without a look-up; a write to it has the
//   facts of every temporary relation of that name in the database (not
//   known if there is none).
// - An unqualified relation name is searched in pg_catalog first (unless the
//   path lists it elsewhere), then in the schemas of `search_path` in order,
//   skipping those that do not exist or on which `user` lacks USAGE, as the
//   server does. A client's temporary table would shadow the result and we
//   cannot tell which session's temp schema is the client's, so if ANY
//   temporary relation of that name exists in the database the answer is
//   `temporary` (reads) or includes that relation's facts (writes).
// - `search_path` is parsed here, as the server's SplitIdentifierString does
//   (quoted elements exact, unquoted ones lower-cased), and the list is passed
//   to the server as a parameter. The "$user" element becomes `user`'s name
//   (dropped if `user` is empty): the control connection runs as its own role,
//   and SET ROLE to the client's role may not be allowed. Because the list is
//   passed rather than set with set_config(), schemas the control role cannot
//   use are still searched. Functions are never searched in pg_temp, as the
//   server does not.
// - Names travel as query parameters, never spliced into SQL text.
//
// What "cacheable" means here (DESIGN.md, "What is cacheable"):
// - A view is expanded to every relation its _RETURN rule reads (the rule's
//   range tables, subqueries and CTEs included, plus its pg_depend entries),
//   recursively. A view whose rule calls a function (directly, as an
//   operator, aggregate or window function) that function() would not call
//   cacheable, uses CURRENT_TIMESTAMP-style time values or CURRENT_SCHEMA, or
//   TABLESAMPLE, is `other_kind` (so is a relation with row-level security
//   whose USING policy does so, or reads another relation, whose writes would
//   change the rows visible): the time, randomness or tables behind such
//   a call are invisible to the relations listed. Not checked: the functions
//   behind a view's ORDER BY/GROUP BY/DISTINCT operators, row comparisons and
//   type I/O (the built-in ones are immutable or depend on keyed settings).
// - Allow-listed STABLE built-ins: current_setting, current_database,
//   current_user, session_user (their results depend only on settings, the
//   database and the role, all in the cache key). Left out on purpose:
//   current_schema(s) (also depend on which schemas exist), format, concat,
//   concat_ws, to_char (their results depend on argument types' output
//   functions: regclass reads the catalogs, to_char's TM fields read lc_time).
//
// Answers reflect the catalogs at the moment of the look-up; the caller must
// drop them on DDL (catalog_service::forget).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "invalidation/object_name.hpp"

struct pg_conn;    // libpq's PGconn
struct pg_result;  // libpq's PGresult

namespace pgstash::invalidation {

// What a cached read of one relation depends on.
struct read_facts {
  enum class verdict : std::uint8_t {
    cacheable,
    unknown_relation,  // not found, or the look-up failed (no connection, error)
    system_catalog,    // in pg_catalog / information_schema / pg_toast, or made by initdb
    temporary,
    sequence,
    foreign_table,
    // Index, composite type, ...; a view calling a non-cacheable function; a
    // row-level-security policy calling one or reading another relation.
    other_kind,
  };
  verdict what = verdict::unknown_relation;
  // Bare relnames whose writes must invalidate a read of this relation, sorted,
  // no duplicates: itself; for a view, every relation its definition reads,
  // recursively (views included); for partitioned tables and inheritance
  // parents every descendant; for a partition or inheritance child its
  // ancestors (and so on for every relation reached). A materialized view is
  // only itself (REFRESH bumps it). When a view reads a temporary table, a
  // catalog, a sequence or a foreign table (also as a partition), the verdict
  // says so. Empty for unknown_relation.
  std::vector<std::string> depends_on;
  // Some relation read (through views too) is UNLOGGED: it writes no WAL, so
  // no replication stream carries its changes.
  bool unlogged = false;
  // For a cacheable read of one plain table: the column whose equality with
  // a value bounds the rows read to that value's (its single-column integer
  // primary key, when no trigger, rule, self-reference or inheritance
  // reaches other rows); empty otherwise.
  std::string point_key = {};

  bool operator==(const read_facts&) const = default;
};

// What a write to one relation can change.
struct write_facts {
  // false: the relation was not found or the look-up failed; the caller must
  // invalidate the whole database.
  bool known = false;
  // Bare relnames whose cached reads a write to this relation can make stale,
  // sorted, no duplicates: itself; its descendants (a write to a parent reaches
  // them); relations reached by FK actions ON DELETE/UPDATE CASCADE, SET NULL,
  // SET DEFAULT of constraints referencing any relation already in the set,
  // transitively; for a view, the relations behind it (as read() lists them);
  // and the ancestors of all of these.
  std::vector<std::string> affected;
  // A user trigger (pg_trigger, not tgisinternal) or a rule other than a
  // view's _RETURN is defined on a relation in `affected`: effects the caller
  // cannot bound statically (it must read the real write set from the server).
  bool has_triggers_or_rules = false;
  // As read_facts::point_key, for the relation written; also empty when a
  // relation it reaches through FK actions has the same bare name, or has
  // rows whose deletion or update an FK action of its own takes back to it.
  std::string point_key = {};

  bool operator==(const write_facts&) const = default;
};

// Volatility of every function visible by that name: all overloads in all the
// schemas the name could resolve to.
enum class function_verdict : std::uint8_t {
  cacheable,  // every overload IMMUTABLE, or STABLE, in pg_catalog and allow-listed
  // Not cacheable, but every overload is IMMUTABLE or a STABLE one of
  // pg_catalog's, which write nothing (now(), current_setting()).
  stable,
  // Some overload is VOLATILE, or a user's STABLE one (which could call a
  // volatile one); or the name is qualified with pg_temp.
  may_write,
  unknown,    // no such function, or the look-up failed
};

// The isolation level a login's transactions start at when they name none:
// its ALTER ROLE / ALTER DATABASE ... SET default_transaction_isolation, or
// else the server's. READ UNCOMMITTED counts as read committed (PostgreSQL
// runs it so).
enum class default_isolation : std::uint8_t {
  read_committed,
  other,
  unknown,  // the look-up failed
};

// The elements of a search_path value (e.g. "\"$user\", public"), in order,
// as the server parses them; "$user" replaced by `user` (dropped if empty).
// "pg_temp" is kept as is. nullopt if the value does not parse (the server
// would reject it too). Exposed for tests.
std::optional<std::vector<std::string>> search_path_schemas(std::string_view search_path,
                                                            std::string_view user);

// Blocking look-ups on one libpq connection to one database. Not thread-safe.
class catalog {
 public:
  // `conninfo`: a libpq connection string (its own keywords win over the
  // defaults added here: connect_timeout=5, application_name). Connects at
  // once. Throws nothing: while there is no connection every answer is
  // unknown / not known, and a reconnect is tried by the next call, at most
  // once per second. A connection the server dropped is re-established and
  // the look-up retried once, within the same limit.
  explicit catalog(std::string conninfo);
  ~catalog();
  catalog(const catalog&) = delete;
  catalog& operator=(const catalog&) = delete;

  read_facts read(std::string_view search_path, std::string_view user, const object_name& relation);
  write_facts write(std::string_view search_path, std::string_view user,
                    const object_name& relation);
  function_verdict function(std::string_view search_path, std::string_view user,
                            const object_name& function);
  // For transactions of `user` (a login role) in this database.
  default_isolation isolation(std::string_view user);

  bool connected() const;

 private:
  struct result_deleter {
    void operator()(::pg_result* r) const;
  };
  using result = std::unique_ptr<::pg_result, result_deleter>;

  bool ensure_connected();
  void connect();
  void disconnect();
  // Runs `sql` with text parameters; nullptr on any failure.
  result exec(const char* sql, const std::vector<std::string>& params);
  // The oids a relation name may stand for (see the header comment); nullopt
  // on failure.
  std::optional<std::vector<std::string>> resolve(std::string_view search_path,
                                                  std::string_view user,
                                                  const object_name& relation);

  // read_facts::point_key of the relation `oid`, when a write of it
  // reaches the relations `reached` (oids).
  std::string point_key(const std::string& oid, const std::vector<std::string>& reached);

  std::string conninfo_;
  ::pg_conn* conn_ = nullptr;
  std::chrono::steady_clock::time_point last_attempt_{};
};

}  // namespace pgstash::invalidation
