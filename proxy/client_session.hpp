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

#include "invalidation/statement_analysis.hpp"
#include "net/asio.hpp"
#include "net/deadline.hpp"
#include "net/pg_stream.hpp"
#include "pool/server_connection.hpp"
#include "proxy/response_queue.hpp"
#include "proxy/session_state.hpp"
#include "proxy/statement_map.hpp"
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
  using kind = expected_response::kind;

  // How one client frame is handled, decided once from the frame before a
  // server is attached for it.
  enum class frame_route : std::uint8_t {
    end,             // Terminate
    skip,            // the rest of a failed batch: no answer, as from PostgreSQL
    answer_locally,  // pgstash answers in the server's place; no server needed
    to_server,       // goes to a server connection
  };
  struct frame_plan {
    frame_route route;
    analysis_ptr analysis;  // Query and Parse: the text's session effects
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
  // Call only from run() or client_loop(), not from a coroutine they await:
  // the pump starts inline, and started from a nested awaitable it left the
  // caller's frame dangling (seen with g++ 12 and Boost 1.74).
  void start_server_pump();
  awaitable<void> client_loop();
  awaitable<void> server_loop(std::shared_ptr<client_session> self);
  // Reads the frame at the head of the buffer, larger than the buffer,
  // whole into `frame`. Returns false if the client is gone.
  awaitable<bool> read_whole_frame(std::string& frame, std::uint32_t max);
  // The route of a frame held whole.
  frame_plan plan_frame(char tag, std::string_view frame);
  // A frame larger than the read buffer must be held whole (bounded by
  // limits.max_message_size) if pgstash rewrites or reads it; else it
  // streams through by length. `head` is its start, as much as is buffered.
  bool must_hold(char tag, std::string_view head) const;
  // Handles one client frame (held whole); appends what goes to the server
  // to out_. REQUIRES: a server is attached if plan.route is to_server.
  // Returns false if the session must end.
  bool on_client_frame(char tag, std::string_view frame, const frame_plan& plan);
  void on_query(std::string_view frame, const frame_plan& plan);
  void on_parse(std::string_view frame, const frame_plan& plan);
  void on_bind(std::string_view frame, const frame_plan& plan);
  void on_describe(std::string_view frame, const frame_plan& plan);
  void on_execute(std::string_view frame, const frame_plan& plan);
  void on_close(std::string_view frame, const frame_plan& plan);
  void on_sync(std::string_view frame, const frame_plan& plan);
  // The session effects of a Query body (transaction mode), or null.
  analysis_ptr analyze_query(std::string_view body);
  // For a text that is only `DEALLOCATE name` of one of the client's
  // protocol-level statements, which pgstash answers itself: that name.
  const std::string* deallocated_protocol_statement(const analysis_ptr& analysis) const;
  // Sends `frame` unchanged and expects the answer its tag calls for.
  void forward_as_is(char tag, std::string_view frame);
  // Sends the recorded batch again after re-preparing its statement.
  void start_replay();
  // For a frame sent unchanged: the response it will get.
  void expect_for_tag(char tag);
  // Follows extended-protocol batches: which frames open one, which end it.
  void note_batch(char tag);
  // Before `analysis`'s statements run on the server: the SQL-level
  // prepared statements they name, made to match the client's, as a Query
  // (between batches) or as extended-protocol requests of pgstash's own
  // (inside one, where a Query would end the batch).
  void sync_sql_prepared(const analysis_ptr& analysis, bool extended);
  // Answers an extended-protocol request with `error` and skips the rest
  // of its batch.
  void fail_batch(std::string error);
  frame_action on_server_frame(char tag, std::optional<std::string_view> body);
  void on_ready_for_query(char status);
  void on_command_complete(std::string_view tag_text);
  // Returns true if the error is consumed by a replay instead of reaching
  // the client.
  bool on_server_error(std::optional<std::string_view> body);
  // A batch from a Bind through its Sync, kept until its answers arrive so
  // that it can be sent again once on a re-prepared statement.
  void record_replay(char tag, std::string_view frame);
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
  void expect(kind what, analysis_ptr analysis = nullptr);
  // Starts the idle clock (limits.client_idle_timeout_ms or, inside a
  // transaction, limits.idle_transaction_timeout_ms) if one is configured.
  void arm_idle_timer();
  void expect_synthetic(std::string bytes);
  // Transaction mode: what must precede a use of `stmt` on the current
  // server (a Parse, and Closes), appended to out_. Returns true if a Parse
  // was sent.
  bool ensure_prepared(const statement_map::statement& stmt);
  std::string prefix() const;

  proxy_context& ctx_;
  std::uint64_t id_;
  net::pg_stream client_;
  std::string peer_;
  std::string user_;
  std::string database_;
  pool::connect_request request_;
  std::unique_ptr<pool::server_connection> server_;
  std::optional<std::pair<std::uint32_t, std::uint32_t>> cancel_key_;
  std::optional<session_state> state_;  // transaction mode only

  response_queue queue_;
  statement_map statements_;  // transaction mode
  analysis_ptr unnamed_statement_;
  // When the unnamed statement is `DEALLOCATE name` of a protocol-level
  // statement, which pgstash answers itself: that name.
  std::optional<std::string> unnamed_deallocates_;
  std::map<std::string, analysis_ptr> portals_;
  std::map<std::string, std::string> deallocating_portals_;  // portal -> statement it deallocates
  std::string out_;  // frames for the server, written by flush_to_server()
  std::string replay_;           // the batch being recorded for a replay
  bool replay_recording_ = false;
  bool replay_pending_ = false;  // the failed batch's ReadyForQuery is still to come
  statement_map::statement replay_statement_;
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
  std::optional<net::deadline> idle_timer_;
  std::shared_ptr<const pool::parameter_map> reported_;  // ParameterStatus values the client was told
  bool batch_started_ = false;  // extended-protocol messages since the last Sync
  bool skipping_ = false;       // after an error in a batch: frames up to its Sync get no answer
  std::string idle_sqlstate_;  // set when the idle clock ran out
};

}  // namespace pgstash::proxy
