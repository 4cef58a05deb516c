// The client side of the relay: the route of every client frame, and how
// it is rewritten for, or answered in place of, the server. The server
// side is relay_answers.cpp.
#include "proxy/relay.hpp"

#include "invalidation/analysis_cache.hpp"
#include "wire/backend.hpp"
#include "wire/errc.hpp"
#include "wire/frontend.hpp"
#include "wire/framing.hpp"
#include "wire/message_writer.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

namespace {

using wire::backend_tag;
using wire::frontend_tag;

using wire::tag_of;

// An empty-bodied backend message such as ParseComplete.
std::string empty_message(backend_tag tag) {
  std::string out;
  wire::write_empty(out, tag);
  return out;
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

// The messages a client may send once logged in. PostgreSQL ends the
// session on any other.
bool after_login(frontend_tag t) {
  switch (t) {
    case frontend_tag::query:
    case frontend_tag::parse:
    case frontend_tag::bind:
    case frontend_tag::describe:
    case frontend_tag::execute:
    case frontend_tag::close:
    case frontend_tag::flush:
    case frontend_tag::sync:
    case frontend_tag::terminate:
    case frontend_tag::function_call:
    case frontend_tag::copy_data:
    case frontend_tag::copy_done:
    case frontend_tag::copy_fail:
      return true;
    default:
      return false;
  }
}

// The name pgstash gives the statement and portal of its own requests
// inside a client's batch; never one a client's, whose unnamed ones it
// must not disturb.
constexpr std::string_view k_internal_name = "pgstash_internal";

}  // namespace

relay::relay(options opts, const std::vector<std::pair<std::string, std::string>>& startup)
    : opts_(opts) {
  if (opts_.transaction_mode) state_.emplace(startup);
}

void relay::detach() {
  server_ = nullptr;
  cache_.statements.erase("");
  unnamed_statement_.reset();
  portals_.clear();
  deallocating_portals_.clear();
}

std::string relay::settings_sql() {
  if (!state_) return {};
  state_->take_resync();  // this covers it
  return state_->sync_settings_sql(*server_);
}

relay::analysis_ptr relay::analyze(std::string_view sql) const {
  // Analyses are memoized per worker thread, so no lock is taken.
  thread_local invalidation::analysis_cache cache(opts_.analysis_cache_entries);
  analysis_ptr a = cache.get(sql);
  return a->any_effect() ? a : nullptr;
}

bool relay::on_streamed(char tag, std::string_view head) {
  if (skipping_) return false;
  if (tag == tag_of(frontend_tag::bind) && opts_.transaction_mode) {
    // Its portal runs a statement pgstash need not follow.
    if (auto names = bind_names(head.substr(5))) portals_.erase(std::string(names->first));
  }
  expect_for_tag(tag);
  if (opts_.cache) cache_on_streamed(tag, head);
  note_batch(tag, route::to_server);
  return true;
}

bool relay::idle() const {
  // Inside an extended-protocol batch the server waits for its Sync, and
  // the batch's implicit transaction is its alone.
  return opts_.transaction_mode && queue_.empty() && tx_status_ == 'I' && !copy_in_ &&
         !batch_started_ && !pinned();
}

void relay::end_copy(std::string& out) {
  if (!copy_in_) return;
  wire::write_copy_fail(out, "client disconnected");
  copy_in_ = false;
}

void relay::end_batch(std::string& out) {
  if (!batch_started_) return;
  // A Sync alone would commit what the batch did; PostgreSQL rolls back a
  // batch whose client is gone. An Execute of a portal that cannot exist
  // fails the batch first (or is skipped, if it failed already).
  wire::write_execute(out, "pgstash cleanup: no such portal");
  queue_.push(expected_response::internal(kind::execute));
  wire::write_sync(out);
  queue_.push(expected_response::internal(kind::sync));
  batch_started_ = skipping_ = false;
}

void relay::run_internal(std::string& out, std::string_view sql) {
  wire::write_query(out, sql);
  queue_.push(expected_response::internal(kind::query));
}

void relay::server_was_reset() {
  if (server_) server_->clear();
}

void relay::expect(kind what, analysis_ptr analysis) {
  queue_.push(expected_response::client(what, std::move(analysis)));
}

void relay::expect_synthetic(std::string bytes) {
  queue_.push(expected_response::synthetic(std::move(bytes)));
}

bool relay::ensure_prepared(const statement_map::statement& stmt) {
  const statement_map::preparation p =
      statement_map::prepare_on(stmt, server_->prepared, statement_map::now());
  if (p.evicted) {
    wire::write_close(out_, 'S', *p.evicted);
    queue_.push(expected_response::internal(kind::close));
  }
  if (!p.parse) return false;
  wire::write_close(out_, 'S', stmt.server_name);
  queue_.push(expected_response::internal(kind::close));
  out_ += stmt.parse_frame;
  queue_.push(expected_response::parse_of(stmt.server_name));
  return true;
}

bool relay::must_hold(char tag, std::string_view head) const {
  if (!opts_.transaction_mode) return false;
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

void relay::expect_for_tag(char tag) {
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
      // Where the client ended COPY: Syncs before it, the server ignores.
      queue_.push(expected_response::copy_end());
      break;
    default:
      break;
  }
}

void relay::note_batch(char tag, route where) {
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::parse:
    case frontend_tag::bind:
    case frontend_tag::describe:
    case frontend_tag::execute:
    case frontend_tag::close:
      batch_started_ = true;
      break;
    case frontend_tag::sync:
      batch_started_ = false;
      break;
    case frontend_tag::query:
      // A Query the server runs ends its batch; one pgstash answers does not.
      if (where == route::to_server) batch_started_ = false;
      break;
    default:
      break;
  }
}

