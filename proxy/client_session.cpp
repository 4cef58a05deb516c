// A client session's flow, top to bottom: login, the client pump (each
// frame routed by the relay, a server leased when a frame needs one), and
// leaving. The lease and the server pump are in client_lease.cpp, the
// startup and authentication stages in client_login.cpp.
#include "proxy/client_session.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "net/deadline.hpp"
#include "proxy/console_command.hpp"
#include "proxy/peer_cancel.hpp"
#include "proxy/proxy_context.hpp"
#include "wire/framing.hpp"
#include "wire/message_writer.hpp"
#include "wire/random.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

namespace {

// A client's read buffer starts this small and grows on demand: most
// requests are short, and an idle client should cost next to nothing.
constexpr std::size_t k_initial_client_buffer = 512;

}  // namespace

client_session::client_session(proxy_context& ctx, stream_socket socket, std::string peer)
    : ctx_(ctx),
      cfg_(ctx.cfg),
      id_(ctx.next_client_id++),
      client_(std::move(socket), ctx.cfg->limits.io_buffer_size, k_initial_client_buffer),
      peer_(std::move(peer)),
      record_(std::make_shared<client_record>(id_, peer_)) {}

void client_session::start() { spawn(run(shared_from_this()), "session"); }

void client_session::spawn(awaitable<void> task, const char* what) {
  // Anything thrown ends that coroutine and is logged here, once.
  asio::co_spawn(client_.socket().get_executor(), std::move(task),
                 [self = shared_from_this(), what](std::exception_ptr e) {
                   if (!e) return;
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& ex) {
                     spdlog::error("{} {} failed: {}", self->prefix(), what, ex.what());
                   }
                 });
}

awaitable<void> client_session::run(std::shared_ptr<client_session> self) {
  ++ctx_.clients;
  ctx_.registry.add(record_);
  struct client_count_guard {
    proxy_context& ctx;
    const bool& replication_counted;
    std::uint64_t id;
    ~client_count_guard() {
      ctx.registry.remove(id);
      if (replication_counted) --ctx.replication_clients;
      --ctx.clients;
    }
  } guard{ctx_, replication_counted_, id_};
  // Login and leaving are coroutines of their own so that what they hold
  // (the startup packet, the greeting) is freed while the client is idle.
  if (!co_await log_in(self)) co_return;
  log_client_event(spdlog::level::info, "login",
                   {{"kind", std::string(to_string(record_->read().kind))},
                    {"tls", client_.is_tls() ? "true" : "false", true}});
  if (console_) {
    co_await serve_console();
  } else if (replication_) {
    co_await relay_replication(self);
    ctx_.unregister_cancel_key(*cancel_key_);
  } else {
    if (transaction_mode()) release_server(true);
    start_server_pump();
    co_await client_loop();
    co_await leave();
  }
  const auto connected = std::chrono::system_clock::now() - record_->read().connected;
  log_client_event(spdlog::level::info, "logout",
                   {{"duration_ms",
                     std::to_string(
                         std::chrono::duration_cast<std::chrono::milliseconds>(connected).count()),
                     true}});
}

void client_session::log_client_event(spdlog::level::level_enum level, std::string_view event,
                                      std::initializer_list<log_field> extra) {
  if (!spdlog::should_log(level)) return;
  std::vector<log_field> fields = {{"session", "c:" + std::to_string(id_)},
                                   {"client", peer_},
                                   {"database", database_},
                                   {"user", user_}};
  fields.insert(fields.end(), extra.begin(), extra.end());
  log_event(level, event, fields);
}

