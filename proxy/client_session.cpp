#include "proxy/client_session.hpp"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "pool/deadline.hpp"
#include "proxy/proxy_context.hpp"
#include "wire/auth.hpp"
#include "wire/backend.hpp"
#include "wire/errc.hpp"
#include "wire/message_writer.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

namespace {

using wire::backend_tag;
using wire::frontend_tag;

bool is_tag(char c, frontend_tag t) { return c == static_cast<char>(t); }
bool is_tag(char c, backend_tag t) { return c == static_cast<char>(t); }

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return out;
}

}  // namespace

client_session::client_session(proxy_context& ctx, tcp::socket socket)
    : ctx_(ctx), id_(ctx.next_client_id++), client_(std::move(socket), ctx.cfg.limits.io_buffer_size) {
  error_code ec;
  auto ep = client_.socket().remote_endpoint(ec);
  peer_ = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
  client_.socket().set_option(tcp::no_delay(true), ec);
}

void client_session::start() {
  auto self = shared_from_this();
  asio::co_spawn(client_.socket().get_executor(), [self] { return self->run(self); },
                 [self](std::exception_ptr e) {
                   if (!e) return;
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& ex) {
                     spdlog::error("{} session failed: {}", self->prefix(), ex.what());
                   }
                 });
}

std::string client_session::prefix() const {
  return "c:" + std::to_string(id_) + " " + (database_.empty() ? "?" : database_) + "/" +
         (user_.empty() ? "?" : user_) + "@" + peer_;
}

awaitable<void> client_session::fail(std::string_view sqlstate, std::string_view message) {
  spdlog::info("{} closing: {} {}", prefix(), sqlstate, message);
  std::string out;
  wire::write_error(out,
                    {{'S', "FATAL"},
                     {'V', "FATAL"},
                     {'C', std::string(sqlstate)},
                     {'M', std::string(message)},
                     {'D', "pgstash session c:" + std::to_string(id_)}});
  error_code ec;
  co_await client_.write(out, ec);
  client_.close();
}

awaitable<void> client_session::run(std::shared_ptr<client_session> self) {
  ++ctx_.clients;
  struct client_count_guard {
    proxy_context& ctx;
    ~client_count_guard() { --ctx.clients; }
  } guard{ctx_};

  wire::startup_message startup;
  std::string startup_packet;  // keeps the views in `startup` alive
  pool::server_credentials credentials;
  {
    pool::deadline login_timeout(client_.socket().get_executor(),
                                 std::chrono::milliseconds(ctx_.cfg.limits.client_login_timeout_ms),
                                 [this] { client_.close(); });
    if (!co_await negotiate_startup(startup, startup_packet)) co_return;
    if (ctx_.clients > ctx_.cfg.listen.max_client_conn) {
      co_await fail("53300", "sorry, too many clients already");
      co_return;
    }
    if (!co_await authenticate(credentials)) co_return;
  }
  {
    pool::connect_request request;
    request.user = user_;
    request.database = database_;
    if (!ctx_.cfg.databases.empty()) {
      auto it = ctx_.cfg.databases.find(database_);
      if (it == ctx_.cfg.databases.end()) {
        co_await fail("3D000", "database \"" + database_ + "\" does not exist");
        co_return;
      }
      request.database = it->second;
    }
    for (auto [name, value] : startup.parameters) {
      if (name == "user" || name == "database" || name.starts_with("_pq_.")) continue;
      request.parameters.emplace_back(name, value);
    }
    request.credentials = std::move(credentials);
    pool_key_ = {request.database, request.user};
    std::string refusal;
    try {
      server_ = co_await ctx_.pool.acquire(request);
    } catch (const pool::server_error& e) {
      spdlog::info("{} no server connection: {}", prefix(), e.what());
      refusal = e.error_response();
    }
    if (!server_) {
      error_code ec;
      co_await client_.write(refusal, ec);
      client_.close();
      co_return;
    }
  }

  // Tell the client what a server would: parameters, its cancel key, ready.
  std::uint32_t secret = pool::random_uint32();
  cancel_key_ = std::make_pair(server_->process_id(), secret);
  ctx_.cancel_keys[*cancel_key_] = self;
  std::string hello;
  wire::write_authentication_ok(hello);
  for (const auto& [name, value] : server_->parameters()) wire::write_parameter_status(hello, name, value);
  wire::write_backend_key_data(hello, server_->process_id(), secret);
  wire::write_ready_for_query(hello, 'I');
  error_code ec;
  co_await client_.write(hello, ec);
  spdlog::debug("{} logged in on s:{}", prefix(), server_->id());
  if (!ec) {
    co_await relay_session(self);
  } else {
    clean_ = true;  // nothing was sent to the server: it is still reset
  }
  ctx_.cancel_keys.erase(*cancel_key_);
  ctx_.pool.release(std::move(server_), pool_key_, clean_ && !broken_);
  spdlog::debug("{} closed", prefix());
}

