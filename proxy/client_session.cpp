// The relay stages of a client session: leasing server connections,
// pumping frames both ways, following the responses the server owes, and
// bringing a server connection back clean when the client leaves.
#include "proxy/client_session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "invalidation/analysis_cache.hpp"
#include "net/deadline.hpp"
#include "proxy/proxy_context.hpp"
#include "wire/backend.hpp"
#include "wire/errc.hpp"
#include "wire/message_writer.hpp"
#include "wire/random.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

namespace {

using wire::backend_tag;
using wire::frontend_tag;

// A client's read buffer starts this small and grows on demand: most
// requests are short, and an idle client should cost next to nothing.
constexpr std::size_t k_initial_client_buffer = 512;

constexpr char tag_of(frontend_tag t) { return static_cast<char>(t); }
constexpr char tag_of(backend_tag t) { return static_cast<char>(t); }

// An empty-bodied backend message such as ParseComplete.
std::string empty_message(backend_tag tag) {
  std::string out;
  wire::write_empty(out, tag);
  return out;
}

// `frame` (a Bind or Describe) with the statement name after its first
// `skip` cstrings replaced by `name`.
void write_renamed(std::string& out, std::string_view frame, int skip, std::string_view name) {
  std::string_view body = frame.substr(5);
  std::size_t at = 0;
  for (int i = 0; i < skip; ++i) at = body.find('\0', at) + 1;
  std::size_t end = body.find('\0', at);
  wire::message_writer w(out);
  w.begin(static_cast<frontend_tag>(frame[0]));
  w.put_bytes(body.substr(0, at));
  w.put_cstr(name);
  w.put_bytes(body.substr(end + 1));
  w.finish();
}

// The portal and statement names at the start of a Bind's body, if that
// much of it is at hand.
std::optional<std::pair<std::string_view, std::string_view>> bind_names(std::string_view body) {
  std::size_t portal_end = body.find('\0');
  if (portal_end == std::string_view::npos) return std::nullopt;
  std::size_t statement_end = body.find('\0', portal_end + 1);
  if (statement_end == std::string_view::npos) return std::nullopt;
  return std::make_pair(body.substr(0, portal_end),
                        body.substr(portal_end + 1, statement_end - portal_end - 1));
}

// Versions of server-side statements: a monotonic clock, the same on every
// worker thread.
std::uint64_t statement_clock() {
  return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

// The name pgstash gives the statement and portal of its own requests
// inside a client's batch; never one a client's, whose unnamed ones it
// must not disturb.
constexpr std::string_view k_internal_name = "pgstash_internal";

}  // namespace

client_session::client_session(proxy_context& ctx, tcp::socket socket)
    : ctx_(ctx),
      id_(ctx.next_client_id++),
      client_(std::move(socket), ctx.cfg.limits.io_buffer_size, k_initial_client_buffer) {
  error_code ec;
  auto ep = client_.socket().remote_endpoint(ec);
  peer_ = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
  client_.socket().set_option(tcp::no_delay(true), ec);
}

void client_session::start() {
  auto self = shared_from_this();
  asio::co_spawn(client_.socket().get_executor(), run(self), [self](std::exception_ptr e) {
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

bool client_session::transaction_mode() const {
  return ctx_.cfg.pool.mode == conf::pool_mode::transaction;
}

awaitable<void> client_session::fail(std::string_view sqlstate, std::string_view message) {
  spdlog::info("{} closing: {} {}", prefix(), sqlstate, message);
  std::string out;
  wire::write_error(out, {{'S', "FATAL"},
                          {'V', "FATAL"},
                          {'C', std::string(sqlstate)},
                          {'M', std::string(message)},
                          {'D', "pgstash session c:" + std::to_string(id_)}});
  co_await write_to_client(out);
  client_.close();
}

awaitable<void> client_session::write_to_client(std::string_view bytes) {
  if (client_gone_) co_return;
  error_code ec;
  co_await client_.write(bytes, ec);
  // A client that cannot be written to is gone; its read side notices.
  if (ec) client_.close();
}

awaitable<void> client_session::run(std::shared_ptr<client_session> self) {
  ++ctx_.clients;
  struct client_count_guard {
    proxy_context& ctx;
    ~client_count_guard() { --ctx.clients; }
  } guard{ctx_};
  // Login and leaving are coroutines of their own so that what they hold
  // (the startup packet, the greeting) is freed while the client is idle.
  if (!co_await log_in(self)) co_return;
  if (transaction_mode()) {
    release_server(true);
  } else {
    start_server_pump();
  }
  co_await client_loop();
  co_await leave();
}

awaitable<bool> client_session::log_in(const std::shared_ptr<client_session>& self) {
  wire::startup_message startup;
  std::string startup_packet;  // keeps the views in `startup` alive
  {
    net::deadline login_timeout(client_.socket().get_executor(),
                                 std::chrono::milliseconds(ctx_.cfg.limits.client_login_timeout_ms),
                                 [this] { client_.close(); });
    if (!co_await negotiate_startup(startup, startup_packet)) co_return false;
    if (ctx_.clients > ctx_.cfg.listen.max_client_conn) {
      co_await fail("53300", "sorry, too many clients already");
      co_return false;
    }
    if (!co_await authenticate(request_.credentials)) co_return false;
  }

  request_.user = user_;
  request_.database = database_;
  if (!ctx_.cfg.databases.empty()) {
    auto it = ctx_.cfg.databases.find(database_);
    if (it == ctx_.cfg.databases.end()) {
      co_await fail("3D000", "database \"" + database_ + "\" does not exist");
      co_return false;
    }
    request_.database = it->second;
  }
  std::vector<std::pair<std::string, std::string>> client_parameters;
  for (auto [name, value] : startup.parameters) {
    if (name == "user" || name == "database" || name.starts_with("_pq_.")) continue;
    client_parameters.emplace_back(name, value);
  }
  // Session mode hands the server exactly the client's startup packet; in
  // transaction mode servers are shared, so the client's parameters become
  // settings applied to whichever server it gets.
  if (transaction_mode()) {
    state_.emplace(client_parameters);
  } else {
    request_.parameters = std::move(client_parameters);
  }
  request_.cached_signature = request_.signature();
  server_pump_done_.emplace(client_.socket().get_executor(), asio::steady_timer::time_point::max());
  if (!co_await attach_server()) co_return false;

  // Tell the client what a server would: parameters, its cancel key, ready.
  // In session mode the process id is the real server's; in transaction
  // mode the client has no one server, so it gets a number of pgstash's.
  const std::uint32_t pid =
      transaction_mode() ? wire::random_uint32() & 0x7fffffff : server_->process_id();
  cancel_key_ = std::make_pair(pid, wire::random_uint32());
  ctx_.register_cancel_key(*cancel_key_, self);
  std::string hello;
  wire::write_authentication_ok(hello);
  for (const auto& [name, value] : *server_->parameters())
    wire::write_parameter_status(hello, name, value);
  reported_ = server_->parameters();
  wire::write_backend_key_data(hello, cancel_key_->first, cancel_key_->second);
  wire::write_ready_for_query(hello, 'I');
  co_await write_to_client(hello);
  if (spdlog::should_log(spdlog::level::debug)) spdlog::debug("{} logged in", prefix());
  co_return true;
}

awaitable<void> client_session::leave() {
  if (!end_sqlstate_.empty()) co_await fail(end_sqlstate_, end_message_);
  client_gone_ = true;
  client_.close();
  if (server_pump_running_) {
    net::deadline give_up(client_.socket().get_executor(),
                           std::chrono::milliseconds(ctx_.cfg.pool.cleanup_timeout_ms), [this] {
                             spdlog::warn("{} server connection did not come back clean in time: closing it",
                                          prefix());
                             broken_ = true;
                             if (server_) server_->stream().close();
                           });
    co_await cleanup_step();
    while (server_pump_running_) {
      error_code ec;
      co_await server_pump_done_->async_wait(on_error(ec));
    }
  }
  if (server_) release_server(clean_ && !broken_);
  ctx_.unregister_cancel_key(*cancel_key_);
  if (spdlog::should_log(spdlog::level::debug)) spdlog::debug("{} closed", prefix());
}

awaitable<bool> client_session::attach_server() {
  std::string refusal;
  try {
    server_ = co_await ctx_.pool.acquire(request_);
  } catch (const pool::server_error& e) {
    spdlog::info("{} no server connection: {}", prefix(), e.what());
    refusal = e.error_response();
  }
  if (!server_) {
    co_await write_to_client(refusal);
    client_.close();
    co_return false;
  }
  if (spdlog::should_log(spdlog::level::trace))
    spdlog::trace("{} attached s:{}", prefix(), server_->id());
  broken_ = clean_ = reset_sent_ = cancel_sent_ = false;
  if (!state_) co_return true;
  state_->take_resync();  // the sync below covers it
  const std::string sql = state_->sync_settings_sql(server_->state());
  if (sql.empty()) co_return true;
  std::string problem;
  try {
    if (auto error = co_await server_->run_internal(sql)) problem = *error;
  } catch (const pool::server_error& e) {
    problem = e.what();
  }
  if (problem.empty()) {
    // Reported settings the client was last told otherwise (a RESET it ran
    // on another connection, say) are reported again, as a server would.
    if (!reported_) co_return true;  // at login the hello says it all
    std::string statuses;
    if (reported_ != server_->parameters()) {
      for (const auto& [name, value] : *server_->parameters()) {
        auto told = reported_->find(name);
        if (told != reported_->end() && told->second == value) continue;
        wire::write_parameter_status(statuses, name, value);
      }
      reported_ = server_->parameters();
    }
    if (!statuses.empty()) co_await write_to_client(statuses);
    co_return true;
  }
  release_server(false);
  co_await fail("08006", "pgstash could not restore this session's settings on a server connection: " + problem);
  co_return false;
}

void client_session::start_server_pump() {
  server_pump_running_ = true;
  auto self = shared_from_this();
  asio::co_spawn(client_.socket().get_executor(), server_loop(self), [self](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("{} server pump failed: {}", self->prefix(), ex.what());
    }
  });
}

void client_session::release_server(bool reusable) {
  if (!server_) return;
  if (spdlog::should_log(spdlog::level::trace))
    spdlog::trace("{} released s:{}{}", prefix(), server_->id(), reusable ? "" : " (closed)");
  ctx_.pool.release(std::move(server_), reusable);
  server_.reset();
  unnamed_statement_.reset();
  portals_.clear();
  deallocating_portals_.clear();
}

bool client_session::server_idle() const {
  // Inside an extended-protocol batch the server waits for its Sync, and
  // the batch's implicit transaction is its alone.
  return transaction_mode() && queue_.empty() && tx_status_ == 'I' && !copy_in_ &&
         !batch_started_ && !(state_ && state_->pinned()) && !client_gone_;
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
  ++cancels_in_flight_;
  co_await pool::send_cancel(server_->endpoint(), server_->process_id(), server_->secret_key(),
                             std::chrono::milliseconds(ctx_.cfg.server.connect_timeout_ms));
  --cancels_in_flight_;
  if (client_gone_) {
    co_await cleanup_step();
  } else {
    wake_pump_to_release();
  }
  (void)self;  // keeps the session alive while the cancel is out
}

void client_session::wake_pump_to_release() {
  if (!server_pump_running_ || !release_deferred_ || !server_idle() || !nothing_in_flight())
    return;
  error_code ignored;
  server_->stream().socket().cancel(ignored);
}

bool client_session::nothing_in_flight() const {
  return writes_to_server_ == 0 && cancels_in_flight_ == 0;
}

client_session::analysis_ptr client_session::analyze(std::string_view sql) {
  // Analyses are memoized per worker thread, so no lock is taken.
  thread_local invalidation::analysis_cache cache(ctx_.cfg.limits.analysis_cache_entries);
  analysis_ptr a = cache.get(sql);
  return a->any_effect() ? a : nullptr;
}

void client_session::arm_idle_timer() {
  // Idle clients are bounded by limits.client_idle_timeout_ms, idle
  // transactions by limits.idle_transaction_timeout_ms.
  std::uint32_t limit = ctx_.cfg.limits.client_idle_timeout_ms;
  const char* sqlstate = "57P05";
  if (tx_status_ != 'I' && ctx_.cfg.limits.idle_transaction_timeout_ms > 0) {
    limit = ctx_.cfg.limits.idle_transaction_timeout_ms;
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

void client_session::expect(kind what, analysis_ptr analysis) {
  queue_.push(expected_response::client(what, std::move(analysis)));
}

void client_session::expect_synthetic(std::string bytes) {
  queue_.push(expected_response::synthetic(std::move(bytes)));
}

bool client_session::ensure_prepared(const statement_map::statement& stmt) {
  const statement_map::preparation p =
      statement_map::prepare_on(stmt, server_->state().prepared, statement_clock());
  if (p.evicted) {
    wire::write_close(out_, 'S', *p.evicted);
    queue_.push(expected_response::internal(kind::close));
  }
  if (p.replace) {
    wire::write_close(out_, 'S', stmt.server_name);
    queue_.push(expected_response::internal(kind::close));
  }
  if (!p.parse) return false;
  out_ += stmt.parse_frame;
  queue_.push(expected_response::parse_of(stmt.server_name, {}, false));
  return true;
}

bool client_session::must_hold(char tag, std::string_view head) const {
  if (!transaction_mode()) return false;
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::query:
    case frontend_tag::parse:
    case frontend_tag::describe:
    case frontend_tag::close:
    case frontend_tag::execute:
      return true;
    case frontend_tag::bind: {
      // Its parameters may stream through unless pgstash must rename the
      // statement or read what it runs.
      auto names = bind_names(head.substr(5));
      if (!names) return true;
      if (names->second.empty()) return unnamed_deallocates_ || unnamed_statement_;
      return statements_.contains(names->second);
    }
    default:
      return false;
  }
}

void client_session::expect_for_tag(char tag) {
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::query:
    case frontend_tag::function_call:
      expect(kind::query);
      break;
    case frontend_tag::parse:
      expect(kind::parse);
      break;
    case frontend_tag::bind:
      expect(kind::bind);
      break;
    case frontend_tag::describe:
      expect(kind::describe);
      break;
    case frontend_tag::execute:
      expect(kind::execute);
      break;
    case frontend_tag::close:
      expect(kind::close);
      break;
    case frontend_tag::sync:
      expect(kind::sync);
      break;
    case frontend_tag::copy_done:
    case frontend_tag::copy_fail:
      copy_in_ = false;
      break;
    default:
      break;
  }
}

void client_session::note_batch(char tag) {
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::parse:
    case frontend_tag::bind:
    case frontend_tag::describe:
    case frontend_tag::execute:
    case frontend_tag::close:
      batch_started_ = true;
      break;
    case frontend_tag::sync:
    case frontend_tag::query:
      batch_started_ = false;
      break;
    default:
      break;
  }
}

void client_session::record_replay(char tag, std::string_view frame) {
  if (!replay_recording_) return;
  if (tag == tag_of(frontend_tag::bind)) return;  // recorded by the Bind itself
  const bool part_of_batch = tag == tag_of(frontend_tag::describe) ||
                             tag == tag_of(frontend_tag::execute) ||
                             tag == tag_of(frontend_tag::sync);
  if (!part_of_batch || replay_.size() + frame.size() > client_.capacity()) {
    replay_recording_ = false;
    replay_.clear();
    queue_.forget_replay();
    return;
  }
  replay_ += frame;
  if (tag == tag_of(frontend_tag::sync)) replay_recording_ = false;
}

client_session::analysis_ptr client_session::analyze_query(std::string_view body) {
  wire::query_message q;
  if (!state_ || wire::parse_query(body, q)) return nullptr;
  return analyze(q.sql);
}

const std::string* client_session::deallocated_protocol_statement(const analysis_ptr& analysis) const {
  if (!analysis || analysis->statements.size() != 1) return nullptr;
  const std::string& name = analysis->statements[0].deallocate_name;
  return !name.empty() && statements_.contains(name) ? &name : nullptr;
}

void client_session::forward_as_is(char tag, std::string_view frame) {
  out_ += frame;
  expect_for_tag(tag);
}

client_session::frame_plan client_session::plan_frame(char tag, std::string_view frame) {
  const std::string_view body = frame.substr(5);
  const auto t = static_cast<frontend_tag>(tag);
  if (t == frontend_tag::terminate) return {frame_route::end, nullptr};
  if (skipping_) {
    if (t != frontend_tag::sync) return {frame_route::skip, nullptr};
    return {server_ ? frame_route::to_server : frame_route::answer_locally, nullptr};
  }
  const frame_plan to_server{frame_route::to_server, nullptr};
  const frame_plan local{frame_route::answer_locally, nullptr};
  if (t == frontend_tag::flush || t == frontend_tag::sync) return server_ ? to_server : local;
  if (!transaction_mode()) return to_server;
  switch (t) {
    case frontend_tag::query: {
      analysis_ptr analysis = analyze_query(body);
      // The client's name for a protocol-level statement exists only in
      // pgstash (the server knows it as pgstash_<hash>).
      const bool local_answer = deallocated_protocol_statement(analysis) != nullptr;
      return {local_answer ? frame_route::answer_locally : frame_route::to_server, std::move(analysis)};
    }
    case frontend_tag::parse: {
      wire::parse_message parse;
      if (wire::parse_parse(body, parse)) return to_server;
      analysis_ptr analysis = analyze(parse.query);
      // PostgreSQL refuses a name already in use. Outside a transaction, at
      // the start of a batch, pgstash can answer exactly as it would.
      const bool local_answer =
          parse.statement.empty()
              ? deallocated_protocol_statement(analysis) != nullptr
              : statements_.contains(parse.statement) && tx_status_ == 'I' && !batch_started_;
      return {local_answer ? frame_route::answer_locally : frame_route::to_server, std::move(analysis)};
    }
    case frontend_tag::bind: {
      wire::bind_message bind;
      if (wire::parse_bind(body, bind)) return to_server;
      return bind.statement.empty() && unnamed_deallocates_ ? local : to_server;
    }
    case frontend_tag::describe: {
      wire::describe_message d;
      if (wire::parse_describe(body, d)) return to_server;
      const bool local_answer = d.target == 'S' ? d.name.empty() && unnamed_deallocates_
                                                : deallocating_portals_.count(std::string(d.name)) != 0;
      return local_answer ? local : to_server;
    }
    case frontend_tag::execute: {
      wire::execute_message e;
      if (wire::parse_execute(body, e)) return to_server;
      return deallocating_portals_.count(std::string(e.portal)) != 0 ? local : to_server;
    }
    case frontend_tag::close: {
      wire::close_message c;
      if (wire::parse_close(body, c)) return to_server;
      // Server-side statements are shared and kept in the LRU; the
      // client's name simply goes away.
      const bool local_answer = c.target == 'S' ? !c.name.empty()
                                                : deallocating_portals_.count(std::string(c.name)) != 0;
      return local_answer ? local : to_server;
    }
    default:
      return to_server;
  }
}

bool client_session::on_client_frame(char tag, std::string_view frame, const frame_plan& plan) {
  idle_timer_.reset();
  switch (plan.route) {
    case frame_route::end:
      return false;
    case frame_route::skip:
      return true;
    default:
      break;
  }
  // A RESET or DISCARD ALL earlier on this same server connection left it
  // at its own defaults where the client has startup values: restore them
  // before the client's next transaction.
  if (server_ && state_ && queue_.empty() && tx_status_ == 'I' && !batch_started_ &&
      plan.route == frame_route::to_server && tag != tag_of(frontend_tag::flush) &&
      tag != tag_of(frontend_tag::sync) && state_->take_resync()) {
    const std::string sql = state_->sync_settings_sql(server_->state());
    if (!sql.empty()) {
      wire::write_query(out_, sql);
      queue_.push(expected_response::internal(kind::query));
    }
  }
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::query:
      on_query(frame, plan);
      break;
    case frontend_tag::parse:
      on_parse(frame, plan);
      break;
    case frontend_tag::bind:
      on_bind(frame, plan);
      break;
    case frontend_tag::describe:
      on_describe(frame, plan);
      break;
    case frontend_tag::execute:
      on_execute(frame, plan);
      break;
    case frontend_tag::close:
      on_close(frame, plan);
      break;
    case frontend_tag::sync:
      on_sync(frame, plan);
      break;
    case frontend_tag::flush:
      if (server_) out_ += frame;
      break;
    default:
      // FunctionCall, COPY messages and anything else.
      forward_as_is(tag, frame);
      break;
  }
  record_replay(tag, frame);
  note_batch(tag);
  return true;
}

void client_session::on_query(std::string_view frame, const frame_plan& plan) {
  if (plan.route == frame_route::answer_locally) {
    statements_.erase(*deallocated_protocol_statement(plan.analysis));
    std::string answer;
    wire::write_command_complete(answer, "DEALLOCATE");
    wire::write_ready_for_query(answer, tx_status_);
    expect_synthetic(std::move(answer));
    return;
  }
  sync_sql_prepared(plan.analysis, false);
  out_ += frame;
  expect(kind::query, plan.analysis);
}

void client_session::on_parse(std::string_view frame, const frame_plan& plan) {
  wire::parse_message parse;
  if (!transaction_mode() || wire::parse_parse(frame.substr(5), parse)) {
    forward_as_is(tag_of(frontend_tag::parse), frame);
    return;
  }
  if (parse.statement.empty()) {
    if (plan.route == frame_route::answer_locally) {
      unnamed_deallocates_ = *deallocated_protocol_statement(plan.analysis);
      expect_synthetic(empty_message(backend_tag::parse_complete));
      return;
    }
    unnamed_deallocates_.reset();
    unnamed_statement_ = plan.analysis;
    forward_as_is(tag_of(frontend_tag::parse), frame);
    return;
  }
  if (plan.route == frame_route::answer_locally) {
    std::string error;
    wire::write_error(error, "ERROR", "42P05",
                      "prepared statement \"" + std::string(parse.statement) + "\" already exists");
    fail_batch(std::move(error));
    return;
  }
  // The client's own Parse always reaches the server (unless a copy as
  // recent is there already): it must see the tables and types as they
  // are now.
  const statement_map::statement& stmt = statements_.define(parse, plan.analysis, statement_clock());
  if (ensure_prepared(stmt)) {
    queue_.back().forward = true;
    queue_.back().client_statement = std::string(parse.statement);
  } else {
    expect_synthetic(empty_message(backend_tag::parse_complete));
  }
}

void client_session::on_bind(std::string_view frame, const frame_plan& plan) {
  wire::bind_message bind;
  if (!transaction_mode() || wire::parse_bind(frame.substr(5), bind)) {
    forward_as_is(tag_of(frontend_tag::bind), frame);
    return;
  }
  const std::string portal(bind.portal);
  if (plan.route == frame_route::answer_locally) {
    deallocating_portals_[portal] = *unnamed_deallocates_;
    expect_synthetic(empty_message(backend_tag::bind_complete));
    return;
  }
  deallocating_portals_.erase(portal);
  const statement_map::statement* stmt =
      bind.statement.empty() ? nullptr : statements_.find(bind.statement);
  const analysis_ptr analysis =
      stmt ? stmt->analysis : bind.statement.empty() ? unnamed_statement_ : nullptr;
  portals_[portal] = analysis;
  sync_sql_prepared(analysis, true);
  if (!stmt) {
    forward_as_is(tag_of(frontend_tag::bind), frame);
    return;
  }
  ensure_prepared(*stmt);
  // Outside a transaction, with nothing else in flight, this batch can be
  // replayed if a DDL change makes the server refuse the cached plan.
  const bool replayable = queue_.empty() && tx_status_ == 'I' && !replay_pending_;
  const std::size_t at = out_.size();
  write_renamed(out_, frame, 1, stmt->server_name);
  expect(kind::bind);
  if (replayable) {
    replay_.assign(out_, at, std::string::npos);
    replay_recording_ = true;
    queue_.back().client_statement = std::string(bind.statement);
  }
}

void client_session::on_describe(std::string_view frame, const frame_plan& plan) {
  wire::describe_message d;
  if (!transaction_mode() || wire::parse_describe(frame.substr(5), d)) {
    forward_as_is(tag_of(frontend_tag::describe), frame);
    return;
  }
  if (plan.route == frame_route::answer_locally) {
    // DEALLOCATE takes no parameters and returns no rows.
    std::string answer;
    if (d.target == 'S') wire::write_no_parameters(answer);
    wire::write_empty(answer, backend_tag::no_data);
    expect_synthetic(std::move(answer));
    return;
  }
  const statement_map::statement* stmt =
      d.target == 'S' && !d.name.empty() ? statements_.find(d.name) : nullptr;
  if (!stmt) {
    forward_as_is(tag_of(frontend_tag::describe), frame);
    return;
  }
  ensure_prepared(*stmt);
  wire::write_describe(out_, 'S', stmt->server_name);
  expect(kind::describe);
}

void client_session::on_execute(std::string_view frame, const frame_plan& plan) {
  wire::execute_message e;
  if (!transaction_mode() || wire::parse_execute(frame.substr(5), e)) {
    forward_as_is(tag_of(frontend_tag::execute), frame);
    return;
  }
  const std::string portal(e.portal);
  if (plan.route == frame_route::answer_locally) {
    const std::string name = deallocating_portals_.at(portal);
    if (!statements_.erase(name)) {
      std::string error;
      wire::write_error(error, "ERROR", "26000", "prepared statement \"" + name + "\" does not exist");
      fail_batch(std::move(error));
      return;
    }
    std::string answer;
    wire::write_command_complete(answer, "DEALLOCATE");
    expect_synthetic(std::move(answer));
    return;
  }
  auto it = portals_.find(portal);
  out_ += frame;
  expect(kind::execute, it == portals_.end() ? nullptr : it->second);
}

void client_session::on_close(std::string_view frame, const frame_plan& plan) {
  wire::close_message c;
  if (plan.route != frame_route::answer_locally || wire::parse_close(frame.substr(5), c)) {
    forward_as_is(tag_of(frontend_tag::close), frame);
    return;
  }
  if (c.target == 'S') {
    statements_.erase(c.name);
  } else {
    deallocating_portals_.erase(std::string(c.name));
  }
  expect_synthetic(empty_message(backend_tag::close_complete));
}

void client_session::on_sync(std::string_view frame, const frame_plan& plan) {
  skipping_ = false;
  if (plan.route == frame_route::answer_locally) {
    // Nothing of this batch reached a server.
    std::string ready;
    wire::write_ready_for_query(ready, tx_status_);
    expect_synthetic(std::move(ready));
    return;
  }
  forward_as_is(tag_of(frontend_tag::sync), frame);
}

void client_session::fail_batch(std::string error) {
  expect_synthetic(std::move(error));
  skipping_ = true;
}

void client_session::sync_sql_prepared(const analysis_ptr& analysis, bool extended) {
  if (!analysis || !state_) return;
  std::vector<std::string> statements;
  for (const auto& effects : analysis->statements) {
    auto more = state_->sync_prepared_statements(effects, server_->state());
    statements.insert(statements.end(), more.begin(), more.end());
  }
  if (statements.empty()) return;
  if (!extended) {
    std::string sql;
    for (const auto& statement : statements) sql += statement + ";";
    wire::write_query(out_, sql);
    queue_.push(expected_response::internal(kind::query));
    return;
  }
  for (const auto& statement : statements) {
    wire::write_parse(out_, k_internal_name, statement);
    wire::write_bind(out_, k_internal_name, k_internal_name);
    wire::write_execute(out_, k_internal_name);
    wire::write_close(out_, 'P', k_internal_name);
    wire::write_close(out_, 'S', k_internal_name);
    for (kind k : {kind::parse, kind::bind, kind::execute, kind::close, kind::close})
      queue_.push(expected_response::internal(k));
  }
}

awaitable<void> client_session::flush_to_server() {
  if (out_.empty() || !server_) co_return;
  std::string batch;
  batch.swap(out_);
  co_await send_to_server(batch);
  if (writes_to_server_ > 0) co_return;
  if (!server_pump_running_) {
    // The server pump ended while this write was in flight; the connection
    // is ours to give back now.
    release_server(false);
  } else {
    wake_pump_to_release();
  }
}

awaitable<void> client_session::client_loop() {
  const std::uint32_t max = ctx_.cfg.limits.max_message_size;
  std::uint64_t streaming = 0;  // bytes of a frame passing through without being held
  bool dropping = false;        // ...and skipped, being part of a failed batch
  for (;;) {
    std::string_view in = client_.buffered();
    std::size_t pos = 0;
    bool stop = false;
    bool hold_large = false;  // the next frame is larger than the buffer and must be held whole
    while (pos < in.size() && !stop) {
      if (streaming > 0) {
        const std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(streaming, in.size() - pos));
        if (!dropping) out_.append(in.substr(pos, n));
        pos += n;
        streaming -= n;
        if (out_.size() >= client_.capacity()) co_await flush_to_server();
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
      if (size > client_.capacity()) {
        if (must_hold(tag, in.substr(pos))) {
          hold_large = true;
          break;
        }
        // Frames pgstash need not read stream through by length.
        dropping = skipping_;
        if (!dropping) {
          if (!server_) {
            if (!co_await attach_server()) co_return;
            start_server_pump();
          }
          if (tag == tag_of(frontend_tag::bind) && transaction_mode()) {
            if (auto names = bind_names(in.substr(pos + 5))) portals_.erase(std::string(names->first));
          }
          expect_for_tag(tag);
          note_batch(tag);
        }
        streaming = size;
        continue;
      }
      if (in.size() - pos < size) break;
      const std::string_view frame = in.substr(pos, size);
      const frame_plan plan = plan_frame(tag, frame);
      if (plan.route == frame_route::to_server && !server_) {
        if (!co_await attach_server()) co_return;
        start_server_pump();
      }
      if (!on_client_frame(tag, frame, plan)) stop = true;
      pos += size;
      if (out_.size() >= client_.capacity()) co_await flush_to_server();
    }
    co_await flush_to_server();
    client_.consume(pos);
    {
      // Answers pgstash made up, once everything before them is answered.
      std::string synthetic;
      queue_.take_synthetic(synthetic);
      if (!synthetic.empty()) co_await write_to_client(synthetic);
      if (server_pump_running_ && server_idle() && !stop && !hold_large) {
        // Attached for nothing the server had to answer: give it back.
        release_deferred_ = true;
        wake_pump_to_release();
      }
    }
    if (stop || broken_) co_return;

    if (hold_large) {
      std::string large;
      if (!co_await read_whole_frame(large, max)) co_return;
      const frame_plan plan = plan_frame(large[0], large);
      if (plan.route == frame_route::to_server && !server_) {
        if (!co_await attach_server()) co_return;
        start_server_pump();
      }
      const bool go_on = on_client_frame(large[0], large, plan);
      std::string().swap(large);
      co_await flush_to_server();
      if (!go_on || broken_) co_return;
      continue;
    }

    client_.compact();
    // Between transactions a client holds no server; let go of its buffers.
    if (!server_) {
      client_.shrink();
      queue_.shrink();
    }
    // The idle clock runs only while nothing is outstanding; the server
    // pump starts it again when the last answer arrives.
    if (queue_.empty()) arm_idle_timer();
    error_code ec;
    co_await client_.read_more(ec);
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
        broken_ = true;
        server_->stream().close();
      }
      co_return;
    }
  }
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
    co_await client_.read_more(ec);
    if (ec) co_return false;
  }
  co_return true;
}

