// The client side of the relay, once a frame is routed: how each message
// is rewritten for the server (renamed statements, statements prepared
// again on another connection) or answered in its place.
#include <algorithm>

#include "invalidation/analysis_cache.hpp"
#include "proxy/relay.hpp"
#include "wire/backend.hpp"
#include "wire/errc.hpp"
#include "wire/framing.hpp"
#include "wire/frontend.hpp"
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

void write_failed_transaction_error(std::string& out) {
  wire::write_error(
      out, "ERROR", "25P02",
      "current transaction is aborted, commands ignored until end of transaction block");
}

}  // namespace

bool relay::on_client_frame(char tag, std::string_view frame, plan& p) {
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
    note_batch(tag, frame, p.where);
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
  const std::size_t sent_before = out_.size();
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
  if (out_.size() > sent_before && tag != tag_of(frontend_tag::flush) &&
      tag != tag_of(frontend_tag::sync) && tag != tag_of(frontend_tag::query))
    batch_at_server_ = true;
  note_batch(tag, frame, p.where);
  return true;
}

void relay::on_query(std::string_view frame, plan& p) {
  if (p.cached) {
    std::string answer = std::move(*p.cached);
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
  if (p.where == route::answer_locally) {
    unnamed_deallocates_ = *deallocated_protocol_statement(p.analysis);
    expect_synthetic(empty_message(backend_tag::parse_complete));
    return;
  }
  // PostgreSQL describes a statement when it is parsed: EXECUTE's result
  // is the prepared statement's, which must be there by then.
  sync_sql_prepared(p.analysis, batch_at_server_);
  if (parse.statement.empty()) {
    unnamed_deallocates_.reset();
    unnamed_statement_ = p.analysis;
    forward_as_is(tag_of(frontend_tag::parse), frame);
    return;
  }
  if (statements_.contains(parse.statement)) {
    // PostgreSQL checks the name last, after the text (syntax, an aborted
    // transaction, analysis). So the server checks the client's text under
    // a name of pgstash's own, whose error is the client's; if it takes it,
    // the name is refused.
    for (int i = 0; i < 2; ++i) {
      if (i == 1) {
        wire::write_parse(out_, k_internal_name, parse.query, parse.parameter_types);
        queue_.push(expected_response::internal(kind::parse));
      }
      wire::write_close(out_, 'S', k_internal_name);
      queue_.push(expected_response::internal(kind::close));
    }
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
  wire::write_describe(out_, 'S', stmt.server_name);
  queue_.push(expected_response::internal(kind::describe));
  queue_.back().describes = stmt.described;
  queue_.back().analysis = stmt.analysis;
}

bool relay::answers_in_failed_transaction(const statement_map::statement& stmt) const {
  return stmt.described->known && !stmt.ends_failed_transaction() &&
         !statement_map::prepared_on(stmt, server_->prepared) && transaction_failed_here();
}

bool relay::transaction_may_be_failed_here() const {
  if (tx_status_ == 'E') return true;
  // A request of this batch that fails makes the server skip the rest of
  // it anyway; one of an earlier batch still owed may fail the transaction
  // the client is in, or one an owed BEGIN opens.
  bool earlier_batch_owed = false;
  bool begin_owed = false;
  for (const expected_response& e : queue_) {
    earlier_batch_owed |= (e.what == kind::sync || e.what == kind::query) && !e.contained;
    if (e.runs_statements() && e.analysis)
      for (const auto& s : e.analysis->statements)
        begin_owed |= s.transaction == invalidation::transaction_effect::begin;
  }
  return earlier_batch_owed && (tx_status_ == 'T' || begin_owed);
}

bool relay::transaction_failed_here() const {
  // In a failed transaction every statement fails, but one that ends it.
  return tx_status_ == 'E' &&
         std::none_of(queue_.begin(), queue_.end(), [](const expected_response& e) {
           return e.runs_statements() && e.analysis &&
                  std::any_of(e.analysis->statements.begin(), e.analysis->statements.end(),
                              [](const invalidation::statement_effects& s) {
                                return invalidation::exits_failed_transaction(s.transaction);
                              });
         });
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
  // PostgreSQL checks the parameter count first, before the transaction
  // and before it checks the statement's text again (or the statements an
  // EXECUTE names); this connection, which must prepare it first, would
  // check the text first.
  if (stmt && stmt->described->known && bind.parameters.size() != stmt->described->parameters &&
      !statement_map::prepared_on(*stmt, server_->prepared)) {
    std::string error;
    wire::write_error(error, "ERROR", "08P01",
                      "bind message supplies " + std::to_string(bind.parameters.size()) +
                          " parameters, but prepared statement \"" + std::string(bind.statement) +
                          "\" requires " + std::to_string(stmt->described->parameters));
    fail_batch(std::move(error));
    return;
  }
  sync_sql_prepared(analysis, batch_at_server_);
  if (!stmt) {
    forward_as_is(tag_of(frontend_tag::bind), frame);
    queue_.back().analysis = analysis;
    queue_.back().parameters = bind.parameters.size();
    return;
  }
  if (answers_in_failed_transaction(*stmt)) {
    std::string error;
    write_failed_transaction_error(error);
    fail_batch(std::move(error));
    return;
  }
  ensure_prepared(*stmt);
  // Outside a transaction, with nothing else in flight, this batch can be
  // replayed if a DDL change makes the server refuse the cached plan.
  const bool replayable = queue_.empty() && tx_status_ == 'I' && !replay_pending_;
  const std::size_t at = out_.size();
  wire::write_bind_renamed(out_, frame, stmt->server_name);
  expect(kind::bind, analysis);
  queue_.back().parameters = bind.parameters.size();
  queue_.back().client_statement = std::string(bind.statement);
  queue_.back().statement_server_name = stmt->server_name;
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
    if (d.target == 'P') {
      auto portal = portals_.find(std::string(d.name));
      if (portal != portals_.end()) queue_.back().analysis = portal->second;
    }
    return;
  }
  const statement_description& known = *stmt->described;
  if (answers_in_failed_transaction(*stmt) && known.returns_rows) {
    // PostgreSQL refuses to describe rows there.
    std::string error;
    write_failed_transaction_error(error);
    fail_batch(std::move(error));
    return;
  }
  // PostgreSQL describes the parameters as the statement was parsed, and
  // checks its text again (against the tables and search_path of now) only
  // to describe its rows. Where this connection must first prepare it,
  // which checks the text, pgstash gives the parameters itself: a text that
  // no longer analyses then fails where PostgreSQL fails it. In a failed
  // transaction PostgreSQL refuses before the parameters: where that may be
  // so, the server answers it all. The rows of an EXECUTE are those of the
  // SQL prepared statement when the client parsed it, wherever it is now.
  const bool rows_allowed = !known.returns_rows || !transaction_may_be_failed_here();
  const bool from_description =
      known.known && rows_allowed &&
      (stmt->rows_fixed_at_parse() || !statement_map::prepared_on(*stmt, server_->prepared));
  if (from_description) {
    std::string answer = known.parameter_description;
    const bool whole = !known.returns_rows || stmt->rows_fixed_at_parse();
    if (whole && known.returns_rows) {
      answer += known.row_description;
    } else if (whole) {
      wire::write_empty(answer, backend_tag::no_data);
    }
    expect_synthetic(std::move(answer));
    if (whole) return;
  }
  ensure_prepared(*stmt);
  wire::write_describe(out_, 'S', stmt->server_name);
  expect(kind::describe);
  queue_.back().client_statement = std::string(d.name);
  queue_.back().statement_server_name = stmt->server_name;
  queue_.back().parameters_answered = from_description;
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

}  // namespace pgstash::proxy
