// A client session's lease of a server connection: attaching one with the
// client's session, the server pump that relays its frames to the client,
// giving it back (or closing it) when the lease ends, cancel requests, and
// bringing it back clean when the client has left.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "proxy/client_session.hpp"
#include "proxy/proxy_context.hpp"
#include "wire/backend.hpp"
#include "wire/framing.hpp"
#include "wire/message_writer.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

namespace {

using wire::backend_tag;
using wire::tag_of;

}  // namespace

awaitable<bool> client_session::attach_server() {
  if (server_lost_) co_return false;
  std::string refusal;
  record_->set_state(client_state::waiting);
  const auto asked = std::chrono::steady_clock::now();
  try {
    server_ = co_await ctx_.pool.acquire(request_, id_);
  } catch (const pool::server_error& e) {
    log_client_event(spdlog::level::info, "error",
                     {{"message", std::string("no server connection: ") + e.what()}});
    refusal = e.error_response();
  }
  const auto waited = std::chrono::steady_clock::now() - asked;
  if (traffic_) {
    traffic_->waited(waited);
  } else {
    login_wait_ = waited;  // counted once the login succeeds
  }
  record_->set_state(server_ ? client_state::active : client_state::idle, server_ ? server_->id() : 0);
  if (!server_) {
    co_await write_to_client(refusal);
    client_.close();
    co_return false;
  }
  if (spdlog::should_log(spdlog::level::trace))
    spdlog::trace("{} attached s:{}", prefix(), server_->id());
  cleanup_ = {};
  relay_->attach(server_->state());
  const std::string sql = relay_->settings_sql();
  std::string problem;
  if (!sql.empty()) {
    try {
      if (auto error = co_await server_->run_internal(sql)) problem = *error;
    } catch (const pool::server_error& e) {
      problem = e.what();
    }
  }
  if (!problem.empty()) {
    release_server(false);
    co_await fail("08006",
                  "pgstash could not restore this session's settings on a server connection: " + problem);
    co_return false;
  }
  lease_ = lease::active;
  wake_pump();
  // Reported settings the client was last told otherwise (a RESET it ran on
  // another connection, say) are reported again, as a server would. At
  // login the greeting says it all.
  if (!reported_ || reported_ == server_->parameters()) co_return true;
  std::string statuses;
  for (const auto& [name, value] : *server_->parameters()) {
    auto told = reported_->find(name);
    if (told != reported_->end() && told->second == value) continue;
    wire::write_parameter_status(statuses, name, value);
  }
  reported_ = server_->parameters();
  if (!statuses.empty()) co_await write_to_client(statuses);
  co_return true;
}

void client_session::release_server(bool reusable) {
  if (!server_) return;
  if (spdlog::should_log(spdlog::level::trace))
    spdlog::trace("{} released s:{}{}", prefix(), server_->id(), reusable ? "" : " (closed)");
  relay_->detach();
  ctx_.pool.release(std::move(server_), reusable);
  server_.reset();
  lease_ = lease::none;
  record_->set_state(client_state::idle);
  if (waiting_for_answers_) answers_arrived_->cancel();
}

void client_session::keep_lease() {
  if (lease_ != lease::releasing) return;
  lease_ = lease::active;
  wake_pump();  // it may be waiting for a write to end before giving the lease back
}

void client_session::wake_pump() {
  if (pump_wake_) pump_wake_->cancel();
  // Cancelling the socket would cancel a write too: a write that ends
  // wakes the pump itself (send_to_server).
  if (server_ && writes_to_server_ == 0) {
    error_code ignored;
    server_->stream().socket().cancel(ignored);
  }
}

bool client_session::nothing_in_flight() const {
  return writes_to_server_ == 0 && cancels_in_flight_ == 0;
}

void client_session::start_server_pump() {
  pump_running_ = true;
  pump_wake_.emplace(client_.socket().get_executor());
  pump_done_.emplace(client_.socket().get_executor(), asio::steady_timer::time_point::max());
  spawn(server_pump(shared_from_this()), "server pump");
}

awaitable<void> client_session::server_pump(std::shared_ptr<client_session> self) {
  for (;;) {
    if (lease_ == lease::active) co_await relay_server();
    if (lease_ == lease::releasing || lease_ == lease::closing) {
      // A write or a cancel request under way holds the connection: a late
      // cancel would stop the next client's query.
      if (nothing_in_flight()) {
        const bool closed = lease_ == lease::closing;
        bool reusable = !closed;
        if (reusable && client_gone_ && cleanup_.reset_due) reusable = co_await reset_backend();
        release_server(reusable);
        if (closed && !client_gone_) {
          // The client's server connection failed under it: its session
          // state is lost, so the client goes too, as if the server had
          // closed.
          server_lost_ = true;
          if (server_protocol_error_) {
            co_await fail("08P01", "invalid message from server: " + server_protocol_error_.message());
          } else {
            client_.close();
          }
        }
        continue;
      }
    } else if (lease_ == lease::none && client_gone_) {
      break;
    }
    if (lease_ == lease::active) continue;
    error_code ec;
    pump_wake_->expires_at(asio::steady_timer::time_point::max());
    co_await pump_wake_->async_wait(on_error(ec));
  }
  pump_running_ = false;
  pump_done_->cancel();
  (void)self;  // keeps the session alive while the pump runs
}