bool client_session::on_server_error(std::optional<std::string_view> body) {
  if (queue_.empty()) {
    error_in_cycle_ = true;
    return false;
  }
  expected_response& head = queue_.front();
  if (head.what == kind::query) {
    error_in_cycle_ = true;
    return false;  // ends at its ReadyForQuery
  }
  if (head.what == kind::parse && !head.server_statement.empty()) {
    server_->state().prepared.erase(head.server_statement);
    if (!head.client_statement.empty()) statements_.erase(head.client_statement);
  }
  bool replay = false;
  if (head.what == kind::bind && !head.client_statement.empty() && body && !replay_recording_ &&
      !replay_.empty()) {
    // After DDL a prepared statement's result type may change; PostgreSQL
    // then refuses the cached plan. Prepare it afresh and run the batch
    // again, once, instead of failing the client.
    wire::error_fields fields;
    replay = !wire::parse_error_fields(*body, fields) && fields.get('C') == "0A000" &&
             fields.get('M').value_or("").find("cached plan must not change result type") !=
                 std::string_view::npos &&
             statements_.contains(head.client_statement);
    // A copy: the client may close the statement before the replay.
    if (replay) replay_statement_ = *statements_.find(head.client_statement);
  }
  if (!replay) {
    error_in_cycle_ = true;
    replay_.clear();
  }
  // The server skips everything up to the next Sync; if the client has not
  // sent it yet, what it sends until then gets no answer either.
  if (!queue_.skip_to_sync()) skipping_ = true;
  if (replay) {
    replay_pending_ = true;
    queue_.front().forward = false;  // the failed batch's ReadyForQuery
  }
  return replay;
}

