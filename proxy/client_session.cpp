// The relay stages of a client session: leasing server connections,
// pumping frames both ways, following the responses the server owes, and
// bringing a server connection back clean when the client leaves.
#include "proxy/client_session.hpp"

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdio>

#include "invalidation/analysis_cache.hpp"
#include "pool/deadline.hpp"
#include "proxy/proxy_context.hpp"
#include "wire/backend.hpp"
#include "wire/errc.hpp"
#include "wire/message_writer.hpp"
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
  wire::message_writer w(out);
  w.begin(tag);
  w.finish();
  return out;
}

// The server-side name for a statement: the same text and parameter types
// from any client share one prepared statement per server connection.
std::string server_statement_name(const wire::parse_message& parse) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_128bits_reset(state);
  XXH3_128bits_update(state, parse.query.data(), parse.query.size());
  for (std::uint32_t oid : parse.parameter_types) XXH3_128bits_update(state, &oid, sizeof oid);
  XXH128_hash_t h = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  char name[48];
  std::snprintf(name, sizeof name, "pgstash_%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return name;
}

void write_parse(std::string& out, std::string_view name, const wire::parse_message& parse) {
  wire::message_writer w(out);
  w.begin(frontend_tag::parse);
  w.put_cstr(name);
  w.put_cstr(parse.query);
  w.put_int16(static_cast<std::int16_t>(parse.parameter_types.size()));
  for (std::uint32_t oid : parse.parameter_types) w.put_uint32(oid);
  w.finish();
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
    pool::deadline login_timeout(client_.socket().get_executor(),
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
      transaction_mode() ? pool::random_uint32() & 0x7fffffff : server_->process_id();
  cancel_key_ = std::make_pair(pid, pool::random_uint32());
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
    pool::deadline give_up(client_.socket().get_executor(),
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
}

bool client_session::server_idle() const {
  return transaction_mode() && queue_.empty() && tx_status_ == 'I' && !copy_in_ &&
         !(state_ && state_->pinned()) && !client_gone_;
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

void client_session::expect(expected::kind what, analysis_ptr analysis) {
  queue_.push_back({what, true, {}, std::move(analysis), 0, {}, {}});
}

void client_session::expect_synthetic(std::string bytes) {
  queue_.push_back({expected::kind::synthetic, true, std::move(bytes), nullptr, 0, {}, {}});
}

void client_session::take_synthetic(std::string& out) {
  while (!queue_.empty() && queue_.front().what == expected::kind::synthetic) {
    out += queue_.front().bytes;
    queue_.pop_front();
  }
}

void client_session::ensure_prepared(const prepared_statement& stmt) {
  pool::statement_lru& prepared = server_->state().prepared;
  if (prepared.contains(stmt.server_name)) {
    prepared.touch(stmt.server_name);
    return;
  }
  if (auto evicted = prepared.insert(stmt.server_name)) {
    wire::message_writer w(out_);
    w.begin(frontend_tag::close);
    w.put_byte('S');
    w.put_cstr(*evicted);
    w.finish();
    queue_.push_back({expected::kind::close, false, {}, nullptr, 0, {}, {}});
  }
  out_ += stmt.parse_frame;
  queue_.push_back({expected::kind::parse, false, {}, nullptr, 0, stmt.server_name, {}});
}

bool client_session::must_decode(char tag) const {
  if (!transaction_mode()) return false;
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::query:
    case frontend_tag::parse:
    case frontend_tag::bind:
    case frontend_tag::describe:
    case frontend_tag::close:
    case frontend_tag::execute:
      return true;
    default:
      return false;
  }
}

bool client_session::bind_streamable(std::string_view frame) const {
  // Bind's body starts with the portal and statement names: enough to see
  // whether it names a statement pgstash must rename.
  std::string_view body = frame.substr(5);
  std::size_t portal_end = body.find('\0');
  if (portal_end == std::string_view::npos) return false;
  std::size_t statement_end = body.find('\0', portal_end + 1);
  if (statement_end == std::string_view::npos) return false;
  std::string statement(body.substr(portal_end + 1, statement_end - portal_end - 1));
  return statement.empty() || statements_.count(statement) == 0;
}

void client_session::expect_for_tag(char tag) {
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::query:
    case frontend_tag::function_call:
      expect(expected::kind::query);
      break;
    case frontend_tag::parse:
      expect(expected::kind::parse);
      break;
    case frontend_tag::bind:
      expect(expected::kind::bind);
      break;
    case frontend_tag::describe:
      expect(expected::kind::describe);
      break;
    case frontend_tag::execute:
      expect(expected::kind::execute);
      break;
    case frontend_tag::close:
      expect(expected::kind::close);
      break;
    case frontend_tag::sync:
      expect(expected::kind::sync);
      break;
    case frontend_tag::copy_done:
    case frontend_tag::copy_fail:
      copy_in_ = false;
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
    for (auto& e : queue_) e.client_statement.clear();
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
  return !name.empty() && statements_.count(name) != 0 ? &name : nullptr;
}

void client_session::forward_as_is(char tag, std::string_view frame) {
  out_ += frame;
  expect_for_tag(tag);
}

bool client_session::on_client_frame(char tag, std::string_view frame) {
  idle_timer_.reset();
  if (skip_until_sync_) {
    // After an error pgstash answered, the batch is ignored up to its Sync.
    if (tag == tag_of(frontend_tag::terminate)) return false;
    if (tag == tag_of(frontend_tag::sync)) {
      skip_until_sync_ = false;
      batch_started_ = false;
      std::string ready;
      wire::write_ready_for_query(ready, tx_status_);
      expect_synthetic(std::move(ready));
    }
    return true;
  }
  // A RESET or DISCARD ALL earlier on this same server connection left it
  // at its own defaults where the client has startup values: restore them
  // before the client's next transaction.
  if (server_ && state_ && queue_.empty() && tx_status_ == 'I' &&
      tag != tag_of(frontend_tag::terminate) && tag != tag_of(frontend_tag::flush) &&
      state_->take_resync()) {
    const std::string sql = state_->sync_settings_sql(server_->state());
    if (!sql.empty()) {
      wire::write_query(out_, sql);
      queue_.push_back({expected::kind::query, false, {}, nullptr, 0, {}, {}});
    }
  }
  const bool keep_going = on_client_frame_inner(tag, frame);
  record_replay(tag, frame);
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
  return keep_going;
}

bool client_session::on_client_frame_inner(char tag, std::string_view frame) {
  const std::string_view body = frame.substr(5);
  const bool renaming = transaction_mode();
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::query: {
      analysis_ptr analysis = analyze_query(body);
      if (const std::string* name = deallocated_protocol_statement(analysis)) {
        // The client's name for a protocol-level statement exists only in
        // pgstash (the server knows it as pgstash_<hash>): answer here.
        statements_.erase(*name);
        std::string answer;
        wire::message_writer w(answer);
        w.begin(backend_tag::command_complete);
        w.put_cstr("DEALLOCATE");
        w.finish();
        wire::write_ready_for_query(answer, tx_status_);
        expect_synthetic(std::move(answer));
        return true;
      }
      if (analysis) {
        std::string prelude;
        for (const auto& effects : analysis->statements)
          prelude += state_->sync_prepared_sql(effects, server_->state());
        if (!prelude.empty()) {
          wire::write_query(out_, prelude);
          queue_.push_back({expected::kind::query, false, {}, nullptr, 0, {}, {}});
        }
      }
      out_ += frame;
      expect(expected::kind::query, std::move(analysis));
      return true;
    }

    case frontend_tag::parse: {
      wire::parse_message parse;
      if (!renaming || wire::parse_parse(body, parse)) {
        forward_as_is(tag, frame);
        return true;
      }
      analysis_ptr analysis = analyze(parse.query);
      if (parse.statement.empty()) {
        forward_as_is(tag, frame);
        unnamed_statement_ = std::move(analysis);
        return true;
      }
      if (statements_.count(std::string(parse.statement)) != 0 && tx_status_ == 'I' &&
          !batch_started_) {
        // PostgreSQL refuses a name already in use. Outside a transaction,
        // at the start of a batch, pgstash can answer exactly as it would:
        // the error, then nothing until Sync.
        std::string error;
        wire::write_error(error, {{'S', "ERROR"},
                                  {'V', "ERROR"},
                                  {'C', "42P05"},
                                  {'M', "prepared statement \"" + std::string(parse.statement) +
                                            "\" already exists"}});
        expect_synthetic(std::move(error));
        skip_until_sync_ = true;
        return true;
      }
      prepared_statement stmt{server_statement_name(parse), {}, std::move(analysis)};
      write_parse(stmt.parse_frame, stmt.server_name, parse);
      pool::statement_lru& prepared = server_->state().prepared;
      if (prepared.contains(stmt.server_name)) {
        prepared.touch(stmt.server_name);
        expect_synthetic(empty_message(backend_tag::parse_complete));
      } else {
        ensure_prepared(stmt);
        queue_.back().forward = true;  // the client's own Parse: it gets the answer
        queue_.back().client_statement = std::string(parse.statement);
      }
      statements_[std::string(parse.statement)] = std::move(stmt);
      return true;
    }
    case frontend_tag::bind: {
      wire::bind_message bind;
      if (!renaming || wire::parse_bind(body, bind)) {
        forward_as_is(tag, frame);
        return true;
      }
      auto it = bind.statement.empty() ? statements_.end()
                                       : statements_.find(std::string(bind.statement));
      if (it == statements_.end()) {
        out_ += frame;
        portals_[std::string(bind.portal)] = bind.statement.empty() ? unnamed_statement_ : nullptr;
      } else {
        ensure_prepared(it->second);
        const std::size_t at = out_.size();
        write_renamed(out_, frame, 1, it->second.server_name);
        portals_[std::string(bind.portal)] = it->second.analysis;
        // Outside a transaction, with nothing else in flight, this batch can
        // be replayed if a DDL change makes the server refuse the cached plan.
        if (queue_.empty() && tx_status_ == 'I' && !replay_pending_) {
          replay_.assign(out_, at, std::string::npos);
          replay_recording_ = true;
          expect(expected::kind::bind);
          queue_.back().client_statement = std::string(bind.statement);
          return true;
        }
      }
      expect(expected::kind::bind);
      return true;
    }
    case frontend_tag::describe: {
      wire::describe_message d;
      if (wire::parse_describe(body, d)) {
        forward_as_is(tag, frame);
        return true;
      }
      auto it = renaming && d.target == 'S' && !d.name.empty() ? statements_.find(std::string(d.name))
                                                               : statements_.end();
      if (it == statements_.end()) {
        out_ += frame;
      } else {
        ensure_prepared(it->second);
        std::string renamed;
        wire::message_writer w(renamed);
        w.begin(frontend_tag::describe);
        w.put_byte('S');
        w.put_cstr(it->second.server_name);
        w.finish();
        out_ += renamed;
      }
      expect(expected::kind::describe);
      return true;
    }
    case frontend_tag::execute: {
      wire::execute_message e;
      analysis_ptr analysis;
      if (state_ && !wire::parse_execute(body, e)) {
        auto it = portals_.find(std::string(e.portal));
        if (it != portals_.end()) analysis = it->second;
      }
      out_ += frame;
      expect(expected::kind::execute, std::move(analysis));
      return true;
    }
    case frontend_tag::close: {
      wire::close_message c;
      if (renaming && !wire::parse_close(body, c) && c.target == 'S' && !c.name.empty()) {
        // Server-side statements are shared and kept in the LRU; the client's
        // name simply goes away.
        statements_.erase(std::string(c.name));
        expect_synthetic(empty_message(backend_tag::close_complete));
        return true;
      }
      forward_as_is(tag, frame);
      return true;
    }
    case frontend_tag::flush:
      if (server_) out_ += frame;
      return true;
    case frontend_tag::terminate:
      return false;
    default:
      // Sync, FunctionCall, COPY messages and anything else.
      forward_as_is(tag, frame);
      return true;
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
  std::string large;            // a frame larger than the buffer that must be decoded
  for (;;) {
    std::string_view in = client_.buffered();
    std::size_t pos = 0;
    bool stop = false;
    bool read_large = false;
    while (pos < in.size() && !stop) {
      if (streaming > 0) {
        const std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(streaming, in.size() - pos));
        out_.append(in.substr(pos, n));
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
      const bool local_only =
          skip_until_sync_ || tag == tag_of(frontend_tag::terminate) ||
          (!server_ && size <= client_.capacity() && in.size() - pos >= size &&
           in[pos] == tag_of(frontend_tag::query) &&
           deallocated_protocol_statement(analyze_query(in.substr(pos + 5, size - 5)))) ||
          (tag == tag_of(frontend_tag::flush) && !server_) ||
          (transaction_mode() && tag == tag_of(frontend_tag::close) && size > 6 &&
           size <= client_.capacity() && in.size() - pos >= size && in[pos + 5] == 'S' &&
           in[pos + 6] != '\0');
      if (!server_ && !local_only) {
        if (!co_await attach_server()) co_return;
        start_server_pump();
      }
      // Frames pgstash must read are held whole; the rest stream by length.
      if (size > client_.capacity()) {
        if (must_decode(tag) &&
            !(tag == tag_of(frontend_tag::bind) && bind_streamable(in.substr(pos)))) {
          read_large = true;
          break;
        }
        expect_for_tag(tag);
        streaming = size;
        continue;
      }
      if (in.size() - pos < size) break;
      if (!on_client_frame(tag, in.substr(pos, size))) stop = true;
      pos += size;
      if (out_.size() >= client_.capacity()) co_await flush_to_server();
    }
    co_await flush_to_server();
    client_.consume(pos);
    {
      // Answers pgstash made up, once everything before them is answered.
      std::string synthetic;
      take_synthetic(synthetic);
      if (!synthetic.empty()) co_await write_to_client(synthetic);
      if (server_pump_running_ && server_idle() && !stop) {
        // Attached for nothing the server had to answer: give it back.
        release_deferred_ = true;
        wake_pump_to_release();
      }
    }
    if (stop || broken_) co_return;

    if (read_large) {
      // Gather the whole frame (bounded by limits.max_message_size).
      wire::decoded_frame h = wire::decode_header(client_.buffered(), wire::phase::normal, max);
      const std::size_t size = h.header.frame_size();
      large.clear();
      while (large.size() < size) {
        std::string_view have = client_.buffered();
        const std::size_t take = std::min(have.size(), size - large.size());
        large.append(have.substr(0, take));
        client_.consume(take);
        if (large.size() == size) break;
        client_.compact();
        error_code ec;
        co_await client_.read_more(ec);
        if (ec) co_return;
      }
      const bool go_on = on_client_frame(large[0], large);
      std::string().swap(large);
      co_await flush_to_server();
      if (!go_on || broken_) co_return;
      continue;
    }

    client_.compact();
    // Between transactions a client holds no server; let go of its buffers.
    if (!server_) {
      client_.shrink();
      if (queue_.empty()) queue_.shrink_to_fit();
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
      if (streaming > 0 && server_) {
        // The server waits for the rest of a message that will never come:
        // it cannot be brought back to idle, so close it now.
        broken_ = true;
        server_->stream().close();
      }
      co_return;
    }
  }
}

bool client_session::on_server_error(std::optional<std::string_view> body) {
  if (queue_.empty()) {
    error_in_cycle_ = true;
    return false;
  }
  expected& head = queue_.front();
  if (head.what == expected::kind::query) {
    error_in_cycle_ = true;
    return false;  // ends at its ReadyForQuery
  }
  if (head.what == expected::kind::parse && !head.server_statement.empty()) {
    server_->state().prepared.erase(head.server_statement);
    if (!head.client_statement.empty()) statements_.erase(head.client_statement);
  }
  bool replay = false;
  if (head.what == expected::kind::bind && !head.client_statement.empty() && body &&
      !replay_recording_ && !replay_.empty()) {
    // After DDL a prepared statement's result type may change; PostgreSQL
    // then refuses the cached plan. Prepare it afresh and run the batch
    // again, once, instead of failing the client.
    wire::error_fields fields;
    replay = !wire::parse_error_fields(*body, fields) && fields.get('C') == "0A000" &&
             fields.get('M').value_or("").find("cached plan must not change result type") !=
                 std::string_view::npos &&
             statements_.count(head.client_statement) != 0;
    if (replay) replay_statement_ = head.client_statement;
  }
  if (!replay) {
    error_in_cycle_ = true;
    replay_.clear();
  }
  // The server skips everything up to the next Sync.
  while (!queue_.empty() && queue_.front().what != expected::kind::sync) queue_.pop_front();
  if (replay) {
    replay_pending_ = true;
    queue_.front().forward = false;  // the failed batch's ReadyForQuery
  }
  return replay;
}

void client_session::start_replay() {
  replay_pending_ = false;
  const prepared_statement& stmt = statements_.at(replay_statement_);
  spdlog::info("{} statement's result type changed: preparing it again and retrying once",
               prefix());
  wire::message_writer w(to_server_);
  w.begin(frontend_tag::close);
  w.put_byte('S');
  w.put_cstr(stmt.server_name);
  w.finish();
  queue_.push_back({expected::kind::close, false, {}, nullptr, 0, {}, {}});
  to_server_ += stmt.parse_frame;
  queue_.push_back({expected::kind::parse, false, {}, nullptr, 0, stmt.server_name, {}});
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
      expect(expected::kind::execute, std::move(analysis));
    } else {
      expect_for_tag(tag);
    }
    batch.remove_prefix(h.header.frame_size());
  }
  replay_.clear();
}

