// One client session's use of the result cache: which of its statements
// are answered from the cache, which results are captured for it, and
// which writes of its transaction invalidate what when they commit.
//
// The key of a result is XXH3-128 over the database, the user, every
// setting the client has (startup parameters and SET, so also role and
// custom GUCs read by views and row-level-security policies), the
// canonical statement with its constants, and, in the extended protocol,
// the parameters and all format codes (DESIGN.md, "Cache key").
//
// The relay decides when a hit may be served (nothing owed by the server,
// outside a transaction); this class decides whether a statement can be
// and what it depends on. Owned by one client session; the result_cache
// it uses is shared.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "invalidation/cache_analysis.hpp"
#include "pool/server_state.hpp"
#include "proxy/result_cache.hpp"
#include "wire/frontend.hpp"

namespace pgstash::proxy {

// A result on its way from the server, kept for the cache: the bytes the
// client is sent (RowDescription, DataRows, CommandComplete), unless
// something makes it uncacheable on the way.
class result_capture {
 public:
  // `described`: the result must start with a RowDescription (the
  // extended protocol's, which the client asks for with Describe); an
  // answer for a client that did not ask is not stored.
  // `ttl_seconds`: how long it may be served once stored (0 = until
  // invalidated).
  result_capture(cache::key key, std::vector<cache::dependency> deps, std::size_t limit,
                 std::string label, bool described, std::uint32_t ttl_seconds)
      : key_(key),
        deps_(std::move(deps)),
        limit_(limit),
        label_(std::move(label)),
        described_(described),
        ttl_seconds_(ttl_seconds) {}
  // A server frame answering the statement; `body` is null for one too
  // large to hold.
  void add(char tag, std::optional<std::string_view> body);
  // A notice, an error, a partial fetch: the result is never stored.
  void spoil(invalidation::uncacheable why) {
    if (!spoiled_by_) spoiled_by_ = why;
    bytes_ = {};
  }
  std::optional<invalidation::uncacheable> spoiled_by() const { return spoiled_by_; }
  const cache::key& key() const { return key_; }
  // Another session is fetching this key's result: waiting for it may
  // turn this miss into a hit (in_flight_results).
  bool fetched_elsewhere() const { return fetched_elsewhere_; }
  // The result is stored, or will never be: who waits for it may look again.
  void release_claim() {
    if (claim_) claim_->release();
  }
  bool complete() const {
    return !spoiled_by_ && finished_ && (!described_ || bytes_.starts_with('T'));
  }

 private:
  friend class cache_client;
  cache::key key_;
  std::vector<cache::dependency> deps_;
  std::size_t limit_;
  std::string label_;
  bool described_;
  std::uint32_t ttl_seconds_;
  std::string bytes_;
  std::optional<invalidation::uncacheable> spoiled_by_;
  std::shared_ptr<in_flight_results::claim> claim_;  // null if another session has it
  bool fetched_elsewhere_ = false;
  bool finished_ = false;  // CommandComplete seen
};

// What a statement sent to the server may write, as generation ids (empty
// for a read). It counts once the statement has run, until its transaction
// ends.
struct cache_write_set {
  std::vector<std::uint64_t> relations;
  // A write of one key's rows: its table's own id and the key's row key
  // (generations::bump_rows), valid while the catalog's answers are those
  // of `rows_version`; otherwise bumped as relations (the key may have
  // changed since).
  std::vector<std::uint64_t> rows;
  std::uint64_t rows_version = 0;
  bool ddl = false;  // the catalog's answers for the database are stale
  // Reads after it in its transaction are not answered from the cache: it
  // may write (also unseen, through a function), or it orders itself
  // after other writers (LOCK).
  bool ends_transaction_hits = false;
  // It may take the transaction, or the session's later ones, above READ
  // COMMITTED (or to an older snapshot).
  bool leaves_read_committed = false;

  bool empty() const {
    return relations.empty() && rows.empty() && !ddl && !ends_transaction_hits &&
           !leaves_read_committed;
  }
};

class cache_client {
 public:
  struct identity {
    std::string database;  // the server's name for it
    std::string user;
    std::string conninfo;  // for catalog look-ups (libpq)
    std::vector<std::pair<std::string, std::string>> startup;  // the client's startup parameters
  };
  cache_client(result_cache& shared, identity who);