void client_session::start_replay() {
  replay_pending_ = false;
  const statement_map::statement* stmt = &replay_statement_;
  spdlog::info("{} statement's result type changed: preparing it again and retrying once",
               prefix());
  wire::write_close(to_server_, 'S', stmt->server_name);
  queue_.push(expected_response::internal(kind::close));
  to_server_ += stmt->parse_frame;
  server_->state().prepared.insert(stmt->server_name, statement_clock());
  queue_.push(expected_response::parse_of(stmt->server_name, {}, false));
  to_server_ += replay_;
  // Expect what the batch's frames will produce, without recording again.
  std::string_view batch = replay_;
  while (batch.size() >= 5) {
    wire::decoded_frame h = wire::decode_header(batch, wire::phase::normal, client_.capacity());
    const char tag = h.header.tag;
    if (tag == tag_of(frontend_tag::execute)) {
      wire::execute_message e;
      analysis_ptr analysis;
      if (!wire::parse_execute(batch.substr(5, h.header.frame_size() - 5), e)) {
        auto it = portals_.find(std::string(e.portal));
        if (it != portals_.end()) analysis = it->second;
      }
      expect(kind::execute, std::move(analysis));
    } else {
      expect_for_tag(tag);
    }
    batch.remove_prefix(h.header.frame_size());
  }
  replay_.clear();
}

