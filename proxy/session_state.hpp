// A client's session as the client sees it, kept by pgstash in transaction
// mode so that any server connection can be made to match it: the settings
// it made (startup parameters, SET, set_config), its SQL-level prepared
// statements (PREPARE), and what pins it to one server connection.
//
// Settings follow PostgreSQL's transaction rules: a change is staged when
// its statement completes and becomes the client's only when its
// transaction commits (an autocommit statement commits at once).
//
// Pure: no I/O. Owned by one client session.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "invalidation/statement_analysis.hpp"
#include "pool/server_state.hpp"

namespace pgstash::proxy {

class session_state {
 public:
  // `startup` are the client's startup parameters other than user and
  // database ("options" expanded into its -c settings).
  explicit session_state(const std::vector<std::pair<std::string, std::string>>& startup);

  const pool::settings_map& settings() const { return settings_; }
  // The PREPARE text of the client's SQL prepared statement `name`, or null.
  const std::string* sql_prepared(const std::string& name) const;
  unsigned pins() const { return pins_; }
  bool pinned() const { return pins_ != invalidation::pin_none; }
  // Settings changed in the open transaction, not the client's yet.
  bool has_staged() const { return !staged_.empty(); }

  // A statement completed on `server`. Applies what is not transactional
  // (PREPARE, DEALLOCATE, DISCARD, pins) at once and stages settings.
  void statement_completed(const invalidation::statement_effects& effects,
                           pool::server_state& server);
  // The transaction ended: staged settings become the client's (and the
  // server's), or are dropped.
  void transaction_committed(pool::server_state& server);
  void transaction_rolled_back();
  // Settings staged after a savepoint are undone by ROLLBACK TO it.
  void savepoint_created(const std::string& name);
  void savepoint_released(const std::string& name);
  void savepoint_rolled_back(const std::string& name);

  // True once after a committed RESET, RESET ALL or DISCARD ALL moved the
  // server to its own default where the client's is a startup value: the
  // server needs sync_settings_sql() before the client's next transaction.
  bool take_resync() { return std::exchange(resync_, false); }

  // SQL that makes `server` match this client's settings (SET/RESET and
  // set_config), or "" if it already does. Updates `server` to match,
  // assuming the SQL will succeed.
  std::string sync_settings_sql(pool::server_state& server) const;

  // One statement that puts a SQL prepared statement on a server.
  struct prepared_sync {
    std::string sql;
    std::string name;  // the prepared statement it creates or drops
    // The server's record of `name` before it: what undo() puts back if the
    // statement fails or is skipped.
    std::optional<std::string> before;
    void undo(pool::server_state& server) const;
  };
  // Statements to run, one by one, before `effects`'s statement on
  // `server` so that it finds the SQL prepared statements it names as the
  // client would (none if it does): EXECUTE the client's own, DEALLOCATE
  // and PREPARE the name taken or free. Updates `server` assuming they will
  // succeed.
  std::vector<prepared_sync> sync_prepared_statements(
      const invalidation::statement_effects& effects, pool::server_state& server) const;

 private:
  void apply(const invalidation::setting_change& change, pool::server_state& server);

  pool::settings_map startup_;
  pool::settings_map settings_;
  std::vector<invalidation::setting_change> staged_;
  struct savepoint {
    std::string name;
    std::size_t staged;  // staged_.size() when it was created
  };
  std::vector<savepoint> savepoints_;
  bool resync_ = false;
  std::map<std::string, std::string> sql_prepared_;  // name -> PREPARE text
  unsigned pins_ = invalidation::pin_none;
};

// The -c/--name=value settings inside a startup packet's "options".
std::vector<std::pair<std::string, std::string>> parse_startup_options(std::string_view options);

}  // namespace pgstash::proxy