void client_session::begin_request(char tag, std::string_view frame) {
  if (request_started_) return;
  request_started_ = std::chrono::steady_clock::now();
  // Cleared even with the log off: a reload may turn it on before the answer.
  request_text_.clear();
  if (cfg_->log.slow_query_ms == 0) return;
  // What the slow-query line shows: the statement's text, never a Bind's
  // parameter values.
  const std::string_view body = frame.size() >= 5 ? frame.substr(5) : std::string_view{};
  wire::query_message query;
  wire::parse_message parse;
  wire::bind_message bind;
  if (tag == wire::tag_of(wire::frontend_tag::query) && !wire::parse_query(body, query)) {
    request_text_ = query.sql.substr(0, k_logged_statement_bytes);
  } else if (tag == wire::tag_of(wire::frontend_tag::parse) && !wire::parse_parse(body, parse)) {
    request_text_ = parse.query.substr(0, k_logged_statement_bytes);
  } else if (tag == wire::tag_of(wire::frontend_tag::bind) && !wire::parse_bind(body, bind)) {
    request_text_ = "(prepared statement \"" + std::string(bind.statement) + "\")";
  } else {
    request_text_ = std::string("(message '") + tag + "')";
  }
}

awaitable<bool> client_session::log_in(const std::shared_ptr<client_session>& self) {
  wire::startup_message startup;
  std::string startup_packet;  // keeps the views in `startup` alive
  {
    net::deadline login_timeout(client_.socket().get_executor(),
                                std::chrono::milliseconds(cfg_->limits.client_login_timeout_ms),
                                [this] { client_.close(); });
    if (!co_await negotiate_startup(startup, startup_packet)) co_return false;
    // The login's decisions follow a reload made while the client connected.
    cfg_.refresh();
    if (replication_) {
      replication_counted_ = true;
      if (++ctx_.replication_clients > cfg_->listen.max_replication_conn) {
        co_await fail("53300", "sorry, too many replication clients already");
        co_return false;
      }
    } else if (static_cast<std::int64_t>(ctx_.clients) - ctx_.replication_clients >
               cfg_->listen.max_client_conn) {  // signed: the two are read apart
      co_await fail("53300", "sorry, too many clients already");
      co_return false;
    }
    // The console is pgstash's own: no PostgreSQL login stands behind it, so
    // a password is asked for it even where clients are trusted.
    const bool console = wants_console();
    auto method = cfg_->auth.method;
    if (console && method == conf::auth_method::trust) method = conf::auth_method::scram_sha_256;
    if (!co_await authenticate(request_.credentials, method)) co_return false;
    if (console) co_return co_await console_login();
  }

  request_.user = user_;
  if (auto database = server_database(*cfg_)) {
    request_.database = std::move(*database);
  } else {
    co_await fail("3D000", "database \"" + database_ + "\" does not exist");
    co_return false;
  }
  own_server_ = replication_ || !ctx_.pool.pooled(request_.database);
  std::string application_name;
  for (auto [name, value] : startup.parameters)
    if (name == "application_name") application_name = value;
  record_->logged_in(request_.database, user_, std::move(application_name), client_.is_tls(),
                     replication_ ? client_kind::replication : client_kind::session);
  std::vector<std::pair<std::string, std::string>> client_parameters;
  for (auto [name, value] : startup.parameters) {
    if (name == "user" || name == "database" || name.starts_with("_pq_.")) continue;
    // Only a replication connection's server is asked for replication.
    if (name == "replication" && !replication_) continue;
    client_parameters.emplace_back(name, value);
  }
  // Session mode hands the server exactly the client's startup packet; in
  // transaction mode servers are shared, so the client's parameters become
  // settings applied to whichever server it gets.
  relay::options options;
  if (ctx_.cache && !replication_) {
    cache_.emplace(*ctx_.cache, cache_identity(client_parameters));
    options.cache = &*cache_;
  }
  options.transaction_mode = transaction_mode();
  options.replay_limit = cfg_->limits.io_buffer_size;
  options.analysis_cache_entries = cfg_->limits.analysis_cache_entries;
  relay_.emplace(options, transaction_mode() ? client_parameters
                                             : std::vector<std::pair<std::string, std::string>>{});
  if (!transaction_mode()) request_.parameters = std::move(client_parameters);
  request_.cached_signature = request_.signature();
  // Not a conditional expression: g++ 12 mishandles co_await on one.
  bool attached = false;
  if (replication_) {
    attached = co_await attach_replication_server();
  } else {
    attached = co_await attach_server();
  }
  if (!attached) co_return false;
  // Counted from here: a pool whose database does not exist never gets
  // counters (clients could otherwise make up series without end).
  traffic_ = ctx_.traffic.pool(request_.database, user_);
  traffic_->waited(login_wait_);

  // Tell the client what a server would: parameters, its cancel key, ready.
  // In session mode the process id is the real server's; in transaction
  // mode the client has no one server, so it gets a number of pgstash's.
  const std::uint32_t pid =
      transaction_mode() ? wire::random_uint32() & 0x7fffffff : server_->process_id();
  cancel_key_ = std::make_pair(pid, cancel_secret(wire::random_uint32(), cfg_->process.peer_id));
  ctx_.register_cancel_key(*cancel_key_, self);
  std::string hello;
  wire::write_authentication_ok(hello);
  for (const auto& [name, value] : *server_->parameters())
    wire::write_parameter_status(hello, name, value);
  reported_ = server_->parameters();
  wire::write_backend_key_data(hello, cancel_key_->first, cancel_key_->second);
  wire::write_ready_for_query(hello, 'I');
  co_await write_to_client(hello);
  co_return true;
}