void client_session::on_command_complete(std::string_view tag_text) {
  expected_response& head = queue_.front();
  if (!state_ || !head.analysis) return;
  const std::size_t index = head.statements_done++;
  if (index >= head.analysis->statements.size()) return;
  const auto& effects = head.analysis->statements[index];
  state_->statement_completed(effects, server_->state());
  // Both also drop the client's protocol-level statements.
  if (effects.deallocate_all || effects.discard_all) statements_.clear();
  using tx = invalidation::transaction_effect;
  switch (effects.transaction) {
    case tx::commit:
      // COMMIT of a failed transaction reports ROLLBACK.
      if (tag_text.starts_with("COMMIT")) {
        state_->transaction_committed(server_->state());
      } else {
        state_->transaction_rolled_back();
      }
      break;
    case tx::rollback:
    case tx::prepare_transaction:
      state_->transaction_rolled_back();
      break;
    case tx::savepoint:
      state_->savepoint_created(effects.savepoint_name);
      break;
    case tx::release_savepoint:
      state_->savepoint_released(effects.savepoint_name);
      break;
    case tx::rollback_to_savepoint:
      state_->savepoint_rolled_back(effects.savepoint_name);
      break;
    default:
      break;
  }
}

void client_session::on_ready_for_query(char status) {
  tx_status_ = status;
  ready_seen_ = true;
  copy_in_ = false;
  if (status == 'I') {
    // An autocommit statement or implicit transaction ended: it committed
    // unless something failed.
    if (state_) {
      if (error_in_cycle_) {
        state_->transaction_rolled_back();
      } else {
        state_->transaction_committed(server_->state());
      }
    }
    error_in_cycle_ = false;
    portals_.clear();
  }
  if (client_gone_) cleanup_due_ = true;
  if (queue_.empty()) arm_idle_timer();
}

