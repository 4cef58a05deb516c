// What pgstash does with every frame between one client and its server
// connection, without I/O: which frames it answers itself, how it rewrites
// the others (protocol-level statement names, the client's session carried
// to whichever connection it gets in transaction mode), what the server
// owes for them, and what each server frame means for the client.
//
// One routing decision per client frame, made once by plan() before any
// server is attached: answer locally, or send to a server. Frames too large
// for the read buffer are read whole first where must_hold() says pgstash
// has to read them, or else stream through (on_streamed()).
//
// The session reads frames, attaches a server connection when a plan says
// so, hands the frames here, writes to_server() to the server and relays
// server frames as on_server_frame() says. After an error in an extended-
// protocol batch, frames up to its Sync get no answer, as from PostgreSQL.
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
#include "proxy/cache_client.hpp"
#include "proxy/response_queue.hpp"
#include "proxy/session_state.hpp"
#include "proxy/statement_map.hpp"
#include "wire/backend.hpp"
#include "wire/frontend.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

class relay {
 public:
  using analysis_ptr = std::shared_ptr<const invalidation::analysis>;

  enum class route : std::uint8_t {
    end,             // Terminate
    skip,            // the rest of a failed batch: no answer
    answer_locally,  // pgstash answers in the server's place; no server needed
    to_server,       // goes to a server connection
    refuse,          // a message PostgreSQL would end the session for (08P01):
                     // it never reaches a server another client may share
  };
  struct plan {
    route where;
    analysis_ptr analysis;  // Query and Parse: the text's session effects
    std::string error = {};  // refuse: why
    // The result cache's answer (a Query answered locally), or the capture
    // of the server's answer for it.
    std::optional<std::string> cached = {};
    std::shared_ptr<result_capture> capture = {};
    bool defer_parse = false;  // an unnamed Parse pgstash holds back
    // An ErrorResponse pgstash gives in the server's place, failing the
    // batch as the server would (a Bind of a portal only pgstash holds).
    std::optional<std::string> fail = {};
  };
  // replace: the frame is dropped and take_replacement() goes to the
  // client in its place.
  enum class server_action : std::uint8_t { forward, drop, replace, stop };

  struct options {
    // Transaction pooling: the client's session is kept here and carried
    // between server connections. Otherwise frames pass through as sent.
    bool transaction_mode = false;
    // A batch larger than this is not kept for a replay.
    std::size_t replay_limit = 65536;
    // Analyses memoized per thread (limits.analysis_cache_entries).
    std::size_t analysis_cache_entries = 10000;
    // The session's use of the result cache; null when it is off. Must
    // outlive the relay.
    cache_client* cache = nullptr;
  };

  // `startup` are the client's startup parameters (transaction mode).
  relay(options opts, const std::vector<std::pair<std::string, std::string>>& startup);
  // Its queue's undo actions refer to it.
  relay(const relay&) = delete;
  relay& operator=(const relay&) = delete;
  // Writes whose transaction's end was never seen count as committed.
  ~relay();

  // --- The server connection frames go to.
  // REQUIRES: outlives the attachment; nothing is owed by a previous one.
  void attach(pool::server_state& server) { server_ = &server; }
  // Forgets what lives on that connection only: the unnamed statement and
  // the portals.
  void detach();
  bool attached() const { return server_ != nullptr; }
  // SQL that gives the attached server this client's settings, or "".
  std::string settings_sql();

  // --- Client frames.
  // Why a frame with this tag is refused from its header alone (a message
  // no client sends once logged in), or nullopt.
  static std::optional<std::string> refused_tag(char tag);
  plan plan_frame(char tag, std::string_view frame);
  bool must_hold(char tag, std::string_view head) const;
  // REQUIRES: attached() if p.where is to_server. Returns false at Terminate.
  // A cached answer in `p` is moved out.
  bool on_client_frame(char tag, std::string_view frame, plan& p);
  // True before a frame that starts a new batch while an earlier batch's
  // changes to the client's statement names may still be undone by an
  // error, or are still to come: the frame must wait for those answers,
  // since pgstash rewrites it with the names as they will then be.
  bool must_wait() const { return !batch_started_ && !copy_in_ && queue_.changes_pending(); }
  // A frame too large to hold, passing through by length; `head` is its
  // start as buffered. Returns false if the frame is skipped.
  bool on_streamed(char tag, std::string_view head);
  // Bytes for the server, appended by the calls above.
  std::string& to_server() { return out_; }

