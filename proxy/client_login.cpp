// The first two stages of a client session: startup negotiation (TLS,
// protocol version, cancel requests) and authentication against the auth
// file.
#include <spdlog/spdlog.h>

#include "proxy/client_session.hpp"
#include "proxy/listener.hpp"
#include "proxy/peer_cancel.hpp"
#include "proxy/proxy_context.hpp"
#include "wire/auth.hpp"
#include "wire/errc.hpp"
#include "wire/message_writer.hpp"
#include "wire/random.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

awaitable<bool> client_session::negotiate_startup(wire::startup_message& startup,
                                                  std::string& packet) {
  const std::uint32_t max = cfg_->limits.max_message_size;
  for (;;) {
    error_code ec;
    wire::decoded_frame f = co_await client_.read_frame(wire::phase::startup, max, ec);
    if (ec) co_return false;
    // As PostgreSQL: a packet that cannot be read (bad length, garbage, a
    // regular message where the startup packet belongs) is only logged, and
    // the connection closed without a word; the client may not even speak
    // the protocol.
    if (f.status == wire::decode_status::error) {
      spdlog::info("{} invalid startup packet: {}", prefix(), f.error.message());
      co_return false;
    }
    wire::startup_packet parsed;
    if (auto perr = wire::parse_startup_packet(f.body, parsed)) {
      if (perr == wire::errc::missing_user) {
        co_await fail("28000", "no PostgreSQL user name specified in startup packet");
      } else if (perr == wire::errc::unknown_startup_code) {
        const std::uint32_t code = wire::startup_code(f.body);
        const std::string message = "unsupported frontend protocol " + std::to_string(code >> 16) + "." +
                                    std::to_string(code & 0xffff) + ": server supports 3.0 to 3.0";
        if ((code >> 16) < 3) {
          // In the format the client asked for, as PostgreSQL answers.
          spdlog::info("{} closing: {}", prefix(), message);
          std::string out;
          wire::write_protocol2_error(out, "FATAL:  " + message + "\n");
          co_await write_to_client(out);
          client_.close();
        } else {
          co_await fail("0A000", message);
        }
      } else if (wire::is_special_request_code(wire::startup_code(f.body))) {
        spdlog::info("{} invalid length of startup packet", prefix());
      } else {
        co_await fail("08P01", "invalid startup packet layout: expected terminator as last byte");
      }
      co_return false;
    }
    if (std::holds_alternative<wire::ssl_request>(parsed)) {
      // Never on the unix socket, as PostgreSQL and PgBouncer: it is local.
      const bool offer = ctx_.client_tls && !client_.is_tls() && !client_.is_unix_socket();
      // A client that sent bytes after SSLRequest before our answer could
      // have them read as plaintext after the handshake: refuse it.
      if (offer && !client_.buffered().empty()) {
        co_await fail("08P01", "received unencrypted data after SSL request");
        co_return false;
      }
      co_await client_.write(offer ? "S" : "N", ec);
      if (ec) co_return false;
      if (offer) {
        try {
          co_await client_.accept_tls(*ctx_.client_tls);
        } catch (const std::exception& e) {
          spdlog::info("{} TLS handshake failed: {}", prefix(), e.what());
          co_return false;
        }
      }
      continue;
    }
    if (std::holds_alternative<wire::gssenc_request>(parsed)) {
      co_await client_.write("N", ec);
      if (ec) co_return false;
      continue;
    }
    if (auto* cancel = std::get_if<wire::cancel_request>(&parsed)) {
      if (auto target = ctx_.find_cancel_key({cancel->process_id, cancel->secret_key}))
        target->cancel_server_query();
      else
        co_await forward_cancel(*cancel);
      client_.close();
      co_return false;
    }
    // Copy the packet so the parsed views outlive the read buffer.
    packet.assign(f.body);
    wire::startup_packet reparsed;
    wire::parse_startup_packet(packet, reparsed);
    startup = std::get<wire::startup_message>(std::move(reparsed));
    if (auto value = startup.get("replication")) {
      auto mode = wire::parse_replication(*value);
      if (!mode) {
        co_await fail("22023", "invalid value for parameter \"replication\": \"" + std::string(*value) + "\"");
        co_return false;
      }
      replication_ = *mode != wire::replication_mode::none;
    }
    user_ = std::string(*startup.get("user"));
    database_ = std::string(startup.get("database").value_or(user_));
    if (database_.empty()) database_ = user_;
    std::vector<std::string_view> unknown_options;
    for (auto [name, value] : startup.parameters)
      if (name.starts_with("_pq_.")) unknown_options.push_back(name);
    if ((startup.protocol & 0xffff) != 0 || !unknown_options.empty()) {
      std::string out;
      wire::write_negotiate_protocol_version(out, wire::k_protocol_3_0, unknown_options);
      co_await client_.write(out, ec);
      if (ec) co_return false;
    }
    co_return true;
  }
}