relay::server_action client_session::on_server_frame(char tag, std::optional<std::string_view> body) {
  if (tag == tag_of(backend_tag::parameter_status) && body &&
      server_->note_parameter_status(*body))
    reported_ = server_->parameters();
  const relay::server_action action = relay_->on_server_frame(tag, body);
  if (tag == tag_of(backend_tag::ready_for_query) && action != relay::server_action::stop) {
    ready_seen_ = true;
    if (action == relay::server_action::forward && !client_gone_ && body && body->size() == 1)
      count_ready((*body)[0]);
    if (client_gone_) cleanup_.due = true;
    // A pinned client holds a connection of pool.size until it leaves: the
    // operator should be able to tell who and why.
    if (const unsigned pins = relay_->pins(); pins != pins_logged_) {
      if (transaction_mode() && (pins & ~pins_logged_) != 0)
        spdlog::info("{} pinned to server connection s:{} until it leaves: {}", prefix(), server_->id(),
                     invalidation::describe_pins(pins & ~pins_logged_));
      pins_logged_ = pins;
    }
    if (!relay_->owed()) arm_idle_timer();
  }
  if (tag == tag_of(backend_tag::error_response) && body) {
    // The server ends the connection after a FATAL or PANIC: it must not be
    // handed out before its close arrives.
    wire::error_fields fields;
    if (!wire::parse_error_fields(*body, fields)) {
      const auto severity = fields.get('V').value_or(fields.get('S').value_or(""));
      if (severity == "FATAL" || severity == "PANIC") lease_ = lease::closing;
    }
  }
  return action;
}

awaitable<void> client_session::relay_server() {
  net::pg_stream& from = server_->stream();
  const std::uint32_t max = cfg_->limits.max_message_size;
  std::uint64_t streaming = 0;
  bool discarding = false;  // the frame being streamed is dropped, not forwarded
  for (;;) {
    std::string_view in = from.buffered();
    std::size_t pos = 0;
    std::size_t flushed = 0;
    bool stop = false;
    std::string synthetic;
    while (pos < in.size() && !stop) {
      if (streaming > 0) {
        const std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(streaming, in.size() - pos));
        pos += n;
        streaming -= n;
        if (discarding) flushed = pos;
        continue;
      }
      wire::decoded_frame h = wire::decode_header(in.substr(pos), wire::phase::normal, max);
      if (h.status == wire::decode_status::need_more) break;
      if (h.status == wire::decode_status::error) {
        spdlog::warn("{} invalid message from server: {}", prefix(), h.error.message());
        server_protocol_error_ = h.error;
        stop = true;
        break;
      }
      const char tag = h.header.tag;
      const std::size_t size = h.header.frame_size();
      // Only frames whose content matters are held whole; DataRow, CopyData
      // and the like stream through by length, unless the result cache is
      // capturing them.
      const bool hold = tag == tag_of(backend_tag::ready_for_query) ||
                        tag == tag_of(backend_tag::parameter_status) ||
                        tag == tag_of(backend_tag::command_complete) ||
                        tag == tag_of(backend_tag::error_response) || relay_->wants_body();
      std::optional<std::string_view> body;
      if (hold && size <= from.capacity()) {
        if (in.size() - pos < size) break;
        body = in.substr(pos + 5, size - 5);
      }
      const bool async_message = tag == tag_of(backend_tag::parameter_status) ||
                                 tag == tag_of(backend_tag::notice_response) ||
                                 tag == tag_of(backend_tag::notification_response);
      if (!async_message) {
        // Responses pgstash made up for earlier requests go out first.
        relay_->take_synthetic(synthetic);
        count_synthetic(synthetic);
        if (!synthetic.empty()) {
          co_await write_to_client(in.substr(flushed, pos - flushed));
          co_await write_to_client(synthetic);
          synthetic.clear();
          flushed = pos;
        }
      }
      const relay::server_action action = on_server_frame(tag, body);
      if (action == relay::server_action::stop) {
        stop = true;
        break;
      }
      if (action == relay::server_action::drop || action == relay::server_action::replace) {
        co_await write_to_client(in.substr(flushed, pos - flushed));
        if (action == relay::server_action::replace) co_await write_to_client(relay_->take_replacement());
        if (body) {
          pos += size;
        } else {
          streaming = size;  // too large to hold: skip it as it streams
          discarding = true;
        }
        flushed = pos;
        continue;
      }
      discarding = false;
      if (body) {
        pos += size;
      } else {
        streaming = size;
      }
    }
    co_await write_to_client(in.substr(flushed, pos - flushed));
    relay_->take_synthetic(synthetic);
    count_synthetic(synthetic);
    if (!synthetic.empty()) co_await write_to_client(synthetic);
    from.consume(pos);
    if (waiting_for_answers_) answers_arrived_->cancel();
    if (stop) {
      lease_ = lease::closing;
      co_return;
    }
    if (std::string replay = relay_->take_replay(); !replay.empty()) {
      spdlog::info("{} statement's result type changed: preparing it again and retrying once",
                   prefix());
      co_await send_to_server(replay);
    }
    if (client_gone_ && cleanup_.due) {
      cleanup_.due = false;
      co_await cleanup_step();
    }
    if (ready_seen_) {
      ready_seen_ = false;
      if (lease_ == lease::active && relay_->idle() && !client_gone_ && streaming == 0 &&
          client_streaming_ == 0)
        lease_ = lease::releasing;
    }
    if (lease_ == lease::closing || (lease_ == lease::releasing && streaming == 0)) co_return;
    from.compact();
    error_code ec;
    co_await from.read_more(ec);
    // Cancelled: woken to look at the lease again.
    if (ec && ec != asio::error::operation_aborted) {
      lease_ = lease::closing;
      co_return;
    }
  }
}

