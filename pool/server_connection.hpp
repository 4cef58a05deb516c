// One authenticated connection to PostgreSQL, established the way libpq
// would: TLS per the configured mode, a StartupMessage carrying the
// client's parameters, then whatever authentication the server asks for
// (SCRAM-SHA-256, md5 or cleartext).
//
// Owned by exactly one place at a time: the pool's idle list or the client
// session that leased it. Belongs to the executor it was created on.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "conf/config.hpp"
#include "net/asio.hpp"
#include "net/pg_stream.hpp"
#include "pool/server_state.hpp"
#include "wire/auth.hpp"
#include "wire/backend.hpp"

namespace pgstash::pool {

// What pgstash can prove to the server on the client's behalf.
struct server_credentials {
  std::optional<std::string> password;  // cleartext: any method
  std::optional<std::string> md5_hash;  // "md5..." as in pg_authid: md5 only
  // From the client's own SCRAM exchange against the same verifier.
  std::optional<std::pair<wire::scram_key, wire::scram_key>> scram_keys;  // ClientKey, ServerKey
};

// What an auth file (or auth.query) secret lets pgstash prove by itself: a
// cleartext password or an md5 hash. A SCRAM verifier proves nothing
// without the client's own exchange (scram_keys), so it gives nothing.
server_credentials credentials_from_secret(const std::string& secret);

// Server connections are pooled per (database, user).
struct pool_key {
  std::string database;
  std::string user;
  auto operator<=>(const pool_key&) const = default;
};

struct connect_request {
  std::string database;  // the server-side name
  std::string user;
  // Every other startup parameter the client sent, in order.
  std::vector<std::pair<std::string, std::string>> parameters;
  server_credentials credentials;

  // Connections whose startup packets would be identical are
  // interchangeable: same database, user and parameters.
  std::string signature() const;
  pool_key key() const { return {database, user}; }
  // signature(), computed once by whoever fills in the request (the pool
  // computes it if empty).
  std::string cached_signature;
};

// A failure to get a server connection, carrying the ErrorResponse the
// client should see: the server's own (wrong password, unknown database)
// or one pgstash made (unreachable server, pool timeout).
class server_error : public std::runtime_error {
 public:
  server_error(std::string message, std::string error_response)
      : std::runtime_error(std::move(message)), error_response_(std::move(error_response)) {}
  // A complete 'E' message, ready to forward.
  const std::string& error_response() const { return error_response_; }

 private:
  std::string error_response_;
};

// Builds a server_error from pgstash's side: FATAL with `sqlstate`.
server_error make_server_error(std::string_view sqlstate, std::string message);

// ParameterStatus values by name. Shared as immutable snapshots: every
// client told a server's values points at the same one.
using parameter_map = std::map<std::string, std::string, std::less<>>;

struct server_limits {
  std::size_t buffer_size = 65536;
  std::uint32_t max_message_size = 1u << 30;
  std::size_t max_prepared_statements = 200;
};

class server_connection {
 public:
  // Connects and authenticates within server.connect_timeout_ms. Throws
  // server_error.
  static awaitable<std::unique_ptr<server_connection>> connect(
      const conf::server_section& server, asio::ssl::context& tls, const connect_request& request,
      server_limits limits, std::uint64_t id);

  net::pg_stream& stream() { return stream_; }
  std::uint64_t id() const { return id_; }
  const std::string& signature() const { return signature_; }
  const pool_key& key() const { return key_; }
  std::uint32_t process_id() const { return process_id_; }
  std::uint32_t secret_key() const { return secret_key_; }
  // The server's current ParameterStatus values; the relay keeps them up
  // to date so a later client can be told them. A change makes a new
  // snapshot; earlier ones stay as they were.
  const std::shared_ptr<const parameter_map>& parameters() const { return parameters_; }
  // Keeps parameters() current with a ParameterStatus body from the server;
  // returns what it said, or nullopt if it is malformed.
  std::optional<wire::parameter_status> note_parameter_status(std::string_view body);
  std::chrono::steady_clock::time_point created_at() const { return created_at_; }
  // Where to send a CancelRequest for this connection.
  const tcp::endpoint& endpoint() const { return endpoint_; }
  // Session state left by earlier clients (transaction mode).
  server_state& state() { return state_; }
  // When it last went idle in the pool.
  std::chrono::steady_clock::time_point idle_since;

  // Runs `sql` as a simple query and reads through ReadyForQuery, keeping
  // parameters() current. Returns the first error's message, or nullopt.
  // If `first_value` is given, it is set to the first column of the first
  // row (nullopt for none or NULL). Throws server_error if the connection
  // fails or the server ends up anywhere but idle.
  awaitable<std::optional<std::string>> run_internal(std::string_view sql,
                                                     std::optional<std::string>* first_value = nullptr);
  // The same through the extended protocol, with `parameters` as $1, $2...
  // (text): for values that must never be spliced into SQL. `first_row` is
  // set to the first row's values (NULL = nullopt), left empty for none.
  awaitable<std::optional<std::string>> run_internal(
      std::string_view sql, const std::vector<std::optional<std::string_view>>& parameters,
      std::vector<std::optional<std::string>>& first_row);

 private:
  server_connection(stream_socket socket, const server_limits& limits, std::uint64_t id);
  awaitable<void> negotiate_tls(const conf::server_section& server, asio::ssl::context& tls);
  awaitable<void> authenticate(const connect_request& request, std::uint32_t max_message_size);
  // Sends `request` and reads through ReadyForQuery (run_internal).
  awaitable<std::optional<std::string>> exchange_internal(
      std::string_view request, std::vector<std::optional<std::string>>* first_row);

  net::pg_stream stream_;
  std::uint64_t id_;
  std::string signature_;
  pool_key key_;
  std::uint32_t max_message_size_;
  server_state state_;
  std::uint32_t process_id_ = 0;
  std::uint32_t secret_key_ = 0;
  std::shared_ptr<const parameter_map> parameters_ = std::make_shared<const parameter_map>();
  std::chrono::steady_clock::time_point created_at_;
  tcp::endpoint endpoint_;
};

// Asks the server to cancel whatever the backend (process_id, secret_key)
// is running, and returns once the server has delivered it (it closes the
// connection after signalling the backend) or `timeout` has passed. Best
// effort, as in PostgreSQL: errors are ignored.
// `endpoint`: TCP or a unix socket.
awaitable<void> send_cancel(asio::generic::stream_protocol::endpoint endpoint,
                            std::uint32_t process_id, std::uint32_t secret_key,
                            std::chrono::milliseconds timeout);

}  // namespace pgstash::pool