awaitable<std::optional<std::string>> client_session::ask_for_password(std::string_view request) {
  error_code ec;
  co_await client_.write(request, ec);
  if (ec) co_return std::nullopt;
  wire::decoded_frame f =
      co_await client_.read_frame(wire::phase::normal, cfg_->limits.max_message_size, ec);
  if (ec) co_return std::nullopt;
  if (f.status == wire::decode_status::error ||
      f.header.tag != static_cast<char>(wire::frontend_tag::password_message)) {
    co_await fail("08P01", "expected a password message during authentication");
    co_return std::nullopt;
  }
  co_return std::string(f.body);
}

awaitable<void> client_session::forward_cancel(const wire::cancel_request& cancel) {
  const auto cfg = ctx_.cfg.get();
  const std::uint32_t peer = peer_of_cancel_secret(cancel.secret_key);
  if (cfg->process.peer_id == 0 || peer == cfg->process.peer_id) co_return;
  const auto it = cfg->peers.find(peer);
  if (it == cfg->peers.end()) co_return;
  const conf::peer_address& to = it->second;
  const std::chrono::milliseconds timeout(cfg->server.connect_timeout_ms);
  spdlog::debug("{} cancel request forwarded to peer {}", prefix(), peer);
  // A directory is where the peer's unix socket is, as in libpq's host.
  if (to.host.starts_with('/')) {
    co_await pool::send_cancel(
        asio::local::stream_protocol::endpoint(unix_socket_path(to.host, to.port)),
        cancel.process_id, cancel.secret_key, timeout);
    co_return;
  }
  tcp::resolver resolver(co_await asio::this_coro::executor);
  error_code ec;
  const auto found =
      co_await resolver.async_resolve(to.host, std::to_string(to.port), on_error(ec));
  if (ec || found.empty()) {
    spdlog::warn("{} cannot forward a cancel request to peer {} ({}:{}): {}", prefix(), peer,
                 to.host, to.port, ec ? ec.message() : "no address");
    co_return;
  }
  co_await pool::send_cancel(found.begin()->endpoint(), cancel.process_id, cancel.secret_key,
                             timeout);
}

awaitable<bool> client_session::authenticate(pool::server_credentials& credentials,
                                             conf::auth_method method) {
  const auto config = ctx_.cfg.get();
  const auto users = ctx_.users.get();
  std::optional<std::string> secret;
  if (auto entry = users->find(user_); entry != users->end()) secret = entry->second;
  // The console's users are pgstash's own: only the auth file knows them.
  const auto database = server_database(*config);
  const bool look_up = !secret && method != conf::auth_method::trust &&
                       !config->auth.user.empty() && !wants_console() && database;
  if (look_up) {
    // Within the login's own bound (its deadline only closes the client).
    const std::chrono::milliseconds timeout(config->limits.client_login_timeout_ms);
    auto found =
        co_await ctx_.auth_query.look_up(*config, *users, ctx_.pool, *database, user_, timeout);
    if (!found.refusal.empty()) {
      log_client_event(spdlog::level::info, "error", {{"message", "auth.query failed"}});
      co_await write_to_client(found.refusal);
      client_.close();
      co_return false;
    }
    secret = std::move(found.secret);
  }
  const bool proven = co_await check_secret(credentials, method, secret);
  if (!proven && look_up && secret) ctx_.auth_query.forget(*config, *database, user_);
  co_return proven;
}

