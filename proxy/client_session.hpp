// One client connection, from its first byte to its last: TLS and startup
// negotiation, authentication against the auth file, then a relay of
// frames between the client and a leased server connection. What is done
// with each frame is proxy/relay's business; this class does the I/O, the
// lease of a server connection and its two pumps (client to server, server
// to client).
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

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "conf/config.hpp"
#include "conf/live.hpp"
#include "net/asio.hpp"
#include "net/deadline.hpp"
#include "net/pg_stream.hpp"
#include "pool/server_connection.hpp"
#include "proxy/client_registry.hpp"
#include "proxy/event_log.hpp"
#include "proxy/relay.hpp"
#include "proxy/traffic_stats.hpp"
#include "wire/frontend.hpp"

namespace pgstash::proxy {

struct proxy_context;

class client_session : public std::enable_shared_from_this<client_session> {
 public:
  // REQUIRES: `ctx` outlives the session; `socket`'s io_context is run by
  // one thread. `peer` names the client in the log.
  client_session(proxy_context& ctx, stream_socket socket, std::string peer);
  client_session(const client_session&) = delete;
  client_session& operator=(const client_session&) = delete;

  // Runs the session to its end in the background.
  void start();

  // Forwards a client's CancelRequest to the server running its query.
  // Safe from any thread.
  void cancel_server_query();

 private:
  // The server connection, as one state. The pump relays an active lease;
  // a lease that ends is given back to the pool (releasing) or closed
  // (closing) by the pump, once no write and no cancel request is in flight.
  enum class lease : std::uint8_t { none, active, releasing, closing };

  // Runs `task` on the session's executor; `what` names it in the log if
  // it throws.
  void spawn(awaitable<void> task, const char* what);
  awaitable<void> run(std::shared_ptr<client_session> self);
  // Startup, authentication, the first server lease and the greeting.
  // Returns false if the session ends there.
  awaitable<bool> log_in(const std::shared_ptr<client_session>& self);
  awaitable<bool> negotiate_startup(wire::startup_message& startup, std::string& packet);
  // Proves the client is who it says by `method`, against the auth file or
  // else auth.query's answer, and fills in what pgstash can then prove to
  // the server.
  awaitable<bool> authenticate(pool::server_credentials& credentials, conf::auth_method method);
  // The exchange itself, against `secret` (nullopt: the user is unknown).
  awaitable<bool> check_secret(pool::server_credentials& credentials, conf::auth_method method,
                               const std::optional<std::string>& secret);
  // The client asked for the admin console (database "pgstash").
  bool wants_console() const;
  // The server's name for the database the client asked for; nullopt if
  // `databases` is set and does not list it.
  std::optional<std::string> server_database(const conf::config& config) const;
  // Sends an authentication request and returns the body of the client's
  // password message ('p'), or nullopt if the session must end.
  awaitable<std::optional<std::string>> ask_for_password(std::string_view request);
  // A cancel request for a key this instance did not hand out: sent on to
  // the peer the key names ([peers]), if it names another one.
  awaitable<void> forward_cancel(const wire::cancel_request& cancel);
  // Reads client frames and routes each (relay::plan_frame) until the
  // client leaves or its server connection fails.
  awaitable<void> client_loop();
  // --- The admin console (console_session.cpp).
  // Admits a user of admin.users and greets it. False if the session ends.
  awaitable<bool> console_login();
  // Answers simple queries with admin_console until the client leaves.
  awaitable<void> serve_console();
  // --- Replication clients (replication_relay.cpp).
  // Connects the client's own server connection, outside the pools.
  awaitable<bool> attach_replication_server();
  // Relays bytes both ways, unparsed (replication commands, CopyBoth),
  // until either side closes; then closes both.
  awaitable<void> relay_replication(std::shared_ptr<client_session> self);
  awaitable<void> replication_server_to_client(std::shared_ptr<client_session> self);