  // A read that may be answered: `response` is set on a hit; `capture` on
  // a miss worth storing; neither when the statement passes through.
  struct lookup {
    std::optional<std::string> response;
    std::shared_ptr<result_capture> capture;
  };
  // `settings` are the client's (transaction mode), or null for those it
  // started with (session mode, where a session that changes settings is
  // not served: see relay).
  lookup query(std::string_view sql, const pool::settings_map* settings);
  // True if the text alone does not rule caching out.
  bool cacheable(std::string_view sql) const;
  // An extended-protocol Bind of `statement`: its parameter types, the
  // parameters and the format codes are part of the key.
  lookup bind(const wire::parse_message& statement, const wire::bind_message& bind,
              const pool::settings_map* settings);

  using write_set = cache_write_set;
  // The values a Bind gives the equalities of its statement's point filter
  // (cache_analysis::point), in order; nullopt for one that is not read as
  // an integer. Empty for a statement without one.
  using point_values = std::vector<std::optional<std::int64_t>>;
  point_values bound_point(const wire::parse_message& statement,
                           const wire::bind_message& bind) const;
  // What `sql` may write; `bound` are the values of its parameters in its
  // point filter, for a portal (bound_point()).
  write_set writes_of(std::string_view sql, const pool::settings_map* settings,
                      const point_values* bound = nullptr);
  // False once the session ran something that may have changed its
  // settings where pgstash cannot see (a DO block, a procedure, a volatile
  // function, which may call set_config()): its key would no longer say
  // what its results depend on, and it is not served from the cache again.
  // Also false while such a function's volatility is being looked up.
  bool session_followed();
  // Why a read inside the open transaction may not be answered from the
  // cache, if it may not: a statement of it may have written (its own
  // writes are not in the cache), or it is not at READ COMMITTED, where
  // every statement sees what was committed before it began. Once the
  // session has moved off READ COMMITTED it gets no hits in a transaction
  // again.
  std::optional<invalidation::uncacheable> transaction_bypass(const pool::settings_map* settings);
  // `sql` would have been looked up but for `why` (counted, and logged at
  // debug level, if its text alone is cacheable).
  void not_served(std::string_view sql, invalidation::uncacheable why);
  // Something whose writes pgstash cannot see (a FunctionCall, a statement
  // it could not read): all of the database's results.
  write_set opaque_writes() const;
  // A statement ran (its answer is complete): its writes belong to the
  // open transaction.
  void wrote(const write_set& writes);
  // A COMMIT was acknowledged: the transaction's writes (and `also`'s, a
  // statement still being answered) are bumped now, and kept for
  // transaction_ended() (a Query may go on writing after its COMMIT).
  void transaction_committed(const write_set* also = nullptr);
  // The transaction ended (ReadyForQuery 'I'). Its writes' generations are
  // bumped unless it certainly rolled back.
  void transaction_ended(bool rolled_back);
  // A result arrived complete: stored if its generations are still current.
  // Its claim (in_flight_results) is released once the store has it.
  void store(result_capture& capture);

  result_cache& shared() { return shared_; }

  // ---- Strict consistency (cache.consistency = "strict"): a hit is served
  // only once the replication stream proves it (invalidation::wal_barrier).
  // The client's bytes last read arrived `at`.
  void read_arrived(std::chrono::steady_clock::time_point at) { arrived_ = at; }
  bool strict() const { return strict_; }
  // The last look-up found a hit the stream has not proven yet: it was
  // answered as a pass-through, to be looked up again once the barrier
  // returned has proven when the read arrived (or has given up).
  struct unproven_hit {
    invalidation::wal_barrier* barrier;
    std::chrono::steady_clock::time_point arrived;
  };
  std::optional<unproven_hit> take_unproven_hit() { return std::exchange(unproven_, {}); }
  bool holds_unproven_hit() const { return unproven_.has_value(); }
  // The session waited for the proof: until stream_waited(false), look-ups
  // serve a hit if it came, and miss if not.
  void stream_waited(bool waited) { stream_waited_ = waited; }

