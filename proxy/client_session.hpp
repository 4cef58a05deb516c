// One client connection, from its first byte to its last: TLS and startup
// negotiation, authentication against the auth file, then a relay of
// frames between the client and a leased server connection.
//
// In session mode the server connection is leased at login and kept until
// the client leaves. In transaction mode it is leased when the client sends
// something that needs a server and given back at the next ReadyForQuery
// 'I' with nothing outstanding; pgstash then carries the client's session
// (settings, prepared statements) to whichever connection it gets next, or
// pins the client to its connection when that is impossible (LISTEN, temp
// tables, session advisory locks, WITH HOLD cursors).
//
// When the client leaves, its server connection is brought back to a clean
// idle state (cancel, CopyFail, Sync, ROLLBACK and, in session mode or when
// pinned, pool.server_reset_query) and returned to the pool, or closed.
//
// Runs on one worker's io_context (one thread); owned by the coroutines
// running it (shared_ptr).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <boost/container/deque.hpp>

#include "invalidation/statement_analysis.hpp"
#include "pool/asio.hpp"
#include "pool/deadline.hpp"
#include "pool/pg_stream.hpp"
#include "pool/server_connection.hpp"
#include "proxy/session_state.hpp"
#include "wire/frontend.hpp"

namespace pgstash::proxy {

struct proxy_context;

class client_session : public std::enable_shared_from_this<client_session> {
 public:
  // REQUIRES: `ctx` outlives the session; `socket`'s io_context is run by
  // one thread.
  client_session(proxy_context& ctx, tcp::socket socket);
  client_session(const client_session&) = delete;
  client_session& operator=(const client_session&) = delete;

  // Runs the session to its end in the background.
  void start();

  // Forwards a client's CancelRequest to the server running its query.
  // Safe from any thread.
  void cancel_server_query();

 private:
  using analysis_ptr = std::shared_ptr<const invalidation::analysis>;

  // A response the server owes for something sent to it, in order.
  struct expected {
    enum class kind : std::uint8_t {
      query,               // Query or FunctionCall: everything through ReadyForQuery
      parse,               // ParseComplete
      bind,                // BindComplete
      describe,            // [ParameterDescription], then RowDescription or NoData
      execute,             // rows, then CommandComplete, EmptyQueryResponse or PortalSuspended
      close,               // CloseComplete
      sync,                // ReadyForQuery
      synthetic,           // nothing from the server: `bytes` go to the client
    };
    kind what;
    bool forward = true;  // false: pgstash's own message; its success responses are dropped
    std::string bytes;
    analysis_ptr analysis;  // query/execute: per-statement session effects
    std::size_t statements_done = 0;
    std::string server_statement;  // parse: the server-side statement being created
    // parse: the client's name for the statement being created; bind: the
    // client's statement, when this batch may be replayed after "cached plan
    // must not change result type".
    std::string client_statement;
  };

  // A client statement as prepared on servers (transaction mode).
  struct prepared_statement {
    std::string server_name;
    std::string parse_frame;  // a Parse creating it under server_name
    analysis_ptr analysis;
  };

  enum class frame_action { forward, drop, stop };