  // Waits until relay::must_wait() is false. Returns false if the lease
  // ended first: the answers will never come (the server connection was
  // lost), so the client cannot go on.
  awaitable<bool> wait_for_answers();
  // Reads more of the client's bytes (noting when they arrived, for strict
  // cache consistency).
  awaitable<void> read_from_client(error_code& ec);
  // `subscribe` hands a waker to whatever will call it and returns the
  // deadline of the wait, or nothing if there is nothing to wait for. Waits
  // until the waker is called or the deadline passes.
  using clock_time = std::chrono::steady_clock::time_point;
  using subscription = std::function<std::optional<clock_time>(std::function<void()>)>;
  awaitable<void> wait_until_woken(const subscription& subscribe);
  // True if `plan` (from relay::plan_frame) must wait: the cache holds a
  // hit back for the replication stream's proof (strict consistency), or
  // another client is fetching the result of a miss
  // (cache.coalesce_wait_ms). Most frames need not, and are planned
  // without a coroutine of their own.
  bool plan_must_wait(const relay::plan& plan) const;
  // The second of those: `plan` captures a miss another client is fetching.
  bool waits_for_fetch(const relay::plan& plan) const;
  // Waits for what `plan` must wait for (once for each), planning the
  // frame again into `plan` after each wait. (By reference: a plan passed
  // by value would sit in every session's client_loop frame.)
  awaitable<void> plan_after_waits(char tag, std::string_view frame, relay::plan& plan);
  // Reads the frame at the head of the buffer, larger than the buffer,
  // whole into `frame`. Returns false if the client is gone.
  awaitable<bool> read_whole_frame(std::string& frame, std::uint32_t max);
  // Ends the session: the error that ended it, then the server connection
  // brought back clean (or closed) and returned.
  awaitable<void> leave();

  // --- The lease (client_lease.cpp).
  // Leases a server connection and gives it this client's session. Returns
  // false if the session must end.
  awaitable<bool> attach_server();
  void release_server(bool reusable);
  // The one server pump of the session, started after login: relays each
  // lease's server frames, then ends the lease, until the client has left
  // and no lease is left.
  void start_server_pump();
  awaitable<void> server_pump(std::shared_ptr<client_session> self);
  // Relays server frames to the client until the lease is no longer active.
  awaitable<void> relay_server();
  // One server frame: the relay's verdict, plus what the session follows
  // (reported parameters, ReadyForQuery).
  relay::server_action on_server_frame(char tag, std::optional<std::string_view> body);
  // The client's frames want the server: a lease being given back is kept.
  void keep_lease();
  // Makes the pump look at the lease again: cancels its read or its wait.
  void wake_pump();
  // No write to the server and no cancel request is under way.
  bool nothing_in_flight() const;
  awaitable<void> cancel_on_server(std::shared_ptr<client_session> self);
  // One step of bringing the connection back clean after the client left
  // (CopyFail, Sync, cancel, ROLLBACK, pool.server_reset_query); the next
  // ReadyForQuery runs the next one.
  awaitable<void> cleanup_step();
  // Brings the backend of a client that left back to what a fresh one
  // would give the next client: pool.server_reset_query, after checking
  // that it has no temporary schema. False if it must be closed instead.
  // REQUIRES: the pump is not reading the server.
  awaitable<bool> reset_backend();
  awaitable<void> flush_to_server();
  awaitable<void> send_to_server(std::string_view bytes);