awaitable<void> client_session::client_loop() {
  const std::uint32_t max = cfg_->limits.max_message_size;
  std::uint64_t& streaming = client_streaming_;
  bool dropping = false;  // the frame streaming through is skipped, being part of a failed batch
  for (;;) {
    cfg_.refresh();
    std::string_view in = client_.buffered();
    std::size_t pos = 0;
    bool stop = false;
    bool hold_large = false;  // the next frame is larger than the buffer and must be held whole
    bool wait = false;        // the next frame must wait for answers (relay::must_wait)
    while (pos < in.size() && !stop) {
      if (streaming > 0) {
        const std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(streaming, in.size() - pos));
        if (!dropping) relay_->to_server().append(in.substr(pos, n));
        pos += n;
        streaming -= n;
        if (relay_->to_server().size() >= client_.capacity()) co_await flush_to_server();
        continue;
      }
      wire::decoded_frame h = wire::decode_header(in.substr(pos), wire::phase::normal, max);
      if (h.status == wire::decode_status::need_more) break;
      if (h.status == wire::decode_status::error) {
        end_sqlstate_ = "08P01";
        end_message_ = "invalid message from client: " + h.error.message();
        stop = true;
        break;
      }
      const char tag = h.header.tag;
      const std::size_t size = h.header.frame_size();
      if (relay_->must_wait()) {
        wait = true;
        break;
      }
      if (auto why = relay::refused_tag(tag)) {
        end_sqlstate_ = "08P01";
        end_message_ = std::move(*why);
        stop = true;
        break;
      }
      if (size > client_.capacity()) {
        if (relay_->must_hold(tag, in.substr(pos))) {
          hold_large = true;
          break;
        }
        // Frames pgstash need not read stream through by length.
        dropping = !relay_->on_streamed(tag, in.substr(pos));
        begin_request(tag, {});
        if (!dropping) {
          if (!server_ && !co_await attach_server()) co_return;
          keep_lease();
        }
        streaming = size;
        continue;
      }
      if (in.size() - pos < size) break;
      const std::string_view frame = in.substr(pos, size);
      relay::plan plan = relay_->plan_frame(tag, frame);
      if (plan_must_wait(plan)) co_await plan_after_waits(tag, frame, plan);
      if (plan.where == relay::route::refuse) {
        end_sqlstate_ = "08P01";
        end_message_ = plan.error;
        stop = true;
        break;
      }
      if (plan.where == relay::route::to_server) {
        if (!server_ && !co_await attach_server()) co_return;
        keep_lease();
      }
      idle_timer_.reset();
      begin_request(tag, frame);
      if (!relay_->on_client_frame(tag, frame, plan)) stop = true;
      pos += size;
      if (relay_->to_server().size() >= client_.capacity()) co_await flush_to_server();
    }
    co_await flush_to_server();
    client_.consume(pos);
    {
      // Answers pgstash made up, once everything before them is answered.
      std::string synthetic;
      relay_->take_synthetic(synthetic);
      count_synthetic(synthetic);
      if (!synthetic.empty()) co_await write_to_client(synthetic);
      if (lease_ == lease::active && relay_->idle() && !stop && !hold_large && !wait &&
          streaming == 0) {
        // Attached for nothing the server had to answer: give it back.
        lease_ = lease::releasing;
        wake_pump();
      }
    }
    if (stop || lease_ == lease::closing) co_return;

    if (wait) {
      if (!co_await wait_for_answers()) co_return;
      continue;
    }

    if (hold_large) {
      if (!co_await wait_for_answers()) co_return;
      std::string large;
      if (!co_await read_whole_frame(large, max)) co_return;
      relay::plan plan = relay_->plan_frame(large[0], large);
      if (plan_must_wait(plan)) co_await plan_after_waits(large[0], large, plan);
      if (plan.where == relay::route::refuse) {
        end_sqlstate_ = "08P01";
        end_message_ = plan.error;
        co_return;
      }
      if (plan.where == relay::route::to_server) {
        if (!server_ && !co_await attach_server()) co_return;
        keep_lease();
      }
      idle_timer_.reset();
      begin_request(large[0], large);
      const bool go_on = relay_->on_client_frame(large[0], large, plan);
      std::string().swap(large);
      co_await flush_to_server();
      if (!go_on || lease_ == lease::closing) co_return;
      continue;
    }

    client_.compact();
    // Between transactions a client holds no server; let go of its buffers.
    if (!server_) client_.shrink();
    // The idle clock runs only while nothing is outstanding; the server
    // pump starts it again when the last answer arrives.
    if (!relay_->owed()) arm_idle_timer();
    error_code ec;
    co_await read_from_client(ec);
    idle_timer_.reset();
    if (!idle_sqlstate_.empty()) {
      end_sqlstate_ = idle_sqlstate_;
      end_message_ = idle_sqlstate_ == "25P03"
                         ? "terminating connection due to idle-in-transaction timeout"
                         : "terminating connection due to idle-session timeout";
      co_return;
    }
    if (ec) {
      if (streaming > 0 && !dropping && server_) {
        // The server waits for the rest of a message that will never come:
        // it cannot be brought back to idle, so close it now.
        lease_ = lease::closing;
        server_->stream().close();
      }
      co_return;
    }
  }
}