 private:
  using analysis_ptr = std::shared_ptr<const invalidation::cache_analysis>;
  // The reads `a` depends on, or the reason it cannot be cached; their
  // bare names too if `names` is not null.
  // A read of one key's rows depends on that key's row key, whose value
  // may be a parameter of `statement` bound by `bind`.
  std::optional<invalidation::uncacheable> dependencies(
      const analysis_ptr& a, const pool::settings_map& settings, std::vector<std::uint64_t>& ids,
      std::vector<std::string>* names = nullptr, const wire::parse_message* statement = nullptr,
      const wire::bind_message* bind = nullptr);
  struct read_plan;
  // dependencies() for `plan`'s statement, path and role, into its ids
  // and names (partial if it is not cacheable).
  std::optional<invalidation::uncacheable> ask_catalog(read_plan& plan);
  // True if `a` calls a function that may write (a volatile one of the
  // user's, or one the catalog does not know yet); notes what it means for
  // the session (session_followed()).
  bool functions_may_write(const invalidation::cache_analysis& a,
                           const pool::settings_map& settings);
  // True if a [[cache.rules]] rule forces `sql` (a single read).
  bool forced(std::string_view sql, const analysis_ptr& a, const pool::settings_map& settings);
  const pool::settings_map& settings_or_startup(const pool::settings_map* settings) const;
  std::string search_path(const pool::settings_map& settings) const;
  // The role names are looked up for (what "$user" and USAGE mean): the
  // client's SET ROLE, else the login user.
  std::string current_role(const pool::settings_map& settings) const;
  // Whether the client's transactions start at READ COMMITTED (unknown
  // until the catalog says: no).
  bool starts_read_committed(const pool::settings_map& settings);
  // Looks `sql` up under a key that also covers `statement` and `bind`
  // (both null for a Query).
  lookup find(std::string_view sql, const wire::parse_message* statement,
              const wire::bind_message* bind, const pool::settings_map* settings);
  cache::key key_of(const invalidation::cache_analysis& a, const pool::settings_map& settings,
                    const wire::parse_message* statement, const wire::bind_message* bind) const;

  result_cache& shared_;
  identity who_;
  pool::settings_map startup_settings_;
  std::uint64_t database_id_;
  std::uint64_t any_write_id_;
  // Null unless writes that bypass pgstash are followed.
  std::shared_ptr<const invalidation::stream_status> stream_;
  const bool strict_;
  std::chrono::steady_clock::time_point arrived_;
  std::optional<unproven_hit> unproven_;
  bool stream_waited_ = false;
  // What dependencies() found for a cacheable statement under one
  // search_path and role, so that a hit asks the shared catalog memo (and
  // takes its lock) only once a second: valid while the catalog's answers
  // stay the same (catalog_service::answers_version), until `until`.
  struct read_plan {
    analysis_ptr analysis;  // held, so that its address is not reused
    std::string search_path;
    std::string role;
    std::uint64_t answers_version;
    std::chrono::steady_clock::time_point until;
    std::vector<std::uint64_t> ids;  // sorted, no duplicates
    std::vector<std::string> names;  // sorted, no duplicates
    // A read of one key's rows (analysis->point, on the key the catalog
    // gives): which equality holds the key, and the table's own id, which
    // `ids` has only as its table-wide twin.
    const invalidation::point_filter::equality* key = nullptr;
    std::uint64_t keyed_relation = 0;
  };
  static constexpr std::size_t k_read_plans = 16;
  static constexpr std::chrono::seconds k_read_plan_life{1};
  std::vector<read_plan> read_plans_;
  std::size_t next_read_plan_ = 0;             // the one replaced next once all are in use
  std::vector<std::uint64_t> pending_writes_;  // relation ids the open transaction wrote
  std::vector<std::uint64_t> pending_rows_;    // ...and row keys (cache_write_set::rows)
  std::uint64_t pending_rows_version_ = 0;     // the oldest rows_version among them
  bool pending_ddl_ = false;
  // A statement sent in the open transaction may have changed what names
  // and operators resolve to (search_path, the role) where the settings
  // given to writes_of() do not show it yet: the writes after it are taken
  // as the whole database's.
  bool resolution_unsettled_ = false;
  bool transaction_wrote_ = false;  // see cache_write_set::ends_transaction_hits
  bool left_read_committed_ = false;
  bool session_changed_ = false;
  // Functions the session ran whose volatility the catalog has yet to give
  // (with the search_path and role they were called under).
  std::vector<std::tuple<invalidation::object_name, std::string, std::string>> suspect_functions_;
};

// Milliseconds on the system clock, as the store keeps time.
std::int64_t now_ms();

}  // namespace pgstash::proxy