void client_session::on_command_complete(std::string_view tag_text) {
  expected& head = queue_.front();
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
  expected& head = queue_.front();
  const frame_action action = head.forward ? frame_action::forward : frame_action::drop;
  bool done = false;
  switch (static_cast<backend_tag>(tag)) {
    case backend_tag::ready_for_query: {
      wire::ready_for_query rfq;
      if (!body || wire::parse_ready_for_query(*body, rfq)) {
        broken_ = true;
        return frame_action::stop;
      }
      done = head.what == expected::kind::query || head.what == expected::kind::sync;
      if (done) queue_.pop_front();
      if (replay_pending_ && action == frame_action::drop) {
        start_replay();
        return action;
      }
      if (queue_.empty()) replay_.clear();
      on_ready_for_query(rfq.status);
      return action;
    }
    case backend_tag::command_complete:
      if (head.what == expected::kind::query || head.what == expected::kind::execute)
        on_command_complete(body ? *body : std::string_view());
      done = head.what == expected::kind::execute;
      break;
    case backend_tag::empty_query_response:
    case backend_tag::portal_suspended:
      done = head.what == expected::kind::execute;
      break;
    case backend_tag::parse_complete:
      done = head.what == expected::kind::parse;
      break;
    case backend_tag::bind_complete:
      done = head.what == expected::kind::bind;
      break;
    case backend_tag::close_complete:
      done = head.what == expected::kind::close;
      break;
    case backend_tag::row_description:
    case backend_tag::no_data:
      done = head.what == expected::kind::describe;
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
  if (done) queue_.pop_front();
  return action;
}

awaitable<void> client_session::server_loop(std::shared_ptr<client_session> self) {
  pool::pg_stream& from = server_->stream();
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
        take_synthetic(synthetic);
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
    take_synthetic(synthetic);
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
    wire::message_writer w(out);
    w.begin(frontend_tag::copy_fail);
    w.put_cstr("client disconnected");
    w.finish();
    copy_in_ = false;
  }
  // Extended-protocol messages without their Sync: send one.
  auto last_sync = std::find_if(queue_.rbegin(), queue_.rend(), [](const expected& e) {
    return e.what == expected::kind::sync || e.what == expected::kind::query;
  });
  if (last_sync != queue_.rbegin()) {
    wire::message_writer w(out);
    w.begin(frontend_tag::sync);
    w.finish();
    queue_.push_back({expected::kind::sync, false, {}, nullptr, 0, {}, {}});
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
    queue_.push_back({expected::kind::query, false, {}, nullptr, 0, {}, {}});
    co_await send_to_server(out);
    co_return;
  }
  const bool needs_reset = !transaction_mode() || (state_ && state_->pinned());
  if (needs_reset && !reset_sent_ && !ctx_.cfg.pool.server_reset_query.empty()) {
    reset_sent_ = true;
    out.clear();
    wire::write_query(out, ctx_.cfg.pool.server_reset_query);
    queue_.push_back({expected::kind::query, false, {}, nullptr, 0, {}, {}});
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