void client_session::cancel_server_query() {
  auto self = shared_from_this();
  asio::post(client_.socket().get_executor(), [self] {
    if (!self->server_ || self->client_gone_) return;
    spdlog::debug("{} forwarding cancel request", self->prefix());
    asio::co_spawn(self->client_.socket().get_executor(), self->cancel_on_server(self),
                   asio::detached);
  });
}

awaitable<void> client_session::cancel_on_server(std::shared_ptr<client_session> self) {
  // Until the server has delivered the cancel, the connection is neither
  // given back nor sent cleanup queries: a late cancel would otherwise stop
  // the next client's query, or the ROLLBACK.
  if (!server_) co_return;  // gone since the cancel request was posted
  ++cancels_in_flight_;
  co_await pool::send_cancel(server_->endpoint(), server_->process_id(), server_->secret_key(),
                             std::chrono::milliseconds(ctx_.cfg->server.connect_timeout_ms));
  --cancels_in_flight_;
  if (client_gone_) co_await cleanup_step();
  if (lease_ != lease::active) wake_pump();
  (void)self;  // keeps the session alive while the cancel is out
}

awaitable<void> client_session::cleanup_step() {
  // A cancel on its way resumes the cleanup once the server has it.
  if (lease_ != lease::active || cancels_in_flight_ > 0) co_return;
  std::string out;
  relay_->end_copy(out);
  relay_->end_batch(out);  // extended-protocol messages without their Sync
  if (!out.empty()) co_await send_to_server(out);
  if (lease_ != lease::active) co_return;
  if (relay_->owed()) {
    if (!cleanup_.cancel_sent) {
      cleanup_.cancel_sent = true;
      co_await cancel_on_server(shared_from_this());
    }
    co_return;  // the next ReadyForQuery brings us back here
  }
  out.clear();
  if (relay_->transaction_status() != 'I') {
    relay_->roll_back(out);
    co_await send_to_server(out);
    co_return;
  }
  // A connection that will be closed needs no reset. The pump resets it
  // before giving it back (reset_backend).
  cleanup_.reset_due = !own_server_ && (!transaction_mode() || relay_->pinned());
  lease_ = lease::releasing;
  wake_pump();
}

awaitable<bool> client_session::reset_backend() {
  // The reset query (DISCARD ALL) drops temporary tables but not the
  // backend's temporary schema, which a fresh backend lacks and which
  // changes what the next client sees (current_schema() under search_path
  // pg_temp, PREPARE TRANSACTION): such a backend is closed, not handed on.
  const std::string reset = cfg_->pool.server_reset_query;
  try {
    std::optional<std::string> no_temp_schema;
    // Qualified: the client's search_path is still in force.
    auto error = co_await server_->run_internal(
        "select pg_catalog.pg_my_temp_schema() operator(pg_catalog.=) 0", &no_temp_schema);
    if (error || no_temp_schema != "t") co_return false;
    if (reset.empty()) co_return true;
    if (co_await server_->run_internal(reset)) co_return false;
  } catch (const pool::server_error& e) {
    spdlog::info("{} server connection failed while being reset: {}", prefix(), e.what());
    co_return false;
  }
  relay_->server_was_reset();
  co_return true;
}

awaitable<void> client_session::flush_to_server() {
  std::string& out = relay_->to_server();
  if (out.empty() || !server_) co_return;
  std::string batch;
  batch.swap(out);
  co_await send_to_server(batch);
}

awaitable<void> client_session::send_to_server(std::string_view bytes) {
  error_code ec;
  ++writes_to_server_;
  co_await server_->stream().write(bytes, ec);
  --writes_to_server_;
  if (ec) {
    lease_ = lease::closing;
    server_->stream().close();
  }
  if (lease_ != lease::active && writes_to_server_ == 0) wake_pump();
}

}  // namespace pgstash::proxy