  awaitable<void> run(std::shared_ptr<client_session> self);
  // Startup, authentication, the first server lease and the greeting.
  // Returns false if the session ends there.
  awaitable<bool> log_in(const std::shared_ptr<client_session>& self);
  // Ends the session: the error that ended it, then the server connection
  // brought back clean (or closed) and returned.
  awaitable<void> leave();
  awaitable<bool> negotiate_startup(wire::startup_message& startup, std::string& packet);
  awaitable<bool> authenticate(pool::server_credentials& credentials);
  // Sends an authentication request and returns the body of the client's
  // password message ('p'), or nullopt if the session must end.
  awaitable<std::optional<std::string>> ask_for_password(std::string_view request);
  awaitable<bool> attach_server();
  void start_server_pump();
  awaitable<void> client_loop();
  awaitable<void> server_loop(std::shared_ptr<client_session> self);
  // Handles one client frame (held whole); appends what goes to the server
  // to out_. Returns false if the session must end.
  bool on_client_frame(char tag, std::string_view frame);
  bool on_client_frame_inner(char tag, std::string_view frame);
  // The session effects of a Query body (transaction mode), or null.
  analysis_ptr analyze_query(std::string_view body);
  // For a query that is only `DEALLOCATE name` of one of the client's
  // protocol-level statements, which pgstash answers itself: that name.
  const std::string* deallocated_protocol_statement(const analysis_ptr& analysis) const;
  // Sends `frame` unchanged and expects the answer its tag calls for.
  void forward_as_is(char tag, std::string_view frame);
  // Sends the recorded batch again after re-preparing its statement.
  void start_replay();
  // For a frame streamed without being held: the response it will get.
  void expect_for_tag(char tag);
  // Transaction mode reads these frames to rename statements and follow
  // session state.
  bool must_decode(char tag) const;
  // A Bind too large to hold can stream if it names no renamed statement.
  bool bind_streamable(std::string_view frame) const;
  frame_action on_server_frame(char tag, std::optional<std::string_view> body);
  void on_ready_for_query(char status);
  void on_command_complete(std::string_view tag_text);
  // Returns true if the error is consumed by a replay instead of reaching
  // the client.
  bool on_server_error(std::optional<std::string_view> body);
  // A batch from a Bind through its Sync, kept until its answers arrive so
  // that it can be sent again once on a re-prepared statement.
  void record_replay(char tag, std::string_view frame);
  // Emits synthetic responses now at the head of queue_ into `out`.
  void take_synthetic(std::string& out);
  bool server_idle() const;
  // No write to the server and no cancel request is under way.
  bool nothing_in_flight() const;
  // A release deferred until the connection is idle and nothing is in
  // flight happens now: the server pump is woken from its read.
  void wake_pump_to_release();
  awaitable<void> cancel_on_server(std::shared_ptr<client_session> self);
  void release_server(bool reusable);
  awaitable<void> flush_to_server();
  awaitable<void> write_to_client(std::string_view bytes);
  awaitable<void> cleanup_step();
  awaitable<void> send_to_server(std::string_view bytes);
  awaitable<void> fail(std::string_view sqlstate, std::string_view message);
  analysis_ptr analyze(std::string_view sql);
  bool transaction_mode() const;
  void expect(expected::kind what, analysis_ptr analysis = nullptr);
  // Starts the idle clock (limits.client_idle_timeout_ms or, inside a
  // transaction, limits.idle_transaction_timeout_ms) if one is configured.
  void arm_idle_timer();
  void expect_synthetic(std::string bytes);
  // Transaction mode: the Parse that must precede a use of `name` on the
  // current server, if it lacks the statement; appended to out_.
  void ensure_prepared(const prepared_statement& stmt);
  std::string prefix() const;

  proxy_context& ctx_;
  std::uint64_t id_;
  pool::pg_stream client_;
  std::string peer_;
  std::string user_;
  std::string database_;
  pool::connect_request request_;
  std::unique_ptr<pool::server_connection> server_;
  std::optional<std::pair<std::uint32_t, std::uint32_t>> cancel_key_;
  std::optional<session_state> state_;  // transaction mode only

  // Allocates nothing until used, and frees all when shrunk empty (an
  // idle client's).
  boost::container::deque<expected> queue_;
  std::map<std::string, prepared_statement> statements_;  // client name -> (transaction mode)
  analysis_ptr unnamed_statement_;
  std::map<std::string, analysis_ptr> portals_;
  std::string out_;  // frames for the server, written by flush_to_server()
  std::string replay_;           // the batch being recorded for a replay
  bool replay_recording_ = false;
  bool replay_pending_ = false;  // the failed batch's ReadyForQuery is still to come
  std::string replay_statement_;
  std::string to_server_;        // what the server pump must send (a replay)

  char tx_status_ = 'I';
  bool copy_in_ = false;
  bool error_in_cycle_ = false;  // an ErrorResponse since the last ReadyForQuery
  bool ready_seen_ = false;      // a ReadyForQuery since the server pump last looked
  int writes_to_server_ = 0;     // client-pump writes in flight
  int cancels_in_flight_ = 0;    // cancel requests the server has not yet delivered
  bool release_deferred_ = false;
  bool client_gone_ = false;
  bool server_pump_running_ = false;
  bool cancel_sent_ = false;
  bool reset_sent_ = false;
  bool cleanup_due_ = false;
  bool clean_ = false;   // cleanup done: the connection can be reused
  bool broken_ = false;  // the connection must not be reused
  std::error_code server_protocol_error_;
  std::string end_sqlstate_;  // why the client pump ended, if pgstash ends it
  std::string end_message_;
  std::optional<asio::steady_timer> server_pump_done_;
  std::optional<pool::deadline> idle_timer_;
  std::shared_ptr<const pool::parameter_map> reported_;  // ParameterStatus values the client was told
  bool batch_started_ = false;   // extended-protocol messages since the last Sync
  bool skip_until_sync_ = false;  // after an error pgstash answered itself
  std::string idle_sqlstate_;  // set when the idle clock ran out
};

}  // namespace pgstash::proxy