void relay::record_replay(char tag, std::string_view frame) {
  if (!replay_recording_) return;
  if (tag == tag_of(frontend_tag::bind)) return;  // recorded by the Bind itself
  const bool part_of_batch = tag == tag_of(frontend_tag::describe) ||
                             tag == tag_of(frontend_tag::execute) ||
                             tag == tag_of(frontend_tag::sync);
  if (!part_of_batch || replay_.size() + frame.size() > opts_.replay_limit) {
    replay_recording_ = false;
    replay_.clear();
    queue_.forget_replay();
    return;
  }
  replay_ += frame;
  if (tag == tag_of(frontend_tag::sync)) replay_recording_ = false;
}

relay::analysis_ptr relay::analyze_query(std::string_view body) const {
  wire::query_message q;
  if (!state_ || wire::parse_query(body, q)) return nullptr;
  return analyze(q.sql);
}

const std::string* relay::deallocated_protocol_statement(const analysis_ptr& analysis) const {
  if (!analysis || analysis->statements.size() != 1) return nullptr;
  const std::string& name = analysis->statements[0].deallocate_name;
  return !name.empty() && statements_.contains(name) ? &name : nullptr;
}

void relay::forward_as_is(char tag, std::string_view frame) {
  out_ += frame;
  expect_for_tag(tag);
}

std::optional<std::string> relay::refused_tag(char tag) {
  if (after_login(static_cast<frontend_tag>(tag))) return std::nullopt;
  return "invalid frontend message type " + std::to_string(static_cast<unsigned char>(tag));
}