awaitable<bool> client_session::negotiate_startup(wire::startup_message& startup,
                                                  std::string& packet) {
  const std::uint32_t max = ctx_.cfg.limits.max_message_size;
  for (;;) {
    error_code ec;
    wire::decoded_frame f = co_await client_.read_frame(wire::phase::startup, max, ec);
    if (ec) co_return false;
    if (f.status == wire::decode_status::error) {
      co_await fail("08P01", "invalid startup packet: " + f.error.message());
      co_return false;
    }
    wire::startup_packet parsed;
    if (auto perr = wire::parse_startup_packet(f.body, parsed)) {
      if (perr == wire::errc::missing_user) {
        co_await fail("28000", "no PostgreSQL user name specified in startup packet");
      } else if (perr == wire::errc::unknown_startup_code) {
        co_await fail("0A000", "unsupported frontend protocol or request code");
      } else {
        co_await fail("08P01", "invalid startup packet: " + perr.message());
      }
      co_return false;
    }
    if (std::holds_alternative<wire::ssl_request>(parsed)) {
      const bool offer = ctx_.client_tls && !client_.is_tls();
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
      auto it = ctx_.cancel_keys.find({cancel->process_id, cancel->secret_key});
      if (it != ctx_.cancel_keys.end()) {
        if (auto target = it->second.lock()) target->cancel_server_query();
      }
      client_.close();
      co_return false;
    }
    // Copy the packet so the parsed views outlive the read buffer.
    packet.assign(f.body);
    wire::startup_packet reparsed;
    wire::parse_startup_packet(packet, reparsed);
    startup = std::get<wire::startup_message>(std::move(reparsed));
    user_ = std::string(*startup.get("user"));
    database_ = std::string(startup.get("database").value_or(user_));
    if (database_.empty()) database_ = user_;
    if ((startup.protocol >> 16) != 3) {
      co_await fail("0A000", "unsupported frontend protocol " + std::to_string(startup.protocol >> 16) + "." +
                                 std::to_string(startup.protocol & 0xffff));
      co_return false;
    }
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

awaitable<std::optional<std::string>> client_session::read_password_frame() {
  error_code ec;
  wire::decoded_frame f =
      co_await client_.read_frame(wire::phase::normal, ctx_.cfg.limits.max_message_size, ec);
  if (ec) co_return std::nullopt;
  if (f.status == wire::decode_status::error || !is_tag(f.header.tag, frontend_tag::password_message)) {
    co_await fail("08P01", "expected a password message during authentication");
    co_return std::nullopt;
  }
  co_return std::string(f.body);
}

awaitable<bool> client_session::authenticate(pool::server_credentials& credentials) {
  const auto method = ctx_.cfg.auth.method;
  auto entry = ctx_.users.find(user_);
  const std::string failed = "password authentication failed for user \"" + user_ + "\"";
  std::optional<std::string> secret;
  if (entry != ctx_.users.end()) secret = entry->second;
  const bool secret_is_scram = secret && secret->starts_with("SCRAM-SHA-256$");
  const bool secret_is_md5 =
      secret && secret->size() == 35 && secret->starts_with("md5");
  // What pgstash can later prove to the server for this user.
  if (secret && !secret_is_scram) {
    if (secret_is_md5) {
      credentials.md5_hash = secret;
    } else {
      credentials.password = secret;
    }
  }

  if (method == conf::auth_method::trust) co_return true;
  if (!secret) {
    co_await fail("28P01", failed);
    co_return false;
  }

  // md5 against a SCRAM verifier falls back to SCRAM, as PostgreSQL does.
  if (method == conf::auth_method::md5 && !secret_is_scram) {
    const std::string salt = random_bytes(4);
    std::string out;
    wire::write_authentication_md5(out, salt);
    error_code ec;
    co_await client_.write(out, ec);
    if (ec) co_return false;
    auto body = co_await read_password_frame();
    if (!body) co_return false;
    wire::password_message pw;
    if (wire::parse_password_message(*body, pw) ||
        pw.password != wire::md5_salted_response(user_, *secret, salt)) {
      co_await fail("28P01", failed);
      co_return false;
    }
    co_return true;
  }

  if (secret_is_md5) {
    co_await fail("28P01", failed);
    co_return false;
  }
  std::optional<wire::scram_secret> verifier =
      secret_is_scram ? wire::parse_scram_secret(*secret)
                      : wire::make_scram_secret(*secret, random_bytes(16), 4096);
  if (!verifier) {
    spdlog::warn("{} auth file holds an invalid SCRAM secret for this user", prefix());
    co_await fail("28P01", failed);
    co_return false;
  }
  wire::scram_server exchange(*verifier, pool::random_nonce());
  std::string out;
  wire::write_authentication_sasl(out, {"SCRAM-SHA-256"});
  error_code ec;
  co_await client_.write(out, ec);
  if (ec) co_return false;

  auto body = co_await read_password_frame();
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
  co_await client_.write(out, ec);
  if (ec) co_return false;

  body = co_await read_password_frame();
  if (!body) co_return false;
  wire::sasl_response response;
  wire::parse_sasl_response(*body, response);
  auto server_final = exchange.handle_client_final(response.data);
  if (!server_final) {
    co_await fail("28P01", failed);
    co_return false;
  }
  if (secret_is_scram) credentials.scram_keys = std::make_pair(exchange.client_key(), verifier->server_key);
  out.clear();
  wire::write_authentication_sasl_final(out, *server_final);
  co_await client_.write(out, ec);
  co_return !ec;
}

void client_session::cancel_server_query() {
  if (!server_ || client_gone_) return;
  spdlog::debug("{} forwarding cancel request", prefix());
  asio::co_spawn(client_.socket().get_executor(),
                 pool::send_cancel(server_->endpoint(), server_->process_id(), server_->secret_key()),
                 asio::detached);
}

awaitable<void> client_session::relay_session(std::shared_ptr<client_session> self) {
  server_pump_done_.emplace(client_.socket().get_executor(), asio::steady_timer::time_point::max());
  asio::co_spawn(client_.socket().get_executor(), [self] { return self->server_pump(self); },
                 [self](std::exception_ptr e) {
                   if (e) {
                     self->broken_ = true;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       spdlog::error("{} server pump failed: {}", self->prefix(), ex.what());
                     }
                   }
                   self->server_done_ = true;
                   self->server_pump_done_->cancel();
                 });

  co_await relay(direction::to_server);
  if (protocol_error_) {
    co_await fail("08P01", "invalid message from client: " + protocol_error_.message());
  }
  client_gone_ = true;
  client_.close();

  std::optional<pool::deadline> give_up;
  if (!server_done_) {
    give_up.emplace(client_.socket().get_executor(),
                    std::chrono::milliseconds(ctx_.cfg.pool.cleanup_timeout_ms), [this] {
      spdlog::warn("{} server connection did not come back clean in time: closing it", prefix());
      broken_ = true;
      server_->stream().close();
    });
    co_await cleanup_step();
  }
  while (!server_done_) {
    error_code ec;
    co_await server_pump_done_->async_wait(on_error(ec));
  }
}

awaitable<void> client_session::server_pump(std::shared_ptr<client_session>) {
  co_await relay(direction::to_client);
  server_done_ = true;
  if (client_gone_) co_return;
  if (server_protocol_error_) {
    co_await fail("08P01", "invalid message from server: " + server_protocol_error_.message());
  } else {
    client_.close();
  }
}

awaitable<void> client_session::send_to_server(std::string_view bytes) {
  error_code ec;
  co_await server_->stream().write(bytes, ec);
  if (ec) {
    broken_ = true;
    server_->stream().close();
  }
}

awaitable<void> client_session::cleanup_step() {
  if (server_done_ || broken_) co_return;
  std::string out;
  if (copy_in_) {
    wire::message_writer w(out);
    w.begin(frontend_tag::copy_fail);
    w.put_cstr("client disconnected");
    w.finish();
    copy_in_ = false;
  }
  if (unsynced_) {
    wire::message_writer w(out);
    w.begin(frontend_tag::sync);
    w.finish();
    unsynced_ = false;
    ++pending_;
  }
  if (!out.empty()) co_await send_to_server(out);
  if (pending_ > 0) {
    if (!cancel_sent_) {
      cancel_sent_ = true;
      co_await pool::send_cancel(server_->endpoint(), server_->process_id(), server_->secret_key());
    }
    co_return;  // the next ReadyForQuery brings us back here
  }
  if (tx_status_ != 'I') {
    out.clear();
    wire::write_query(out, "ROLLBACK");
    ++pending_;
    co_await send_to_server(out);
    co_return;
  }
  if (!reset_sent_ && !ctx_.cfg.pool.reset_query.empty()) {
    reset_sent_ = true;
    out.clear();
    wire::write_query(out, ctx_.cfg.pool.reset_query);
    ++pending_;
    co_await send_to_server(out);
    co_return;
  }
  clean_ = true;
}

client_session::frame_action client_session::on_client_frame(char tag) {
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::query:
    case frontend_tag::function_call:
      ++pending_;
      break;
    case frontend_tag::sync:
      ++pending_;
      unsynced_ = false;
      break;
    case frontend_tag::parse:
    case frontend_tag::bind:
    case frontend_tag::describe:
    case frontend_tag::execute:
    case frontend_tag::close:
      unsynced_ = true;
      break;
    case frontend_tag::copy_done:
    case frontend_tag::copy_fail:
      copy_in_ = false;
      break;
    case frontend_tag::terminate:
      return frame_action::stop;
    default:
      break;
  }
  return frame_action::forward;
}

