#include "pool/server_connection.hpp"

#include "conf/userlist.hpp"
#include "net/deadline.hpp"
#include "wire/backend.hpp"
#include "wire/frontend.hpp"
#include "wire/message_writer.hpp"
#include "wire/random.hpp"
#include "wire/tags.hpp"

namespace pgstash::pool {

namespace {

std::string error_response(std::string_view sqlstate, std::string_view message) {
  std::string out;
  wire::write_error(out, "FATAL", sqlstate, message);
  return out;
}

// The frame as it came off the wire, so a server error reaches the client
// byte for byte.
std::string raw_frame(const wire::decoded_frame& f) {
  std::string out;
  wire::write_frame(out, f.header.tag, f.body);
  return out;
}

}  // namespace

server_credentials credentials_from_secret(const std::string& secret) {
  server_credentials credentials;
  switch (conf::kind_of_secret(secret)) {
    case conf::secret_kind::cleartext:
      credentials.password = secret;
      break;
    case conf::secret_kind::md5:
      credentials.md5_hash = secret;
      break;
    case conf::secret_kind::scram:
      break;
  }
  return credentials;
}

server_error make_server_error(std::string_view sqlstate, std::string message) {
  std::string bytes = error_response(sqlstate, message);
  return server_error(std::move(message), std::move(bytes));
}

std::string connect_request::signature() const {
  std::string s = database + '\0' + user + '\0';
  for (const auto& [k, v] : parameters) s += k + '=' + v + '\0';
  return s;
}


server_connection::server_connection(stream_socket socket, const server_limits& limits,
                                     std::uint64_t id)
    : idle_since(std::chrono::steady_clock::now()),
      stream_(std::move(socket), limits.buffer_size, limits.buffer_size),
      id_(id),
      max_message_size_(limits.max_message_size),
      state_(limits.max_prepared_statements),
      created_at_(std::chrono::steady_clock::now()) {}

awaitable<std::unique_ptr<server_connection>> server_connection::connect(
    const conf::server_section& server, asio::ssl::context& tls, const connect_request& request,
    server_limits limits, std::uint64_t id) {
  auto ex = co_await asio::this_coro::executor;
  std::unique_ptr<server_connection> conn(new server_connection(stream_socket(ex), limits, id));
  conn->signature_ = request.signature();
  conn->key_ = request.key();
  const std::string where = server.host + ":" + std::to_string(server.port);

  // One deadline covers resolving, connecting, TLS and authentication.
  net::deadline timeout(ex, std::chrono::milliseconds(server.connect_timeout_ms),
                   [&conn] { conn->stream_.close(); });
  try {
    tcp::resolver resolver(ex);
    error_code ec;
    auto endpoints =
        co_await resolver.async_resolve(server.host, std::to_string(server.port), on_error(ec));
    if (ec) throw make_server_error("08006", "could not resolve " + server.host + ": " + ec.message());
    for (const auto& e : endpoints) {
      ec = {};
      error_code ignored;
      conn->stream_.socket().close(ignored);
      co_await conn->stream_.socket().async_connect(e.endpoint(), on_error(ec));
      if (!ec) {
        conn->endpoint_ = e.endpoint();
        break;
      }
    }
    if (timeout.expired()) throw make_server_error("08006", "timeout connecting to server " + where);
    if (ec) throw make_server_error("08006", "could not connect to server " + where + ": " + ec.message());
    conn->stream_.socket().set_option(tcp::no_delay(true));
    co_await conn->negotiate_tls(server, tls);
    co_await conn->authenticate(request, limits.max_message_size);
  } catch (const server_error&) {
    if (timeout.expired()) throw make_server_error("08006", "timeout connecting to server " + where);
    throw;
  } catch (const std::exception& e) {
    if (timeout.expired()) throw make_server_error("08006", "timeout connecting to server " + where);
    throw make_server_error("08006", "could not connect to server " + where + ": " + e.what());
  }
  co_return conn;
}

awaitable<void> server_connection::negotiate_tls(const conf::server_section& server,
                                                 asio::ssl::context& tls) {
  if (server.tls == conf::server_tls::disable) co_return;
  std::string request;
  wire::write_ssl_request(request);
  error_code ec;
  co_await stream_.write(request, ec);
  if (ec) throw make_server_error("08006", "could not send SSLRequest: " + ec.message());
  char answer = 0;
  co_await asio::async_read(stream_.socket(), asio::buffer(&answer, 1), on_error(ec));
  if (ec) throw make_server_error("08006", "server closed the connection during SSL negotiation");
  if (answer == 'S') {
    std::string verify_host =
        server.tls == conf::server_tls::verify_full ? server.host : std::string();
    co_await stream_.connect_tls(tls, verify_host);
    co_return;
  }
  if (answer != 'N') throw make_server_error("08P01", "server sent an invalid answer to SSLRequest");
  if (server.tls == conf::server_tls::require || server.tls == conf::server_tls::verify_full)
    throw make_server_error("08006", "server does not support SSL, but server.tls requires it");
}

awaitable<void> server_connection::authenticate(const connect_request& request,
                                                std::uint32_t max_message_size) {
  std::vector<std::pair<std::string, std::string>> startup{{"user", request.user},
                                                           {"database", request.database}};
  for (const auto& p : request.parameters) startup.push_back(p);
  std::string out;
  wire::write_startup_message(out, startup);
  error_code ec;
  co_await stream_.write(out, ec);
  if (ec) throw make_server_error("08006", "could not send startup packet: " + ec.message());

  const auto& creds = request.credentials;
  std::optional<wire::scram_client> scram;
  for (;;) {
    wire::decoded_frame f = co_await stream_.read_frame(wire::phase::normal, max_message_size, ec);
    if (ec) throw make_server_error("08006", "server closed the connection during startup");
    if (f.status == wire::decode_status::error)
      throw make_server_error("08P01", "invalid message from server: " + f.error.message());
    switch (static_cast<wire::backend_tag>(f.header.tag)) {
      case wire::backend_tag::error_response:
        throw server_error("server refused the connection", raw_frame(f));
      case wire::backend_tag::authentication_request: {
        wire::authentication_request auth;
        if (wire::parse_authentication(f.body, auth))
          throw make_server_error("08P01", "invalid authentication request from server");
        out.clear();
        const std::string no_secret = "pgstash has no usable secret for user \"" + request.user +
                                      "\" to answer the server's authentication request";
        switch (auth.code) {
          case wire::auth_code::ok:
            continue;
          case wire::auth_code::cleartext_password:
            if (!creds.password) throw make_server_error("28P01", no_secret);
            wire::write_password_message(out, *creds.password);
            break;
          case wire::auth_code::md5_password: {
            const std::optional<std::string>& stored = creds.password ? creds.password : creds.md5_hash;
            if (!stored) throw make_server_error("28P01", no_secret);
            wire::write_password_message(
                out, wire::md5_salted_response(request.user, *stored, auth.md5_salt));
            break;
          }
          case wire::auth_code::sasl: {
            bool offered = false;
            for (auto m : auth.mechanisms) offered |= m == "SCRAM-SHA-256";
            if (!offered)
              throw make_server_error("08P01", "server offers no SASL mechanism pgstash supports");
            if (creds.password) {
              scram.emplace(*creds.password, wire::random_nonce());
            } else if (creds.scram_keys) {
              scram.emplace(creds.scram_keys->first, creds.scram_keys->second, wire::random_nonce());
            } else {
              throw make_server_error("28P01", no_secret);
            }
            wire::write_sasl_initial_response(out, "SCRAM-SHA-256", scram->client_first());
            break;
          }
          case wire::auth_code::sasl_continue: {
            auto final_message = scram ? scram->handle_server_first(auth.data) : std::nullopt;
            if (!final_message) throw make_server_error("08P01", "invalid SCRAM exchange with server");
            wire::write_sasl_response(out, *final_message);
            break;
          }
          case wire::auth_code::sasl_final:
            if (!scram || !scram->verify_server_final(auth.data))
              throw make_server_error("28000", "server's SCRAM signature is invalid");
            continue;
          default:
            throw make_server_error("28000", "server asks for an authentication method pgstash does not support");
        }
        co_await stream_.write(out, ec);
        if (ec) throw make_server_error("08006", "server closed the connection during authentication");
        break;
      }
      case wire::backend_tag::parameter_status: {
        note_parameter_status(f.body);
        break;
      }
      case wire::backend_tag::backend_key_data: {
        wire::backend_key_data key;
        if (!wire::parse_backend_key_data(f.body, key)) {
          process_id_ = key.process_id;
          secret_key_ = key.secret_key;
        }
        break;
      }
      case wire::backend_tag::ready_for_query:
        co_return;
      default:
        // NoticeResponse and NegotiateProtocolVersion need no answer.
        break;
    }
  }
}

std::optional<wire::parameter_status> server_connection::note_parameter_status(
    std::string_view body) {
  wire::parameter_status ps;
  if (wire::parse_parameter_status(body, ps)) return std::nullopt;
  auto known = parameters_->find(ps.name);
  if (known != parameters_->end() && known->second == ps.value) return ps;
  auto changed = std::make_shared<parameter_map>(*parameters_);
  changed->insert_or_assign(std::string(ps.name), std::string(ps.value));
  parameters_ = std::move(changed);
  return ps;
}

awaitable<std::optional<std::string>> server_connection::run_internal(
    std::string_view sql, std::optional<std::string>* first_value) {
  std::string out;
  wire::write_query(out, sql);
  std::vector<std::optional<std::string>> first_row;
  auto error = co_await exchange_internal(out, first_value ? &first_row : nullptr);
  if (first_value && !first_row.empty()) *first_value = std::move(first_row[0]);
  co_return error;
}

awaitable<std::optional<std::string>> server_connection::run_internal(
    std::string_view sql, const std::vector<std::optional<std::string_view>>& parameters,
    std::vector<std::optional<std::string>>& first_row) {
  std::string out;
  wire::write_parse(out, "", sql);
  wire::write_bind(out, "", "", parameters);
  wire::write_execute(out, "");
  wire::write_sync(out);
  co_return co_await exchange_internal(out, &first_row);
}

awaitable<std::optional<std::string>> server_connection::exchange_internal(
    std::string_view request, std::vector<std::optional<std::string>>* first_row) {
  error_code ec;
  co_await stream_.write(request, ec);
  if (ec) throw make_server_error("08006", "server connection lost: " + ec.message());
  std::optional<std::string> first_error;
  bool row_seen = false;
  for (;;) {
    wire::decoded_frame f = co_await stream_.read_frame(wire::phase::normal, max_message_size_, ec);
    if (ec) throw make_server_error("08006", "server connection lost: " + ec.message());
    if (f.status == wire::decode_status::error)
      throw make_server_error("08P01", "invalid message from server: " + f.error.message());
    switch (static_cast<wire::backend_tag>(f.header.tag)) {
      case wire::backend_tag::error_response: {
        wire::error_fields fields;
        if (!first_error) {
          first_error = wire::parse_error_fields(f.body, fields)
                            ? std::string("malformed error")
                            : std::string(fields.get('M').value_or("?"));
        }
        break;
      }
      case wire::backend_tag::data_row: {
        wire::data_row row;
        if (first_row && !row_seen && !wire::parse_data_row(f.body, row)) {
          for (const auto& value : row.values)
            first_row->push_back(value ? std::optional<std::string>(*value) : std::nullopt);
        }
        row_seen = true;
        break;
      }
      case wire::backend_tag::parameter_status: {
        note_parameter_status(f.body);
        break;
      }
      case wire::backend_tag::ready_for_query: {
        wire::ready_for_query rfq;
        if (wire::parse_ready_for_query(f.body, rfq) || rfq.status != 'I')
          throw make_server_error("08P01", "server not idle after an internal query");
        co_return first_error;
      }
      default:
        break;
    }
  }
}

awaitable<void> send_cancel(asio::generic::stream_protocol::endpoint endpoint,
                            std::uint32_t process_id, std::uint32_t secret_key,
                            std::chrono::milliseconds timeout) {
  stream_socket socket(co_await asio::this_coro::executor);
  net::deadline give_up(socket.get_executor(), timeout, [&socket] {
    error_code ignored;
    socket.close(ignored);
  });
  error_code ec;
  co_await socket.async_connect(endpoint, on_error(ec));
  if (ec) co_return;
  std::string packet;
  wire::write_cancel_request(packet, process_id, secret_key);
  co_await asio::async_write(socket, asio::buffer(packet), on_error(ec));
  // The server closes the connection once it has read the request; waiting
  // for that keeps the cancel from racing the next query.
  char sink;
  co_await socket.async_read_some(asio::buffer(&sink, 1), on_error(ec));
}

}  // namespace pgstash::pool