relay::plan relay::plan_frame(char tag, std::string_view frame) {
  const std::string_view body = frame.substr(5);
  const auto t = static_cast<frontend_tag>(tag);
  if (t == frontend_tag::terminate) return {route::end, nullptr};
  if (auto why = refused_tag(tag)) return {route::refuse, nullptr, std::move(*why)};
  // After an error in a batch: the server skips to the Sync, and so does
  // pgstash in transaction mode, where it answers some frames itself. In
  // session mode the server alone decides.
  if (skipping_ && opts_.transaction_mode) {
    if (t != frontend_tag::sync) return {route::skip, nullptr};
    return {server_ ? route::to_server : route::answer_locally, nullptr};
  }
  const plan to_server{route::to_server, nullptr};
  const plan local{route::answer_locally, nullptr};
  // pgstash reads these in transaction mode; one it cannot read must not
  // reach a server another client may get next.
  auto malformed = [tag](std::error_code ec) {
    return plan{route::refuse, nullptr,
                "invalid message '" + std::string(1, tag) + "' from client: " + ec.message()};
  };
  if (opts_.cache) {
    if (auto p = plan_for_cache(t, frame)) return std::move(*p);
  }
  if (!opts_.transaction_mode) {
    if (t != frontend_tag::query || !opts_.cache) return to_server;
    wire::query_message q;
    plan p = to_server;
    if (!wire::parse_query(body, q)) consult_cache(q.sql, p);
    return p;
  }
  if (t == frontend_tag::flush || t == frontend_tag::sync) {
    if (!body.empty()) return malformed(wire::make_error_code(wire::errc::trailing_bytes));
    return server_ ? to_server : local;
  }
  switch (t) {
    case frontend_tag::query: {
      wire::query_message q;
      if (auto ec = wire::parse_query(body, q)) return malformed(ec);
      analysis_ptr analysis = analyze_query(body);
      // The client's name for a protocol-level statement exists only in
      // pgstash (the server knows it as pgstash_<hash>). In a failed
      // transaction the server gives the answer PostgreSQL gives (25P02).
      const bool local_answer = tx_status_ != 'E' && deallocated_protocol_statement(analysis) != nullptr;
      plan p{local_answer ? route::answer_locally : route::to_server, std::move(analysis)};
      if (!local_answer && opts_.cache) consult_cache(q.sql, p);
      return p;
    }
    case frontend_tag::parse: {
      wire::parse_message parse;
      if (auto ec = wire::parse_parse(body, parse)) return malformed(ec);
      analysis_ptr analysis = analyze(parse.query);
      // PostgreSQL refuses a name already in use. Outside a transaction, at
      // the start of a batch, pgstash can answer exactly as it would.
      const bool local_answer =
          parse.statement.empty()
              ? tx_status_ != 'E' && deallocated_protocol_statement(analysis) != nullptr
              : statements_.contains(parse.statement) && tx_status_ == 'I' && !batch_started_;
      return {local_answer ? route::answer_locally : route::to_server, std::move(analysis)};
    }
    case frontend_tag::bind: {
      wire::bind_message bind;
      if (auto ec = wire::parse_bind(body, bind)) return malformed(ec);
      return bind.statement.empty() && unnamed_deallocates_ ? local : to_server;
    }
    case frontend_tag::describe: {
      wire::describe_message d;
      if (auto ec = wire::parse_describe(body, d)) return malformed(ec);
      const bool local_answer = d.target == 'S' ? d.name.empty() && unnamed_deallocates_
                                                : deallocating_portals_.count(std::string(d.name)) != 0;
      return local_answer ? local : to_server;
    }
    case frontend_tag::execute: {
      wire::execute_message e;
      if (auto ec = wire::parse_execute(body, e)) return malformed(ec);
      return deallocating_portals_.count(std::string(e.portal)) != 0 ? local : to_server;
    }
    case frontend_tag::close: {
      wire::close_message c;
      if (auto ec = wire::parse_close(body, c)) return malformed(ec);
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

bool relay::on_client_frame(char tag, std::string_view frame, const plan& p) {
  switch (p.where) {
    case route::end:
    case route::refuse:
      return false;
    case route::skip:
      return true;
    default:
      break;
  }
  if (opts_.cache && answer_from_cache(tag, frame, p)) {
    note_batch(tag, p.where);
    return true;
  }
  // A RESET or DISCARD ALL earlier on this same server connection left it
  // at its own defaults where the client has startup values: restore them
  // before the client's next transaction.
  if (server_ && state_ && queue_.empty() && tx_status_ == 'I' && !batch_started_ &&
      p.where == route::to_server && tag != tag_of(frontend_tag::flush) &&
      tag != tag_of(frontend_tag::sync) && state_->take_resync()) {
    const std::string sql = state_->sync_settings_sql(*server_);
    if (!sql.empty()) {
      wire::write_query(out_, sql);
      queue_.push(expected_response::internal(kind::query));
    }
  }
  if (cache_.deferred_parse && p.where == route::to_server) send_deferred_parse_if_needed(tag, frame);
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::query:
      on_query(frame, p);
      break;
    case frontend_tag::parse:
      on_parse(frame, p);
      break;
    case frontend_tag::bind:
      on_bind(frame, p);
      break;
    case frontend_tag::describe:
      on_describe(frame, p);
      break;
    case frontend_tag::execute:
      on_execute(frame, p);
      break;
    case frontend_tag::close:
      on_close(frame, p);
      break;
    case frontend_tag::sync:
      on_sync(frame, p);
      break;
    case frontend_tag::flush:
      if (server_) out_ += frame;
      break;
    default:
      // FunctionCall, COPY messages and anything else.
      forward_as_is(tag, frame);
      break;
  }
  if (opts_.cache) tell_cache(tag, frame, p);
  record_replay(tag, frame);
  note_batch(tag, p.where);
  return true;
}

void relay::on_query(std::string_view frame, const plan& p) {
  if (p.cached) {
    std::string answer = *p.cached;
    wire::write_ready_for_query(answer, tx_status_);
    expect_synthetic(std::move(answer));
    return;
  }
  if (p.where == route::answer_locally) {
    // Inside an unsynced batch the server holds back its answers until
    // something flushes them; the client's Query would have.
    if (batch_started_ && server_) wire::write_flush(out_);
    const std::string name = *deallocated_protocol_statement(p.analysis);
    auto undo = restore_statement(name);
    statements_.erase(name);
    std::string answer;
    wire::write_command_complete(answer, "DEALLOCATE");
    wire::write_ready_for_query(answer, tx_status_);
    expect_synthetic(std::move(answer));
    queue_.back().undo = std::move(undo);
    return;
  }
  sync_sql_prepared(p.analysis, false);
  out_ += frame;
  expect(kind::query, p.analysis);
  queue_.back().capture = p.capture;
}

void relay::on_parse(std::string_view frame, const plan& p) {
  wire::parse_message parse;
  if (!opts_.transaction_mode || wire::parse_parse(frame.substr(5), parse)) {
    forward_as_is(tag_of(frontend_tag::parse), frame);
    return;
  }
  if (parse.statement.empty()) {
    if (p.where == route::answer_locally) {
      unnamed_deallocates_ = *deallocated_protocol_statement(p.analysis);
      expect_synthetic(empty_message(backend_tag::parse_complete));
      return;
    }
    unnamed_deallocates_.reset();
    unnamed_statement_ = p.analysis;
    forward_as_is(tag_of(frontend_tag::parse), frame);
    return;
  }
  if (statements_.contains(parse.statement)) {
    std::string error;
    wire::write_error(error, "ERROR", "42P05",
                      "prepared statement \"" + std::string(parse.statement) + "\" already exists");
    fail_batch(std::move(error));
    return;
  }
  // The client's own Parse always reaches the server (unless a copy as
  // recent is there already): it must see the tables and types as they
  // are now.
  auto undo = restore_statement(std::string(parse.statement));
  const statement_map::statement& stmt = statements_.define(parse, p.analysis, statement_map::now());
  if (!ensure_prepared(stmt)) expect_synthetic(empty_message(backend_tag::parse_complete));
  // The answer is the client's: forwarded, and if the server fails or
  // skips the Parse, the name means what it meant before.
  queue_.back().forward = true;
  queue_.back().server_statement = stmt.server_name;
  queue_.back().undo = std::move(undo);
}

void relay::on_bind(std::string_view frame, const plan& p) {
  wire::bind_message bind;
  if (!opts_.transaction_mode || wire::parse_bind(frame.substr(5), bind)) {
    forward_as_is(tag_of(frontend_tag::bind), frame);
    return;
  }
  const std::string portal(bind.portal);
  if (p.where == route::answer_locally) {
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
  wire::write_bind_renamed(out_, frame, stmt->server_name);
  expect(kind::bind);
  queue_.back().client_statement = std::string(bind.statement);
  if (replayable) {
    replay_.assign(out_, at, std::string::npos);
    replay_recording_ = true;
    queue_.back().replayable = true;
  }
}

void relay::on_describe(std::string_view frame, const plan& p) {
  wire::describe_message d;
  if (!opts_.transaction_mode || wire::parse_describe(frame.substr(5), d)) {
    forward_as_is(tag_of(frontend_tag::describe), frame);
    return;
  }
  if (p.where == route::answer_locally) {
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
  queue_.back().client_statement = std::string(d.name);
}

void relay::on_execute(std::string_view frame, const plan& p) {
  wire::execute_message e;
  if (!opts_.transaction_mode || wire::parse_execute(frame.substr(5), e)) {
    forward_as_is(tag_of(frontend_tag::execute), frame);
    return;
  }
  const std::string portal(e.portal);
  if (p.where == route::answer_locally) {
    const std::string name = deallocating_portals_.at(portal);
    auto undo = restore_statement(name);
    if (!statements_.erase(name)) {
      std::string error;
      wire::write_error(error, "ERROR", "26000", "prepared statement \"" + name + "\" does not exist");
      fail_batch(std::move(error));
      return;
    }
    std::string answer;
    wire::write_command_complete(answer, "DEALLOCATE");
    expect_synthetic(std::move(answer));
    queue_.back().undo = std::move(undo);
    return;
  }
  auto it = portals_.find(portal);
  out_ += frame;
  expect(kind::execute, it == portals_.end() ? nullptr : it->second);
}

void relay::on_close(std::string_view frame, const plan& p) {
  wire::close_message c;
  if (p.where != route::answer_locally || wire::parse_close(frame.substr(5), c)) {
    forward_as_is(tag_of(frontend_tag::close), frame);
    return;
  }
  std::function<void()> undo;
  if (c.target == 'S') {
    undo = restore_statement(std::string(c.name));
    statements_.erase(c.name);
  } else {
    deallocating_portals_.erase(std::string(c.name));
  }
  expect_synthetic(empty_message(backend_tag::close_complete));
  queue_.back().undo = std::move(undo);
}

void relay::on_sync(std::string_view frame, const plan& p) {
  if (copy_in_) {
    out_ += frame;  // ignored by the server in copy-in mode: no answer
    return;
  }
  skipping_ = false;
  if (p.where == route::answer_locally) {
    // Nothing of this batch reached a server.
    std::string ready;
    wire::write_ready_for_query(ready, tx_status_);
    expect_synthetic(std::move(ready));
    return;
  }
  forward_as_is(tag_of(frontend_tag::sync), frame);
}

void relay::fail_batch(std::string error) {
  // The transaction status is the last one reported: with requests still
  // owed, a transaction may have begun since.
  if (server_ && (batch_started_ || tx_status_ != 'I' || queue_.owes_server())) {
    // Inside a batch or a transaction the server must fail too, so that it
    // skips the rest of the batch (and aborts the transaction) as
    // PostgreSQL would: a Parse it refuses, whose error the client gets as
    // the one PostgreSQL gives. After an earlier error in the batch it is
    // skipped, as the client's request would be.
    wire::write_parse(out_, k_internal_name, "pgstash: refused");
    expect(kind::parse);
    queue_.back().error_instead = std::move(error);
    return;
  }
  expect_synthetic(std::move(error));
  skipping_ = true;
}

void relay::sync_sql_prepared(const analysis_ptr& analysis, bool extended) {
  // In a failed transaction the statement fails anyway, with the error
  // PostgreSQL gives; pgstash's own would come first.
  if (!analysis || !state_ || tx_status_ == 'E') return;
  std::vector<std::string> statements;
  for (const auto& effects : analysis->statements) {
    auto more = state_->sync_prepared_statements(effects, *server_);
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

}  // namespace pgstash::proxy
