// One client connection, from its first byte to its last: TLS and startup
// negotiation, authentication against the auth file, a server connection
// leased for the whole session (session pooling), then a relay of frames in
// both directions until the client leaves. On the way out the server
// connection is brought back to a clean idle state (cancel, ROLLBACK,
// pool.reset_query) and returned to the pool, or closed if that fails.
//
// Runs on one executor; owned by the coroutines running it (shared_ptr).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "pool/asio.hpp"
#include "pool/pg_stream.hpp"
#include "pool/server_connection.hpp"
#include "pool/server_pool.hpp"
#include "wire/frontend.hpp"

namespace pgstash::proxy {

struct proxy_context;

class client_session : public std::enable_shared_from_this<client_session> {
 public:
  // REQUIRES: `ctx` outlives the session.
  client_session(proxy_context& ctx, tcp::socket socket);
  client_session(const client_session&) = delete;
  client_session& operator=(const client_session&) = delete;

  // Runs the session to its end in the background.
  void start();

  // Forwards a client's CancelRequest to the server running its query.
  void cancel_server_query();

 private:
  enum class direction { to_server, to_client };
  enum class frame_action { forward, drop, stop };

  awaitable<void> run(std::shared_ptr<client_session> self);
  // Startup phase up to a StartupMessage; false if the session should end
  // (cancel request handled, bad packet answered, peer gone).
  awaitable<bool> negotiate_startup(wire::startup_message& startup, std::string& packet);
  awaitable<bool> authenticate(pool::server_credentials& credentials);
  awaitable<std::optional<std::string>> read_password_frame();
  awaitable<void> relay_session(std::shared_ptr<client_session> self);
  awaitable<void> relay(direction dir);
  awaitable<void> server_pump(std::shared_ptr<client_session> self);
  frame_action on_client_frame(char tag);
  frame_action on_server_frame(char tag, std::optional<std::string_view> body);
  // Takes the next step toward a clean idle server once the client is gone.
  awaitable<void> cleanup_step();
  awaitable<void> send_to_server(std::string_view bytes);
  awaitable<void> fail(std::string_view sqlstate, std::string_view message);
  std::string prefix() const;

  proxy_context& ctx_;
  std::uint64_t id_;
  pool::pg_stream client_;
  std::string peer_;
  std::string user_;
  std::string database_;
  std::unique_ptr<pool::server_connection> server_;
  pool::pool_key pool_key_;
  std::optional<std::pair<std::uint32_t, std::uint32_t>> cancel_key_;

  // Relay bookkeeping, read by both directions (one executor, no locks).
  int pending_ = 0;          // Query/Sync/FunctionCall sent, ReadyForQuery not yet seen
  bool unsynced_ = false;    // extended-protocol messages sent since the last Sync
  bool copy_in_ = false;     // the server is waiting for COPY data
  char tx_status_ = 'I';     // from the last ReadyForQuery
  bool client_gone_ = false;
  bool server_done_ = false;  // the server-to-client pump has ended
  bool cancel_sent_ = false;
  bool reset_sent_ = false;
  bool cleanup_due_ = false;
  bool clean_ = false;   // reset done, idle: the connection can be reused
  bool broken_ = false;  // the connection must not be reused
  std::error_code protocol_error_;
  std::error_code server_protocol_error_;
  std::optional<asio::steady_timer> server_pump_done_;
};

}  // namespace pgstash::proxy
