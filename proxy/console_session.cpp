// A client session on the admin console: admitted by admin.users, greeted
// as a server would greet it, then each simple Query answered by
// admin_console. No server connection is ever used.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "net/deadline.hpp"
#include "proxy/admin_console.hpp"
#include "proxy/client_session.hpp"
#include "proxy/console_command.hpp"
#include "proxy/proxy_context.hpp"
#include "wire/frontend.hpp"
#include "wire/message_writer.hpp"
#include "wire/random.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

awaitable<bool> client_session::console_login() {
  const auto config = ctx_.cfg.get();
  const auto& users = config->admin.users;
  if (std::ranges::find(users, user_) == users.end()) {
    co_await fail("28000", "user \"" + user_ + "\" may not use the admin console (admin.users)");
    co_return false;
  }
  console_ = true;
  record_->logged_in(std::string(k_console_database), user_, {}, client_.is_tls(),
                     client_kind::console);
  record_->set_state(client_state::idle);
  std::string hello;
  wire::write_authentication_ok(hello);
  // What psql needs to know of a server: a version it can parse, and the
  // encodings and formats the console's answers are in.
  for (const auto& [name, value] : {std::pair{"server_version", "15.0 (pgstash " PGSTASH_VERSION ")"},
                                    {"server_encoding", "UTF8"},
                                    {"client_encoding", "UTF8"},
                                    {"DateStyle", "ISO, MDY"},
                                    {"integer_datetimes", "on"},
                                    {"standard_conforming_strings", "on"}})
    wire::write_parameter_status(hello, name, value);
  wire::write_backend_key_data(hello, wire::random_uint32() & 0x7fffffff, wire::random_uint32());
  wire::write_ready_for_query(hello, 'I');
  co_await write_to_client(hello);
  co_return true;
}

awaitable<void> client_session::serve_console() {
  const std::uint32_t idle_limit = ctx_.cfg->limits.client_idle_timeout_ms;
  for (;;) {
    client_.compact();
    error_code ec;
    wire::decoded_frame f;
    {
      // limits.client_idle_timeout_ms holds here too.
      std::optional<net::deadline> idle;
      if (idle_limit > 0)
        idle.emplace(client_.socket().get_executor(), std::chrono::milliseconds(idle_limit),
                     [this] { client_.close(); });
      f = co_await client_.read_frame(wire::phase::normal, ctx_.cfg->limits.max_message_size, ec);
    }
    if (ec) break;
    if (f.status == wire::decode_status::error) {
      co_await fail("08P01", "invalid message from client: " + f.error.message());
      break;
    }
    const char tag = f.header.tag;
    if (tag == wire::tag_of(wire::frontend_tag::terminate)) break;
    wire::query_message query;
    if (tag != wire::tag_of(wire::frontend_tag::query) || wire::parse_query(f.body, query)) {
      co_await fail("0A000", "the admin console takes simple queries only (as psql sends them)");
      break;
    }
    std::string answer = co_await console_answer(ctx_, query.sql);
    wire::write_ready_for_query(answer, 'I');
    co_await write_to_client(answer);
  }
  client_.close();
}

}  // namespace pgstash::proxy
