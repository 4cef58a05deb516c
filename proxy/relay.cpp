// The client side of the relay: the route of every client frame (plan_frame)
// and the relay's bookkeeping. What is sent or answered for each routed
// frame is relay_frames.cpp; the server side is relay_answers.cpp.
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

}  // namespace

relay::relay(options opts, const std::vector<std::pair<std::string, std::string>>& startup)
    : opts_(opts) {
  if (opts_.transaction_mode) state_.emplace(startup);
}

void relay::detach() {
  server_ = nullptr;
  failed_for_client_ = false;
  cache_.statements.erase("");
  unnamed_statement_.reset();
  portals_.clear();
  deallocating_portals_.clear();
  portal_cycles_.clear();
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
    if (auto names = bind_names(head.substr(5))) {
      portals_.erase(std::string(names->first));
      deallocating_portals_.erase(std::string(names->first));
    }
  }
  expect_for_tag(tag);
  if (opts_.cache) cache_on_streamed(tag, head);
  if (tag == tag_of(frontend_tag::bind)) batch_at_server_ = true;
  note_batch(tag, head, route::to_server);
  return true;
}

bool relay::idle() const {
  // Inside an extended-protocol batch the server waits for its Sync, and
  // the batch's implicit transaction is its alone; so after an error in one
  // (an extended COPY's, whose Sync came during the COPY, when the server
  // ignored it) until the client's Sync.
  return opts_.transaction_mode && queue_.empty() && tx_status_ == 'I' && !copy_in_ &&
         !batch_started_ && !skipping_ && !pinned();
}

void relay::end_copy(std::string& out) {
  if (!copy_in_) return;
  wire::write_copy_fail(out, "client disconnected");
  copy_in_ = false;
}

void relay::end_batch(std::string& out) {
  if (!batch_started_ && !skipping_) return;
  // A Sync alone would commit what the batch did; PostgreSQL rolls back a
  // batch whose client is gone. An Execute of a portal that cannot exist
  // fails the batch first (or is skipped, if it failed already).
  wire::write_execute(out, "pgstash cleanup: no such portal");
  queue_.push(expected_response::internal(kind::execute));
  wire::write_sync(out);
  queue_.push(expected_response::internal(kind::sync));
  batch_started_ = batch_at_server_ = skipping_ = false;
}

void relay::run_internal(std::string& out, std::string_view sql) {
  wire::write_query(out, sql);
  queue_.push(expected_response::internal(kind::query));
}

void relay::roll_back(std::string& out) {
  constexpr std::string_view sql = "ROLLBACK";
  run_internal(out, sql);
  queue_.back().analysis = analyze(sql);
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

void relay::note_batch(char tag, std::string_view frame, route where) {
  switch (static_cast<frontend_tag>(tag)) {
    case frontend_tag::bind:
      if (auto names = bind_names(frame.substr(5));
          names && (opts_.transaction_mode || opts_.cache))
        portal_cycles_.insert_or_assign(std::string(names->first), queue_.next_cycle());
      batch_started_ = true;
      break;
    case frontend_tag::parse:
    case frontend_tag::describe:
    case frontend_tag::execute:
    case frontend_tag::close:
      batch_started_ = true;
      break;
    case frontend_tag::sync:
      batch_started_ = batch_at_server_ = false;
      break;
    case frontend_tag::query:
      // A Query the server runs ends its batch; one pgstash answers does not.
      if (where == route::to_server) batch_started_ = batch_at_server_ = false;
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
      // A named one always goes to the server, even with a name already in
      // use: PostgreSQL checks the text before the name.
      const bool local_answer = parse.statement.empty() && tx_status_ != 'E' &&
                                deallocated_protocol_statement(analysis) != nullptr;
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

}  // namespace pgstash::proxy