awaitable<void> client_session::read_from_client(error_code& ec) {
  const std::size_t n = co_await client_.read_more(ec);
  traffic_->received(n);
  if (cache_ && cache_->strict()) cache_->read_arrived(std::chrono::steady_clock::now());
}

awaitable<void> client_session::wait_until_woken(const subscription& subscribe) {
  auto timer = std::make_shared<asio::steady_timer>(client_.socket().get_executor());
  auto woken = std::make_shared<bool>(false);
  // The waker may run on another thread: the wake-up is posted to this
  // session's worker.
  auto wake = [timer, woken] {
    asio::post(timer->get_executor(), [timer, woken] {
      *woken = true;
      timer->cancel();
    });
  };
  const auto deadline = subscribe(std::move(wake));
  if (!deadline) co_return;
  timer->expires_at(*deadline);
  co_await flush_to_server();
  if (*woken) co_return;
  error_code ec;
  co_await timer->async_wait(on_error(ec));
}

bool client_session::plan_must_wait(const relay::plan& plan) const {
  return (cache_ && cache_->holds_unproven_hit()) || waits_for_fetch(plan);
}

bool client_session::waits_for_fetch(const relay::plan& plan) const {
  // A session that holds claims of its own never waits: it could be
  // waiting for itself, or for one that waits for it.
  return plan.capture && plan.capture->fetched_elsewhere() && !relay_->holds_captures();
}