awaitable<bool> client_session::check_secret(pool::server_credentials& credentials,
                                             conf::auth_method method,
                                             const std::optional<std::string>& secret) {
  const std::string failed = "password authentication failed for user \"" + user_ + "\"";
  const bool secret_is_scram = secret && conf::kind_of_secret(*secret) == conf::secret_kind::scram;
  const bool secret_is_md5 = secret && conf::kind_of_secret(*secret) == conf::secret_kind::md5;
  // What pgstash can later prove to the server for this user.
  if (secret) credentials = pool::credentials_from_secret(*secret);

  if (method == conf::auth_method::trust) co_return true;

  // md5 against a SCRAM verifier falls back to SCRAM, as PostgreSQL does.
  // As PostgreSQL too, a user with no secret (or an md5 hash, which cannot
  // answer SCRAM) goes through a whole SCRAM exchange, against a stand-in
  // that never matches, with the salt the user's name always gets: the
  // client cannot tell which users exist.
  if (method == conf::auth_method::md5 && secret && !secret_is_scram) {
    const std::string salt = wire::random_bytes(4);
    std::string out;
    wire::write_authentication_md5(out, salt);
    auto body = co_await ask_for_password(out);
    if (!body) co_return false;
    wire::password_message pw;
    if (wire::parse_password_message(*body, pw) ||
        pw.password != wire::md5_salted_response(user_, *secret, salt)) {
      co_await fail("28P01", failed);
      co_return false;
    }
    co_return true;
  }

  const bool stand_in = !secret || secret_is_md5;
  static const std::string salt_key = wire::random_bytes(32);
  const std::string salt = wire::stable_salt(salt_key, user_);
  std::optional<wire::scram_secret> verifier = secret_is_scram ? wire::parse_scram_secret(*secret)
                                               : stand_in
                                                   ? wire::stand_in_scram_secret(salt)
                                                   : wire::make_scram_secret(*secret, salt, 4096);
  if (!verifier) {
    spdlog::warn("{} auth file holds an invalid SCRAM secret for this user", prefix());
    co_await fail("28P01", failed);
    co_return false;
  }
  wire::scram_server exchange(*verifier, wire::random_nonce());
  std::string out;
  wire::write_authentication_sasl(out, {"SCRAM-SHA-256"});
  auto body = co_await ask_for_password(out);
  if (!body) co_return false;
  wire::sasl_initial_response initial;
  if (wire::parse_sasl_initial_response(*body, initial) || initial.mechanism != "SCRAM-SHA-256" ||
      !initial.data) {
    co_await fail("08P01", "client selected an invalid SASL authentication mechanism");
    co_return false;
  }
  auto server_first = exchange.handle_client_first(*initial.data);
  if (!server_first) {
    co_await fail("08P01", "malformed SCRAM message");
    co_return false;
  }
  out.clear();
  wire::write_authentication_sasl_continue(out, *server_first);
  body = co_await ask_for_password(out);
  if (!body) co_return false;
  wire::sasl_response response;
  wire::parse_sasl_response(*body, response);
  auto server_final = exchange.handle_client_final(response.data);
  if (!server_final || stand_in) {
    co_await fail("28P01", failed);
    co_return false;
  }
  if (secret_is_scram) credentials.scram_keys = std::make_pair(exchange.client_key(), verifier->server_key);
  out.clear();
  wire::write_authentication_sasl_final(out, *server_final);
  error_code ec;
  co_await client_.write(out, ec);
  co_return !ec;
}

}  // namespace pgstash::proxy