client_session::frame_action client_session::on_server_frame(char tag,
                                                             std::optional<std::string_view> body) {
  switch (static_cast<backend_tag>(tag)) {
    case backend_tag::ready_for_query: {
      wire::ready_for_query rfq;
      if (!body || wire::parse_ready_for_query(*body, rfq)) {
        broken_ = true;
        return frame_action::stop;
      }
      tx_status_ = rfq.status;
      copy_in_ = false;
      if (pending_ > 0) --pending_;
      if (client_gone_) cleanup_due_ = true;
      break;
    }
    case backend_tag::parameter_status: {
      wire::parameter_status ps;
      if (body && !wire::parse_parameter_status(*body, ps))
        server_->parameters()[std::string(ps.name)] = std::string(ps.value);
      break;
    }
    case backend_tag::copy_in_response:
      copy_in_ = true;
      break;
    case backend_tag::copy_both_response:
      broken_ = true;  // replication streams are never handed to another client
      break;
    case backend_tag::error_response:
      if (reset_sent_) broken_ = true;
      break;
    default:
      break;
  }
  return frame_action::forward;
}

awaitable<void> client_session::relay(direction dir) {
  const bool to_server = dir == direction::to_server;
  pool::pg_stream& from = to_server ? client_ : server_->stream();
  const std::uint32_t max = ctx_.cfg.limits.max_message_size;
  std::uint64_t streaming = 0;  // bytes of a frame being passed through without holding it

  for (;;) {
    std::string_view in = from.buffered();
    std::size_t pos = 0;
    std::size_t flushed = 0;
    bool stop = false;
    while (pos < in.size() && !stop) {
      if (streaming > 0) {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(streaming, in.size() - pos));
        pos += n;
        streaming -= n;
        continue;
      }
      wire::decoded_frame h = wire::decode_header(in.substr(pos), wire::phase::normal, max);
      if (h.status == wire::decode_status::need_more) break;
      if (h.status == wire::decode_status::error) {
        if (to_server) {
          protocol_error_ = h.error;
        } else {
          spdlog::warn("{} invalid message from server: {}", prefix(), h.error.message());
          broken_ = true;
          server_protocol_error_ = h.error;
        }
        stop = true;
        break;
      }
      const char tag = h.header.tag;
      const std::size_t size = h.header.frame_size();
      // Only the few frames whose content matters are held whole; the rest
      // (DataRow, CopyData, ...) stream through by length.
      const bool hold = to_server ? is_tag(tag, frontend_tag::terminate)
                                  : is_tag(tag, backend_tag::ready_for_query) ||
                                        is_tag(tag, backend_tag::parameter_status);
      std::optional<std::string_view> body;
      if (hold && size <= from.capacity()) {
        if (in.size() - pos < size) break;
        body = in.substr(pos + 5, size - 5);
      }
      frame_action action = to_server ? on_client_frame(tag) : on_server_frame(tag, body);
      if (action == frame_action::forward) {
        if (body) {
          pos += size;
        } else {
          streaming = size;
        }
        continue;
      }
      stop = true;
    }

    std::string_view out = in.substr(flushed, pos - flushed);
    if (!out.empty()) {
      error_code ec;
      if (to_server) {
        co_await server_->stream().write(out, ec);
        if (ec) {
          broken_ = true;
          server_->stream().close();
          co_return;
        }
      } else if (!client_gone_) {
        co_await client_.write(out, ec);
        // The client is gone; keep reading to bring the server back idle.
        if (ec) client_.close();
      }
    }
    from.consume(pos);
    if (stop) co_return;
    if (!to_server && client_gone_ && cleanup_due_) {
      cleanup_due_ = false;
      co_await cleanup_step();
      if (clean_ || broken_) co_return;
    }
    from.compact();
    error_code ec;
    co_await from.read_more(ec);
    if (ec) {
      // A server left waiting for the rest of a message can never be
      // brought back to idle: close it rather than wait for the cleanup
      // timeout.
      const bool mid_frame = streaming > 0;
      if (!to_server || mid_frame) {
        broken_ = true;
        server_->stream().close();
      }
      co_return;
    }
  }
}

}  // namespace pgstash::proxy