awaitable<void> client_session::plan_after_waits(char tag, std::string_view frame,
                                                 relay::plan& plan) {
  for (bool waited_for_fetch = false;; waited_for_fetch = true) {
    if (auto hit = cache_ ? cache_->take_unproven_hit() : std::nullopt) {
      plan = {};
      const auto give_up =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg_->cache.strict_wait_ms);
      co_await wait_until_woken([&](std::function<void()> wake) -> std::optional<clock_time> {
        if (hit->barrier->wait(hit->arrived, give_up, std::move(wake))) return std::nullopt;
        return give_up;
      });
      cache_->stream_waited(true);
      plan = relay_->plan_frame(tag, frame);
      cache_->stream_waited(false);
    }
    if (waited_for_fetch || !waits_for_fetch(plan)) co_return;  // once only
    const cache::key key = plan.capture->key();
    plan = {};
    co_await wait_until_woken([&](std::function<void()> wake) -> std::optional<clock_time> {
      const auto since = ctx_.cache->in_flight().wait(key, std::move(wake));
      if (!since) return std::nullopt;
      return *since + std::chrono::milliseconds(cfg_->cache.coalesce_wait_ms);
    });
    plan = relay_->plan_frame(tag, frame);
  }
}

awaitable<bool> client_session::wait_for_answers() {
  if (!answers_arrived_) answers_arrived_.emplace(client_.socket().get_executor());
  waiting_for_answers_ = true;
  while (relay_->must_wait() && server_ && lease_ != lease::closing) {
    error_code ec;
    answers_arrived_->expires_at(asio::steady_timer::time_point::max());
    co_await answers_arrived_->async_wait(on_error(ec));
  }
  waiting_for_answers_ = false;
  co_return !relay_->must_wait();
}

awaitable<bool> client_session::read_whole_frame(std::string& frame, std::uint32_t max) {
  // Bounded by limits.max_message_size, checked with the header.
  wire::decoded_frame h = wire::decode_header(client_.buffered(), wire::phase::normal, max);
  const std::size_t size = h.header.frame_size();
  frame.reserve(size);
  while (frame.size() < size) {
    std::string_view have = client_.buffered();
    const std::size_t take = std::min(have.size(), size - frame.size());
    frame.append(have.substr(0, take));
    client_.consume(take);
    if (frame.size() == size) break;
    client_.compact();
    error_code ec;
    co_await read_from_client(ec);
    if (ec) co_return false;
  }
  co_return true;
}

awaitable<void> client_session::leave() {
  if (!end_sqlstate_.empty()) co_await fail(end_sqlstate_, end_message_);
  client_gone_ = true;
  client_.close();
  idle_timer_.reset();
  {
    net::deadline give_up(client_.socket().get_executor(),
                          std::chrono::milliseconds(ctx_.cfg->pool.cleanup_timeout_ms), [this] {
                            spdlog::warn("{} server connection did not come back clean in time: closing it",
                                         prefix());
                            lease_ = lease::closing;
                            if (server_) server_->stream().close();
                            wake_pump();
                          });
    co_await cleanup_step();
    // The pump ends once the lease has: at once if there is none.
    wake_pump();
    while (pump_running_) {
      error_code ec;
      co_await pump_done_->async_wait(on_error(ec));
    }
  }
  ctx_.unregister_cancel_key(*cancel_key_);
  if (spdlog::should_log(spdlog::level::debug)) spdlog::debug("{} closed", prefix());
}

awaitable<void> client_session::write_to_client(std::string_view bytes) {
  if (client_gone_) co_return;
  if (traffic_) traffic_->sent(bytes.size());
  error_code ec;
  co_await client_.write(bytes, ec);
  // A client that cannot be written to is gone; its read side notices.
  if (ec) client_.close();
}

void client_session::count_ready(char status) {
  const auto now = std::chrono::steady_clock::now();
  const auto latency =
      request_started_ ? now - *request_started_ : std::chrono::steady_clock::duration::zero();
  traffic_->answered(latency, status == 'I');
  const std::uint32_t slow_ms = cfg_->log.slow_query_ms;
  if (slow_ms > 0 && latency >= std::chrono::milliseconds(slow_ms)) {
    const auto ms = std::chrono::duration_cast<std::chrono::microseconds>(latency).count() / 1000.0;
    log_client_event(spdlog::level::info, "slow_query",
                     {{"duration_ms", fmt::format("{:.1f}", ms), true}, {"statement", request_text_}});
    ctx_.slow.add({std::chrono::system_clock::now(), database_, user_, ms, request_text_});
  }
  request_started_.reset();
  // Pipelined requests: the next one's answer is timed from here.
  if (relay_->owed()) request_started_ = now;
}