  awaitable<void> write_to_client(std::string_view bytes);
  // One event line (proxy/event_log) naming this client: session, client
  // address, database, user, then `extra`.
  void log_client_event(spdlog::level::level_enum level, std::string_view event,
                        std::initializer_list<log_field> extra = {});
  // A client frame `tag` begins a request if none is under way: its clock
  // starts, and with log.slow_query_ms its statement text is kept.
  void begin_request(char tag, std::string_view frame);
  // A ReadyForQuery with `status` reached the client: one request answered.
  void count_ready(char status);
  // Counts the ReadyForQuery messages among frames pgstash made up.
  void count_synthetic(std::string_view frames);
  awaitable<void> fail(std::string_view sqlstate, std::string_view message);
  bool transaction_mode() const;
  // Starts the idle clock (limits.client_idle_timeout_ms or, inside a
  // transaction, limits.idle_transaction_timeout_ms) if one is configured.
  void arm_idle_timer();
  std::string prefix() const;
  // Who this client is to the result cache (and its catalog look-ups).
  cache_client::identity cache_identity(
      const std::vector<std::pair<std::string, std::string>>& startup) const;

  proxy_context& ctx_;
  // The config this session's login and requests follow: taken again after
  // the startup packet and at the start of each batch of client frames, so
  // a reload reaches the session at its next request. What runs beside the
  // requests (a cancel, the end) reads ctx_.cfg itself.
  conf::held<conf::config> cfg_;
  std::uint64_t id_;
  net::pg_stream client_;
  std::string peer_;
  // What the admin port shows of this client, and its pool's counters
  // (from login on).
  std::shared_ptr<client_record> record_;
  std::shared_ptr<pool_traffic> traffic_;
  std::chrono::steady_clock::duration login_wait_{};  // the login's wait for a server
  // When the request being answered began; unset while nothing is asked.
  std::optional<std::chrono::steady_clock::time_point> request_started_;
  std::string request_text_;  // its statement, for the slow-query log
  static constexpr std::size_t k_logged_statement_bytes = 200;
  std::string user_;
  std::string database_;
  pool::connect_request request_;
  // The server connection is this client's alone: session semantics
  // whatever pool.mode, and closed when the client leaves
  // (pool.unpooled_databases).
  bool own_server_ = false;
  // A replication connection (startup parameter "replication"): its own
  // server connection, relayed as bytes.
  bool replication_ = false;
  bool replication_counted_ = false;  // in ctx_.replication_clients
  bool console_ = false;  // logged in to the admin console: no server at all
  std::optional<std::pair<std::uint32_t, std::uint32_t>> cancel_key_;
  // Declared before the relay, which uses it to its end.
  std::optional<cache_client> cache_;  // when the result cache is on
  std::optional<relay> relay_;  // from login on
  std::shared_ptr<const pool::parameter_map> reported_;  // ParameterStatus values the client was told

  std::unique_ptr<pool::server_connection> server_;
  lease lease_ = lease::none;
  int writes_to_server_ = 0;   // writes in flight
  int cancels_in_flight_ = 0;  // cancel requests the server has not yet delivered
  bool ready_seen_ = false;    // a ReadyForQuery since the pump last looked
  // Bytes of a client frame still passing through to the server by length:
  // the server connection is the frame's until its end.
  std::uint64_t client_streaming_ = 0;
  unsigned pins_logged_ = 0;   // pin reasons already logged
  std::error_code server_protocol_error_;
  // The server connection failed under the client: its session is over, and
  // nothing it sent after is run on another connection.
  bool server_lost_ = false;
  std::optional<asio::steady_timer> pump_wake_;  // the pump waits here between leases
  std::optional<asio::steady_timer> pump_done_;  // cancelled when the pump ends
  // Cancelled by the pump whenever it has handled server frames, for a
  // client pump waiting on relay::must_wait().
  std::optional<asio::steady_timer> answers_arrived_;
  bool waiting_for_answers_ = false;
  bool pump_running_ = false;

  bool client_gone_ = false;
  struct {
    bool due = false;  // a ReadyForQuery came: the next step may run
    bool cancel_sent = false;
    bool reset_due = false;  // the pump resets the connection before giving it back
  } cleanup_;
  std::string end_sqlstate_;  // why the client pump ended, if pgstash ends it
  std::string end_message_;
  std::optional<net::deadline> idle_timer_;
  std::string idle_sqlstate_;  // set when the idle clock ran out
};

}  // namespace pgstash::proxy