  // --- Server frames. `body` is null for a frame too large to hold.
  // The next server frame answers a request whose result pgstash keeps (the
  // cache's capture, or pgstash's own Describe): its body is wanted.
  bool wants_body() const;
  server_action on_server_frame(char tag, std::optional<std::string_view> body);
  // Appends the answers pgstash made up that are now due.
  void take_synthetic(std::string& out) { queue_.take_synthetic(out); }
  // After a refused cached plan: the batch to send again (empty if none).
  std::string take_replay() { return std::exchange(replay_out_, {}); }
  std::string take_replacement() { return std::exchange(replacement_, {}); }

  // --- Bringing a connection back when the client has left: each appends
  // to `out` and expects the answer, unforwarded.
  void end_copy(std::string& out);
  void end_batch(std::string& out);
  // Ends the open transaction, as PostgreSQL does when a client leaves:
  // what the transaction changed on the server is undone in its record too.
  void roll_back(std::string& out);

  // --- State.
  // Nothing owed and nothing open: the connection can go to someone else.
  bool idle() const;
  bool owed() const { return !queue_.empty(); }
  char transaction_status() const { return tx_status_; }
  // Results this session is capturing for the cache (and so may hold the
  // claim of, see in_flight_results).
  bool holds_captures() const;
  bool in_copy() const { return copy_in_; }
  bool pinned() const { return state_ && state_->pinned(); }
  unsigned pins() const { return state_ ? state_->pins() : 0; }
  bool in_batch() const { return batch_started_; }
  // pool.server_reset_query would make the server forget all this: forget it.
  void server_was_reset();

 private:
  // The name pgstash gives the statement and portal of its own requests
  // inside a client's batch; never one a client's, whose unnamed ones it
  // must not disturb.
  static constexpr std::string_view k_internal_name = "pgstash_internal";
  // A Query of pgstash's own, whose success is not the client's to see.
  void run_internal(std::string& out, std::string_view sql);
  using kind = expected_response::kind;
  using frontend_tag = wire::frontend_tag;