void client_session::count_synthetic(std::string_view frames) {
  if (client_gone_) return;
  while (!frames.empty()) {
    const wire::decoded_frame h = wire::decode_header(frames, wire::phase::normal, frames.size());
    if (h.status != wire::decode_status::message || h.header.frame_size() > frames.size()) return;
    if (h.header.tag == wire::tag_of(wire::backend_tag::ready_for_query) && h.header.frame_size() == 6)
      count_ready(frames[5]);
    frames.remove_prefix(h.header.frame_size());
  }
}

awaitable<void> client_session::fail(std::string_view sqlstate, std::string_view message) {
  log_client_event(spdlog::level::info, "error",
                   {{"sqlstate", std::string(sqlstate)}, {"message", std::string(message)}});
  std::string out;
  wire::write_error(out, {{'S', "FATAL"},
                          {'V', "FATAL"},
                          {'C', std::string(sqlstate)},
                          {'M', std::string(message)},
                          {'D', "pgstash session c:" + std::to_string(id_)}});
  co_await write_to_client(out);
  client_.close();
}

void client_session::arm_idle_timer() {
  // Idle clients are bounded by limits.client_idle_timeout_ms, idle
  // transactions by limits.idle_transaction_timeout_ms.
  std::uint32_t limit = cfg_->limits.client_idle_timeout_ms;
  const char* sqlstate = "57P05";
  if (relay_->transaction_status() != 'I' && cfg_->limits.idle_transaction_timeout_ms > 0) {
    limit = cfg_->limits.idle_transaction_timeout_ms;
    sqlstate = "25P03";
  }
  if (limit == 0 || client_gone_) return;
  idle_timer_.emplace(client_.socket().get_executor(), std::chrono::milliseconds(limit),
                      [this, sqlstate] {
                        idle_sqlstate_ = sqlstate;
                        error_code ignored;
                        client_.socket().cancel(ignored);
                      });
}

bool client_session::wants_console() const {
  return database_ == k_console_database && !replication_;
}

std::optional<std::string> client_session::server_database(const conf::config& config) const {
  if (config.databases.empty()) return database_;
  auto it = config.databases.find(database_);
  if (it == config.databases.end()) return std::nullopt;
  return it->second;
}

std::string client_session::prefix() const {
  return "c:" + std::to_string(id_) + " " + (database_.empty() ? "?" : database_) + "/" +
         (user_.empty() ? "?" : user_) + "@" + peer_;
}

bool client_session::transaction_mode() const {
  return !own_server_ && cfg_->pool.mode == conf::pool_mode::transaction;
}


namespace {

// A libpq connection-string value, quoted.
std::string conninfo_value(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

}  // namespace

cache_client::identity client_session::cache_identity(
    const std::vector<std::pair<std::string, std::string>>& startup) const {
  const auto config = ctx_.cfg.get();
  const conf::server_section& server = config->server;
  // The catalog connection logs in as the client, with the password
  // pgstash knows for it; without one (a SCRAM verifier, an md5 hash) only
  // a server that trusts pgstash answers, and otherwise nothing is cached.
  std::string conninfo = "host=" + conninfo_value(server.host) +
                         " port=" + std::to_string(server.port) +
                         " dbname=" + conninfo_value(request_.database) +
                         " user=" + conninfo_value(request_.user) +
                         " application_name='pgstash catalog' connect_timeout=5";
  if (request_.credentials.password)
    conninfo += " password=" + conninfo_value(*request_.credentials.password);
  static constexpr const char* k_sslmode[] = {"disable", "prefer", "require", "verify-full"};
  conninfo += std::string(" sslmode=") + k_sslmode[static_cast<int>(server.tls)];
  return {request_.database, request_.user, std::move(conninfo), startup};
}

}  // namespace pgstash::proxy