client_session::frame_action client_session::on_server_frame(char tag,
                                                             std::optional<std::string_view> body) {
  const bool swallowing = !queue_.empty() && !queue_.front().forward;
  switch (static_cast<backend_tag>(tag)) {
    case backend_tag::parameter_status: {
      if (body) {
        if (server_->note_parameter_status(*body)) reported_ = server_->parameters();
      }
      // Even from pgstash's own statements: a setting pgstash restores is
      // one the client must be told about.
      return frame_action::forward;
    }
    case backend_tag::notice_response:
    case backend_tag::notification_response:
      return swallowing ? frame_action::drop : frame_action::forward;
    case backend_tag::error_response:
      return on_server_error(body) ? frame_action::drop : frame_action::forward;
    default:
      break;
  }
  if (queue_.empty()) return frame_action::forward;  // unasked, e.g. a FATAL before closing
  expected_response& head = queue_.front();
  const frame_action action = head.forward ? frame_action::forward : frame_action::drop;
  switch (static_cast<backend_tag>(tag)) {
    case backend_tag::ready_for_query: {
      wire::ready_for_query rfq;
      if (!body || wire::parse_ready_for_query(*body, rfq)) {
        broken_ = true;
        return frame_action::stop;
      }
      // It answers the first Query or Sync: requests before that one were
      // skipped by the server after an error.
      while (!queue_.empty() && !queue_.front().completed_by(tag)) queue_.pop();
      frame_action answer = frame_action::forward;
      if (!queue_.empty()) {
        answer = queue_.front().forward ? frame_action::forward : frame_action::drop;
        queue_.pop();
      }
      if (replay_pending_ && answer == frame_action::drop) {
        start_replay();
        return answer;
      }
      if (queue_.empty()) replay_.clear();
      on_ready_for_query(rfq.status);
      return answer;
    }
    case backend_tag::command_complete:
      if (head.what == kind::query || head.what == kind::execute)
        on_command_complete(body ? *body : std::string_view());
      break;
    case backend_tag::copy_in_response:
      copy_in_ = true;
      break;
    case backend_tag::copy_both_response:
      broken_ = true;  // replication streams are never handed to another client
      break;
    default:
      break;
  }
  if (head.completed_by(tag)) queue_.pop();
  return action;
}