  analysis_ptr analyze(std::string_view sql) const;
  analysis_ptr analyze_query(std::string_view body) const;
  const std::string* deallocated_protocol_statement(const analysis_ptr& analysis) const;
  void on_query(std::string_view frame, plan& p);
  void on_parse(std::string_view frame, const plan& p);
  void on_bind(std::string_view frame, const plan& p);
  void on_describe(std::string_view frame, const plan& p);
  void on_execute(std::string_view frame, const plan& p);
  void on_close(std::string_view frame, const plan& p);
  void on_sync(std::string_view frame, const plan& p);
  void forward_as_is(char tag, std::string_view frame);
  void expect_for_tag(char tag);
  // `frame` may be only the head of a streamed one.
  void note_batch(char tag, std::string_view frame, route where);
  // A Parse the server did not run (failed, or skipped after an error):
  // the server does not have the statement.
  void forget_unprepared(const expected_response& e);
  // An undo action that gives `client_name` back its definition of now.
  std::function<void()> restore_statement(const std::string& client_name);
  void expect(kind what, analysis_ptr analysis = nullptr);
  void expect_synthetic(std::string bytes);
  // Answers the client's request with `error` (an ErrorResponse) and
  // fails the rest of its batch, as PostgreSQL would.
  void fail_batch(std::string error);
  // Before `analysis`'s statements are parsed or run: the SQL-level
  // prepared statements they name, made to match the client's, as Queries
  // (between batches) or as extended-protocol requests of pgstash's own
  // (`in_batch`, where a Query would end the batch).
  void sync_sql_prepared(const analysis_ptr& analysis, bool in_batch);
  // What must precede a use of `stmt` on the server (Closes, a Parse).
  // Returns true if a Parse was sent.
  bool ensure_prepared(const statement_map::statement& stmt);
  // In a failed transaction no connection can prepare `stmt`: true if this
  // one would have to and pgstash knows enough to answer as PostgreSQL.
  bool answers_in_failed_transaction(const statement_map::statement& stmt) const;
  // The transaction will still be failed when the server reaches the next
  // request: it was at the last ReadyForQuery, and nothing owed can end it.
  bool transaction_failed_here() const;
  // The transaction may be failed when the server reaches the next request.
  bool transaction_may_be_failed_here() const;
  void record_replay(char tag, std::string_view frame);
  void start_replay();
  server_action on_ready_for_query_frame(char status);
  // A ReadyForQuery: a transaction that ends drops the client's portals
  // bound in cycles before `ended_before` (see response_queue::next_cycle).
  void on_ready_for_query(char status, std::optional<std::uint64_t> ended_before);
  void on_command_complete(std::string_view tag_text);
  server_action on_server_error(std::optional<std::string_view> body);
  // The held re-creation error that stands in for the answer to `head`, a
  // Describe of a portal that EXECUTEs a SQL prepared statement, or "".
  std::string recreation_error_at_describe(const expected_response& head);
  // The server failed `describe`, pgstash's own Describe of a client's
  // statement, with ErrorResponse `error_body`: what stands for its answers
  // to the requests after it, or "" if the error stays.
  std::string answers_after_own_describe(std::string_view error_body,
                                         const expected_response& describe);
  // Keeps what the server answered pgstash's Describe of a statement.
  static void note_description(char tag, std::string_view body, statement_description& d);
  // The held error of re-creating the SQL prepared statement that the
  // client's error `fields`, answering `head`, is a consequence of, or "".
  // Where the EXECUTE passes a wrong number of arguments, PostgreSQL's
  // error for that instead.
  std::string take_recreation_error(const wire::error_fields& fields,
                                    const expected_response& head);
  // The analysis of the client's SQL PREPARE of `name` (one statement), or
  // null.
  analysis_ptr client_prepare(const std::string& name) const;
  // How many arguments `head`'s EXECUTE of `name` passes, or -1.
  static int execute_arguments(const expected_response& head, const std::string& name);
  // `body` with the server-side name of the statement `head` used replaced
  // by the client's, or "" if it does not mention it.
  std::string error_for_client(std::string_view body, const expected_response& head) const;

  // --- The result cache (relay_cache.cpp).
  // A Query may be answered from the cache now: nothing owed, no
  // transaction or batch open, no unnamed statement a Query would destroy
  // on the server, and a session the cache may answer for.
  bool cache_may_answer() const;
  // The same for a Bind inside a batch: nothing before it in the batch
  // ran a statement, and nothing of an earlier batch is still owed.
  bool cache_may_answer_in_batch() const;
  // Why the cache may not answer for this session now, if it may not (its
  // settings, its transaction).
  std::optional<invalidation::uncacheable> cache_bypass() const;
  const pool::settings_map* cache_settings() const;
  // Asks the cache about a Query; fills p.cached or p.capture.
  void consult_cache(std::string_view sql, plan& p);
  // The cache's route for an extended-protocol frame, if it answers it
  // (a Bind it has the result for, and what follows on that portal).
  std::optional<plan> plan_for_cache(frontend_tag t, std::string_view frame);
  std::optional<plan> plan_bind_for_cache(std::string_view body);
  // Fails the batch with 25P02, as the server does in a failed transaction.
  plan failed_transaction_plan() const;
  // The cache's part of a frame: answers for portals it holds, captures,
  // the writes a frame carries, settings it cannot follow. Moves p.cached
  // out if it uses it.
  bool answer_from_cache(char tag, std::string_view frame, plan& p);
  // REQUIRES: e.portal is one of cache_.local_portals.
  void answer_execute_from_cache(const wire::execute_message& e);
  void tell_cache(char tag, std::string_view frame, const plan& p);
  void cache_on_streamed(char tag, std::string_view head);
  void cache_on_server_frame(char tag, std::optional<std::string_view> body);
  // Attaches what the request just queued may write.
  void expect_writes(cache_write_set writes);
  // A request was answered in full: what it wrote counts.
  void cache_completed(const expected_response& e);
  // The unnamed Parse pgstash answered and held back goes to the server
  // before a frame that uses the unnamed statement there.
  void send_deferred_parse_if_needed(char tag, std::string_view frame);
  // The Parse that made the client's statement `name`, as the server has it.
  std::optional<std::string_view> cache_statement(std::string_view name) const;
  // Records `parse` as statement `name`'s (or forgets it), undone with the
  // request just queued if the server fails or skips it.
  void set_statement(const std::string& name, std::optional<std::string> parse);
  // The client's unnamed statement and the batch end (a Query).
  void forget_unnamed_statement();

