// A client's protocol-level prepared statements in transaction mode, and
// what must be sent to a server connection before one of them is used there.
//
// The client's names exist only here. On servers a statement is prepared
// under a name derived from its text and parameter types, so clients that
// prepare the same statement share it on each server connection (bounded
// per connection by pool::statement_lru). Sharing must never give a client
// an older analysis than its own Parse would have: a statement prepared on
// a connection before a table was re-created or a type dropped would give
// "cached plan must not change result type" or "cache lookup failed for
// type", which PostgreSQL never gives a fresh Parse. So every statement
// carries the time the client Parsed it, every server copy the time it was
// prepared there, and a copy older than the client's Parse is prepared again
// (Close, then Parse) before use.
//
// Pure: no I/O. Owned by one client session.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "invalidation/statement_analysis.hpp"
#include "pool/server_state.hpp"
#include "wire/frontend.hpp"

namespace pgstash::proxy {

// What the server said when pgstash described a client's statement. In a
// failed transaction no connection can prepare it, yet PostgreSQL still
// checks a Bind's parameter count and describes a statement that returns
// no rows: pgstash answers in its place from this.
struct statement_description {
  bool known = false;                 // the answer has come
  std::string parameter_description;  // the ParameterDescription frame
  std::size_t parameters = 0;
  bool returns_rows = false;
  std::string row_description;  // the RowDescription frame, if it returns rows
};

class statement_map {
 public:
  using analysis_ptr = std::shared_ptr<const invalidation::analysis>;

  struct statement {
    std::string server_name;
    std::string parse_frame;  // a Parse creating it under server_name
    analysis_ptr analysis;    // its session effects, or null
    std::uint64_t parsed_at;  // when the client Parsed it
    // Filled in when the server's answer to pgstash's Describe arrives.
    std::shared_ptr<statement_description> described = std::make_shared<statement_description>();
    // COMMIT, ROLLBACK, ROLLBACK TO or PREPARE TRANSACTION: PostgreSQL runs
    // it in a failed transaction, so any connection can prepare it there.
    bool ends_failed_transaction() const;
    // EXECUTE of a SQL prepared statement: PostgreSQL describes its rows as
    // they were when the client parsed it, whatever that statement became.
    bool rows_fixed_at_parse() const;
  };

  // What a server connection needs before it can run a statement. A Parse
  // is always preceded by a Close of the same name: the server may hold an
  // older copy, or one whose Parse (or Close) an error made it skip, which
  // pgstash's record of the connection then does not show.
  struct preparation {
    std::optional<std::string> evicted;  // Close this server statement first (LRU)
    bool parse = false;                  // then Close and Parse statement::server_name
  };

  // The client Parsed `parse` (a named statement) at time `now`.
  const statement& define(const wire::parse_message& parse, analysis_ptr analysis,
                          std::uint64_t now);
  const statement* find(std::string_view client_name) const;
  bool contains(std::string_view client_name) const { return find(client_name) != nullptr; }
  // Returns false if there was no such statement.
  bool erase(std::string_view client_name);
  // Puts back a definition (or its absence) saved with find(), for a
  // change the server turned out to skip.
  void restore(const std::string& client_name, std::optional<statement> previous);
  void clear() { statements_.clear(); }
  std::size_t size() const { return statements_.size(); }

  // The time statements are versioned by: a monotonic clock, the same on
  // every worker thread.
  static std::uint64_t now();

  // True if `server` holds `stmt` as recent as the client's Parse.
  static bool prepared_on(const statement& stmt, const pool::statement_lru& server);
  // What `server` needs before running `stmt` at time `now`. Updates
  // `server` as if it were sent and succeeded.
  static preparation prepare_on(const statement& stmt, pool::statement_lru& server,
                                std::uint64_t now);

 private:
  std::map<std::string, statement, std::less<>> statements_;  // client name -> statement
};

// The server-side name of a statement: "pgstash_" and a 128-bit hash of its
// text and parameter types.
std::string server_statement_name(const wire::parse_message& parse);

}  // namespace pgstash::proxy