awaitable<void> client_session::server_loop(std::shared_ptr<client_session> self) {
  net::pg_stream& from = server_->stream();
  const std::uint32_t max = ctx_.cfg.limits.max_message_size;
  std::uint64_t streaming = 0;
  bool discarding = false;  // the frame being streamed is dropped, not forwarded
  bool released = false;
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
        broken_ = true;
        stop = true;
        break;
      }
      const char tag = h.header.tag;
      const std::size_t size = h.header.frame_size();
      // Only frames whose content matters are held whole; DataRow, CopyData
      // and the like stream through by length.
      const bool hold = tag == tag_of(backend_tag::ready_for_query) ||
                        tag == tag_of(backend_tag::parameter_status) ||
                        tag == tag_of(backend_tag::command_complete) ||
                        tag == tag_of(backend_tag::error_response);
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
        queue_.take_synthetic(synthetic);
        if (!synthetic.empty()) {
          co_await write_to_client(in.substr(flushed, pos - flushed));
          co_await write_to_client(synthetic);
          synthetic.clear();
          flushed = pos;
        }
      }
      const frame_action action = on_server_frame(tag, body);
      if (action == frame_action::stop) {
        stop = true;
        break;
      }
      if (action == frame_action::drop) {
        co_await write_to_client(in.substr(flushed, pos - flushed));
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
    queue_.take_synthetic(synthetic);
    if (!synthetic.empty()) co_await write_to_client(synthetic);
    from.consume(pos);
    if (stop) break;
    if (!to_server_.empty()) {
      std::string replay;
      replay.swap(to_server_);
      co_await send_to_server(replay);
    }
    if (client_gone_ && cleanup_due_) {
      cleanup_due_ = false;
      co_await cleanup_step();
      if (clean_ || broken_) break;
    }
    if (ready_seen_ && server_idle() && streaming == 0) {
      ready_seen_ = false;
      if (nothing_in_flight()) {
        released = true;
        break;
      }
      release_deferred_ = true;
    }
    if (client_gone_ && (clean_ || broken_)) break;
    if (release_deferred_ && server_idle() && nothing_in_flight() && streaming == 0) {
      released = true;
      break;
    }
    from.compact();
    error_code ec;
    co_await from.read_more(ec);
    if (ec == asio::error::operation_aborted && client_gone_ && clean_) break;
    if (ec == asio::error::operation_aborted && release_deferred_) {
      if (server_idle() && nothing_in_flight() && from.buffered().empty()) {
        released = true;
        break;
      }
      release_deferred_ = server_idle();
      continue;
    }
    if (ec) {
      broken_ = true;
      break;
    }
  }
  server_pump_running_ = false;
  release_deferred_ = false;
  if (broken_ && !client_gone_) {
    // The client's server connection failed under it: its session state
    // is lost, so the client goes too, as if the server had closed.
    if (server_protocol_error_) {
      co_await fail("08P01", "invalid message from server: " + server_protocol_error_.message());
    } else {
      client_.close();
    }
  }
  if (writes_to_server_ == 0) release_server(released || (clean_ && !broken_));
  server_pump_done_->cancel();
  (void)self;  // keeps the session alive while the pump runs
}

