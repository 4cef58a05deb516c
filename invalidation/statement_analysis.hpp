// Which client SQL changes session state that outlives a transaction.
//
// Transaction pooling runs each client transaction on whichever server
// connection is free, so pgstash must know, for every SQL string a client
// sends (simple Query text or a Parse's query text), which statements leave
// state behind on the server: settings to replay on the next connection,
// prepared statements to re-create, or things that cannot be moved at all
// and pin the client to its connection.
//
// analyze() parses with libpg_query (PostgreSQL 15's own grammar, ~5-50 us a
// statement); may_have_effects() is the cheap lexical pre-filter in front of
// it. Both are pure and reentrant: no I/O, no globals (libpg_query keeps its
// memory per thread), so they may be called from any thread.
//
// What the analysis means:
// - Effects describe what a statement does if it succeeds and its
//   transaction commits. A setting made inside a transaction that rolls back
//   (or an implicit multi-statement transaction that fails) is undone by the
//   server; the caller must drop it, using the server's replies.
// - Pins are conservative: a pin may be reported for code that never runs
//   (e.g. pg_advisory_lock in an untaken CASE branch). Settings are exact: a
//   set_config() call becomes a setting only where it certainly runs once
//   (a plain `SELECT set_config(...), ...` with no FROM/WHERE/LIMIT);
//   anywhere else it pins (pin_opaque_setting).
// - Not seen: state changed inside functions or DO blocks (a plpgsql
//   function that runs SET), currval()/lastval(), and GUC-list quoting of
//   extension-defined variables. Text is assumed to be in an ASCII-safe
//   client encoding (UTF8, LATINn, ...; not SJIS/BIG5/GBK, whose multibyte
//   characters may contain quote bytes).
// - libpg_query speaks PostgreSQL 15 and assumes standard_conforming_strings
//   = on. Against a newer server, parse_error on a text for which
//   may_have_effects() is true should be treated as opaque (pin).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgstash::invalidation {

// A change to a session-level setting made by one statement.
struct setting_change {
  enum class kind { set, reset, reset_all };
  kind what = kind::set;
  // The GUC name, ASCII-lower-cased as PostgreSQL compares it
  // ("search_path", "timezone", "app.tenant"); empty for reset_all. This is a
  // name, not SQL: a component that needs quoting (app."user") is stored
  // unquoted. Use to_sql() to build a statement.
  std::string name;
  // For `set`: SQL that can follow "SET <name> TO " to reproduce the value,
  // rebuilt from the parse tree as literals ("'$user', 'public'",
  // "'Europe/Paris'", "-7", "0.5"), so equal values compare equal however
  // they were spelled. Empty for reset and reset_all.
  std::string value_sql;
  // For `set`: value_sql is instead the value itself, to be applied with
  // set_config(), for a value SET cannot spell: set_config's empty list
  // (pg_dump's set_config('search_path', '', false)), which SHOW reports
  // as '' where the nearest SET gives "".
  bool raw = false;

  bool operator==(const setting_change&) const = default;
};

enum class transaction_effect {
  none,
  begin,     // BEGIN, START TRANSACTION
  commit,    // COMMIT, END; also COMMIT AND CHAIN, which at once opens another
             // transaction: ReadyForQuery stays the authority on state
  rollback,  // ROLLBACK, ABORT (also ... AND CHAIN)
  savepoint,
  release_savepoint,
  rollback_to_savepoint,
  prepare_transaction,  // PREPARE TRANSACTION; COMMIT/ROLLBACK PREPARED are none
};

// COMMIT, ROLLBACK, ROLLBACK TO and PREPARE TRANSACTION: what PostgreSQL
// still runs in a failed transaction, and what ends one.
inline bool exits_failed_transaction(transaction_effect t) {
  return t == transaction_effect::commit || t == transaction_effect::rollback ||
         t == transaction_effect::rollback_to_savepoint ||
         t == transaction_effect::prepare_transaction;
}

// Why a statement ties a client to its server connection for the rest of
// the session. A bit set: statement_effects::pins ORs these.
enum pin_reason : unsigned {
  pin_none = 0,
  pin_listen = 1,                  // LISTEN
  pin_advisory_lock = 2,           // pg_[try_]advisory_lock[_shared]() anywhere
  pin_temp_object = 4,             // CREATE TEMP ..., SELECT INTO TEMP, pg_temp.x
  pin_hold_cursor = 8,             // DECLARE ... WITH HOLD
  pin_session_authorization = 16,  // SET/RESET SESSION AUTHORIZATION
  pin_opaque_setting = 32,         // a setting change we cannot reproduce
  pin_load = 64,                   // LOAD
};
// The reasons in `pins`, for the log: "LISTEN, temporary object".
std::string describe_pins(unsigned pins);

// The session-level effects of one top-level statement. Default values
// mean "no effect".
struct statement_effects {
  transaction_effect transaction = transaction_effect::none;
  std::string savepoint_name;            // SAVEPOINT, RELEASE, ROLLBACK TO: the savepoint
  std::vector<setting_change> settings;  // in execution order
  unsigned pins = pin_none;              // pin_reason bits
  std::string prepare_name;              // SQL `PREPARE name AS ...`: the name (empty otherwise)
  std::string prepare_sql;               // ...and the statement's own text, to replay it
                                         // elsewhere (a trailing "\n" is added if its last
                                         // line may end in a -- comment)
  bool prepare_returns_rows = false;     // ...whether its query returns rows
  int prepare_parameters = 0;            // ...and how many parameters it takes
  std::string execute_name;              // `EXECUTE name`, also inside EXPLAIN / CREATE TABLE AS
  int execute_arguments = 0;             // ...and how many arguments it passes
  std::string deallocate_name;           // `DEALLOCATE [PREPARE] name`
  bool deallocate_all = false;           // DEALLOCATE ALL
  bool discard_all = false;              // DISCARD ALL (DISCARD PLANS/SEQUENCES/TEMP: no effect)
  bool unlisten_all = false;             // UNLISTEN *

  bool operator==(const statement_effects&) const = default;
};

struct analysis {
  // libpg_query could not parse the text: the server rejects it too, and
  // runs none of it (it parses the whole string first). statements is empty.
  bool parse_error = false;
  // One per top-level statement, in order; an empty or comment-only text has
  // none.
  std::vector<statement_effects> statements;

  // True if any statement has a non-default field.
  bool any_effect() const;
  // True if any statement creates or drops SQL prepared statements.
  bool changes_prepared_statements() const;
};

// Cheap pre-filter. false guarantees analyze(sql).any_effect() is false (no
// false negatives); true means "maybe". It looks for a few words (statement-
// leading SET, BEGIN, PREPARE, ...; anywhere: set_config, advisory lock
// functions, TEMP, pg_temp, EXECUTE, HOLD) outside string literals and
// comments, and answers true on anything it does not fully understand
// (dollar quotes, backslashes in literals, U&"..." identifiers).
// Typical ORM/pgbench SELECT/INSERT/UPDATE/DELETE text returns false.
bool may_have_effects(std::string_view sql);

// Parses `sql` and reports each top-level statement's effects. Text after
// an embedded NUL is ignored, as the server would never see it.
analysis analyze(std::string_view sql);

// SQL that reproduces `c` on another connection: "SET "name" TO value",
// a set_config() call for a raw value, "RESET "name"" or "RESET ALL". Name
// components are always double-quoted, which is exact for any GUC name.
std::string to_sql(const setting_change& c);

}  // namespace pgstash::invalidation