  options opts_;
  // A portal pgstash bound from the cache: its answers.
  struct local_portal {
    std::string response;  // the RowDescription, then the DataRows
    std::size_t rows_at;   // where the DataRows start
    std::size_t sent = 0;  // bytes of the DataRows already sent
    std::string_view row_description() const {
      return std::string_view(response).substr(0, rows_at);
    }
    std::string_view rows_left() const { return std::string_view(response).substr(rows_at + sent); }
  };
  struct cache_batch_state {
    // Parse frames of the client's statements (as the server has them: a
    // failed Parse is undone) and texts of its portals, for the writes an
    // Execute carries and the key of a Bind.
    std::map<std::string, std::string, std::less<>> statements;
    struct portal_text {
      std::string sql;
      cache_client::point_values point;  // cache_client::bound_point()
    };
    std::map<std::string, portal_text, std::less<>> portal_texts;
    std::map<std::string, local_portal, std::less<>> local_portals;
    // Portals sent to the server whose result is captured.
    std::map<std::string, std::shared_ptr<result_capture>, std::less<>> capture_portals;
    // An unnamed Parse answered by pgstash and not sent yet: a Bind the
    // cache answers then costs the server nothing. Only a Parse identical
    // to one of the last unnamed ones the server accepted is held back
    // (most recent last; a client cycles through a few statements).
    std::optional<std::string> deferred_parse;
    std::vector<std::string> good_unnamed_parses;
    bool batch_local = true;     // nothing of this batch went to the server
    bool batch_executed = false; // an Execute of this batch went to the server
  } cache_;
  // Session mode: the client changed settings pgstash does not follow, or
  // made session objects (temp tables) a cached name could mean: its reads
  // are no longer served from the cache.
  bool cache_unfollowed_session_ = false;
  bool rollback_seen_ = false;  // CommandComplete ROLLBACK in this cycle
  pool::server_state* server_ = nullptr;
  std::optional<session_state> state_;  // transaction mode only
  response_queue queue_;
  statement_map statements_;  // transaction mode
  analysis_ptr unnamed_statement_;
  // When the unnamed statement is `DEALLOCATE name` of a protocol-level
  // statement, which pgstash answers itself: that name.
  std::optional<std::string> unnamed_deallocates_;
  std::map<std::string, analysis_ptr> portals_;
  std::map<std::string, std::string> deallocating_portals_;  // portal -> statement it deallocates
  // portal -> the cycle of its Bind. A transaction that ends drops the
  // portals of its cycles, not those bound in a batch pipelined after.
  std::map<std::string, std::uint64_t> portal_cycles_;
  std::string out_;

  // A batch from a Bind through its Sync, kept until its answers arrive so
  // that it can be sent again once on a re-prepared statement after
  // "cached plan must not change result type".
  std::string replay_;
  bool replay_recording_ = false;
  bool replay_pending_ = false;  // the failed batch's ReadyForQuery is still to come
  statement_map::statement replay_statement_;
  std::string replay_out_;
  // Held errors of re-creating the client's SQL prepared statements (see
  // expected_response::syncs_sql_prepared), by name, until the client's next
  // ReadyForQuery.
  struct held_recreation_error {
    std::string error;  // the ErrorResponse
    bool may_have_aborted = false;
  };
  std::map<std::string, held_recreation_error> recreation_errors_;
  // The client was given its batch's error before the server's own, which
  // is on its way: the server's answers until then are dropped.
  bool failed_for_client_ = false;
  std::string replacement_;

  char tx_status_ = 'I';
  bool copy_in_ = false;
  bool error_in_cycle_ = false;  // an ErrorResponse since the last ReadyForQuery
  bool batch_started_ = false;   // extended-protocol messages since the last Sync
  bool batch_at_server_ = false;  // ...of which some reached the server
  bool skipping_ = false;        // after an error in a batch, until its Sync
};

}  // namespace pgstash::proxy