awaitable<void> client_session::send_to_server(std::string_view bytes) {
  error_code ec;
  ++writes_to_server_;
  co_await server_->stream().write(bytes, ec);
  --writes_to_server_;
  if (ec) {
    broken_ = true;
    server_->stream().close();
  }
}

awaitable<void> client_session::cleanup_step() {
  // A cancel on its way resumes the cleanup once the server has it.
  if (!server_pump_running_ || broken_ || cancels_in_flight_ > 0) co_return;
  std::string out;
  if (copy_in_) {
    wire::write_copy_fail(out, "client disconnected");
    copy_in_ = false;
  }
  // Extended-protocol messages without their Sync: send one.
  if (batch_started_) {
    wire::write_sync(out);
    queue_.push(expected_response::internal(kind::sync));
    batch_started_ = skipping_ = false;
  }
  if (!out.empty()) co_await send_to_server(out);
  if (!queue_.empty()) {
    if (!cancel_sent_ && server_) {
      cancel_sent_ = true;
      co_await cancel_on_server(shared_from_this());
    }
    co_return;  // the next ReadyForQuery brings us back here
  }
  if (tx_status_ != 'I') {
    out.clear();
    wire::write_query(out, "ROLLBACK");
    queue_.push(expected_response::internal(kind::query));
    co_await send_to_server(out);
    co_return;
  }
  const bool needs_reset = !transaction_mode() || (state_ && state_->pinned());
  if (needs_reset && !reset_sent_ && !ctx_.cfg.pool.server_reset_query.empty()) {
    reset_sent_ = true;
    out.clear();
    wire::write_query(out, ctx_.cfg.pool.server_reset_query);
    queue_.push(expected_response::internal(kind::query));
    co_await send_to_server(out);
    co_return;
  }
  if (reset_sent_) server_->state().clear();
  clean_ = true;
  // The server pump may be waiting on a server that has nothing more to
  // say: wake it so it gives the connection back.
  error_code ignored;
  server_->stream().socket().cancel(ignored);
}

}  // namespace pgstash::proxy
