// The server side of the relay: what each server frame means for the
// client, errors (skipped batches, statement names, replays), and what
// completed statements change in the client's session.
#include <limits>
#include <utility>

#include "proxy/relay.hpp"
#include "wire/backend.hpp"
#include "wire/framing.hpp"
#include "wire/frontend.hpp"
#include "wire/message_writer.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

using wire::backend_tag;
using wire::frontend_tag;
using wire::tag_of;

void relay::forget_unprepared(const expected_response& e) {
  if (e.what == kind::parse && !e.server_statement.empty()) server_->prepared.erase(e.server_statement);
}

std::function<void()> relay::restore_statement(const std::string& client_name) {
  std::optional<statement_map::statement> now;
  if (const auto* s = statements_.find(client_name)) now = *s;
  return [this, client_name, now = std::move(now)] { statements_.restore(client_name, now); };
}

std::string relay::error_for_client(std::string_view body, const expected_response& head) const {
  if (head.client_statement.empty()) return {};
  const std::string& server_name = head.statement_server_name;
  wire::error_fields fields;
  if (wire::parse_error_fields(body, fields)) return {};
  bool mentioned = false;
  std::vector<std::pair<char, std::string>> rewritten;
  for (const auto& [code, value] : fields.fields) {
    std::string text(value);
    for (std::size_t at; (at = text.find(server_name)) != std::string::npos;) {
      text.replace(at, server_name.size(), head.client_statement);
      mentioned = true;
    }
    rewritten.emplace_back(code, std::move(text));
  }
  if (!mentioned) return {};
  std::string out;
  wire::write_error(out, rewritten);
  return out;
}

bool relay::wants_body() const {
  if (queue_.empty()) return false;
  const expected_response& head = queue_.front();
  return head.describes || (head.capture && !head.capture->spoiled_by());
}

void relay::note_description(char tag, std::string_view body, statement_description& d) {
  switch (static_cast<backend_tag>(tag)) {
    case backend_tag::parameter_description: {
      wire::parameter_description pd;
      if (wire::parse_parameter_description(body, pd)) return;
      d.parameters = pd.type_oids.size();
      d.parameter_description.clear();
      wire::write_frame(d.parameter_description, tag, body);
      break;
    }
    case backend_tag::row_description:
    case backend_tag::no_data:
      d.returns_rows = tag == tag_of(backend_tag::row_description);
      d.row_description.clear();
      if (d.returns_rows) wire::write_frame(d.row_description, tag, body);
      d.known = !d.parameter_description.empty();
      break;
    default:
      break;
  }
}

relay::server_action relay::on_server_error(std::optional<std::string_view> body) {
  // An error ends copy-in mode: a Sync the client sends after it, the
  // server answers.
  copy_in_ = false;
  if (std::exchange(failed_for_client_, false)) {
    error_in_cycle_ = true;
    if (!queue_.skip_to_sync([this](const expected_response& e) { forget_unprepared(e); }))
      skipping_ = true;
    return server_action::drop;
  }
  if (queue_.empty()) {
    error_in_cycle_ = true;
    return server_action::forward;
  }
  expected_response& head = queue_.front();
  wire::error_fields fields;
  const bool readable = body && !wire::parse_error_fields(*body, fields);
  if (head.what == kind::query) {
    if (!head.forward && head.undo) {
      // pgstash's own statement failed: what it recorded did not happen.
      const bool consequence = head.after_failure && head.after_failure();
      std::exchange(head.undo, {})();
      if (!head.contained) error_in_cycle_ = true;
      if (head.syncs_sql_prepared.empty())
        return consequence ? server_action::drop : server_action::forward;
      if (!consequence && body) {
        held_recreation_error& held = recreation_errors_[head.syncs_sql_prepared];
        wire::write_frame(held.error, tag_of(backend_tag::error_response), *body);
        held.may_have_aborted = !head.contained;
      }
      return server_action::drop;
    }
    error_in_cycle_ = true;
    if (readable) replacement_ = take_recreation_error(fields, head);
    // Either ends at its ReadyForQuery.
    return replacement_.empty() ? server_action::forward : server_action::replace;
  }
  if (!head.error_instead.empty()) {
    // Only the syntax error pgstash provoked is replaced; another (in an
    // aborted transaction, say) is what PostgreSQL says first.
    if (readable && fields.get('C') == "42601") replacement_ = std::move(head.error_instead);
  } else if (body) {
    replacement_ = error_for_client(*body, head);
    if (replacement_.empty() && readable) replacement_ = take_recreation_error(fields, head);
    if (replacement_.empty() && head.describes)
      replacement_ = answers_after_own_describe(*body, head);
  }
  bool replay = false;
  if (head.what == kind::bind && head.replayable && body && !replay_recording_ &&
      !replay_.empty()) {
    // After DDL a prepared statement's result type may change; PostgreSQL
    // then refuses the cached plan. Prepare it afresh and run the batch
    // again, once, instead of failing the client.
    replay = readable && fields.get('C') == "0A000" &&
             fields.get('M').value_or("").find("cached plan must not change result type") !=
                 std::string_view::npos &&
             statements_.contains(head.client_statement);
    // A copy: the client may close the statement before the replay.
    if (replay) replay_statement_ = *statements_.find(head.client_statement);
  }
  // The server skips everything up to the next Sync; if the client has not
  // sent it yet, what it sends until then gets no answer either.
  const bool synced =
      queue_.skip_to_sync([this](const expected_response& e) { forget_unprepared(e); });
  if (!synced) skipping_ = true;
  // A replay holds back the failed batch's ReadyForQuery: without the
  // batch's Sync there is none to hold, and the error goes to the client.
  replay = replay && synced;
  if (!replay) {
    error_in_cycle_ = true;
    replay_.clear();
  }
  if (replay) {
    replay_pending_ = true;
    queue_.front().forward = false;  // the failed batch's ReadyForQuery
    replacement_.clear();
    return server_action::drop;
  }
  return replacement_.empty() ? server_action::forward : server_action::replace;
}

void relay::start_replay() {
  replay_pending_ = false;
  const statement_map::statement* stmt = &replay_statement_;
  wire::write_close(replay_out_, 'S', stmt->server_name);
  queue_.push(expected_response::internal(kind::close));
  replay_out_ += stmt->parse_frame;
  server_->prepared.insert(stmt->server_name, statement_map::now());
  queue_.push(expected_response::parse_of(stmt->server_name));
  replay_out_ += replay_;
  // Expect what the batch's frames will produce, without recording again.
  std::string_view batch = replay_;
  while (batch.size() >= 5) {
    wire::decoded_frame h = wire::decode_header(batch, wire::phase::normal, std::numeric_limits<std::uint32_t>::max());
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

void relay::on_command_complete(std::string_view tag_text) {
  expected_response& head = queue_.front();
  // Only a ROLLBACK that ends the cycle: a statement after it runs in a
  // transaction of its own.
  rollback_seen_ = tag_text.starts_with("ROLLBACK");
  // Writes are acknowledged committed here, before the client hears it:
  // the cache must stop serving what they made stale first.
  if (opts_.cache && tag_text.starts_with("COMMIT")) opts_.cache->transaction_committed(head.writes.get());
  if (!state_ || !head.analysis) return;
  const std::size_t index = head.statements_done++;
  if (index >= head.analysis->statements.size()) return;
  const auto& effects = head.analysis->statements[index];
  state_->statement_completed(effects, *server_);
  // Both also drop the client's protocol-level statements.
  if (effects.deallocate_all || effects.discard_all) statements_.clear();
  using tx = invalidation::transaction_effect;
  // A failed transaction is over: what follows (after AND CHAIN, or later
  // in the same Query) runs in a new one.
  if (effects.transaction == tx::commit || effects.transaction == tx::rollback ||
      effects.transaction == tx::prepare_transaction)
    error_in_cycle_ = false;
  switch (effects.transaction) {
    case tx::commit:
      // COMMIT of a failed transaction reports ROLLBACK.
      if (tag_text.starts_with("COMMIT")) {
        state_->transaction_committed(*server_);
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

void relay::on_ready_for_query(char status, std::optional<std::uint64_t> ended_before) {
  tx_status_ = status;
  copy_in_ = false;
  if (status == 'I') {
    // An autocommit statement or implicit transaction ended: it committed
    // unless something failed.
    if (state_) {
      if (error_in_cycle_) {
        state_->transaction_rolled_back();
      } else {
        state_->transaction_committed(*server_);
      }
    }
    if (opts_.cache) {
      opts_.cache->transaction_ended(error_in_cycle_ || rollback_seen_);
      cache_.local_portals.clear();
    }
    error_in_cycle_ = false;
    rollback_seen_ = false;
    if (!ended_before) return;
    const auto ended = [&](const auto& portal) {
      auto bound = portal_cycles_.find(portal.first);
      return bound == portal_cycles_.end() || bound->second < *ended_before;
    };
    std::erase_if(portals_, ended);
    std::erase_if(deallocating_portals_, ended);
    std::erase_if(cache_.portal_texts, ended);
    std::erase_if(portal_cycles_,
                  [&](const auto& portal) { return portal.second < *ended_before; });
  }
}

relay::server_action relay::on_ready_for_query_frame(char status) {
  // Requests before the first Query or Sync were skipped by the server
  // after an error: what pgstash recorded for them did not happen.
  queue_.skip_to_ready([this](const expected_response& e) { forget_unprepared(e); });
  server_action answer = server_action::forward;
  // The client's portals it ends: those of its cycle and before (unasked,
  // those of every cycle sent). pgstash's own Query ends none: it runs
  // between the client's batches, or before any of the batch that follows
  // reached the server, whose portals pgstash may have answered for.
  std::optional<std::uint64_t> ended_before = queue_.next_cycle();
  if (!queue_.empty()) {
    ended_before = queue_.front().forward ? std::optional(queue_.front().cycle + 1) : std::nullopt;
    answer = queue_.front().forward ? server_action::forward : server_action::drop;
    cache_completed(queue_.front());
    queue_.pop();
  }
  if (replay_pending_ && answer == server_action::drop) {
    start_replay();
    return answer;
  }
  if (queue_.empty()) replay_.clear();
  // A re-creation's error not given by now belongs to no statement the
  // client ran.
  if (answer == server_action::forward) recreation_errors_.clear();
  failed_for_client_ = false;
  on_ready_for_query(status, ended_before);
  return answer;
}

relay::server_action relay::on_server_frame(char tag, std::optional<std::string_view> body) {
  if (!queue_.empty() && queue_.front().capture) cache_on_server_frame(tag, body);
  const bool swallowing = !queue_.empty() && !queue_.front().forward;
  switch (static_cast<backend_tag>(tag)) {
    case backend_tag::parameter_status:
      // Even from pgstash's own statements: a setting pgstash restores is
      // one the client must be told about.
      return server_action::forward;
    case backend_tag::notice_response:
    case backend_tag::notification_response:
      return swallowing ? server_action::drop : server_action::forward;
    case backend_tag::error_response:
      return on_server_error(body);
    default:
      break;
  }
  if (tag == tag_of(backend_tag::ready_for_query)) {
    wire::ready_for_query rfq;
    if (!body || wire::parse_ready_for_query(*body, rfq)) return server_action::stop;
    return on_ready_for_query_frame(rfq.status);
  }
  if (queue_.empty()) return server_action::forward;  // unasked, e.g. a FATAL before closing
  expected_response& head = queue_.front();
  if (failed_for_client_) {
    // The client has its error; the server's answers until its own are not
    // the client's.
    if (head.completed_by(tag)) queue_.pop();
    return server_action::drop;
  }
  if (head.what == kind::describe &&
      (tag == tag_of(backend_tag::no_data) || tag == tag_of(backend_tag::row_description))) {
    if (std::string error = recreation_error_at_describe(head); !error.empty()) {
      replacement_ = std::move(error);
      failed_for_client_ = true;
      queue_.pop();
      return server_action::replace;
    }
  }
  const bool dropped = !head.forward || (head.parameters_answered &&
                                         tag == tag_of(backend_tag::parameter_description));
  const server_action action = dropped ? server_action::drop : server_action::forward;
  // What the server says of an EXECUTE whose statement could not be
  // re-created there is not what PostgreSQL says of the client's.
  if (head.describes && body) {
    const bool described_elsewhere =
        head.analysis && head.analysis->statements.size() == 1 &&
        recreation_errors_.count(head.analysis->statements[0].execute_name) != 0;
    if (!described_elsewhere) note_description(tag, *body, *head.describes);
  }
  switch (static_cast<backend_tag>(tag)) {
    case backend_tag::command_complete:
      if (head.what == kind::query || head.what == kind::execute)
        on_command_complete(body ? *body : std::string_view());
      break;
    case backend_tag::copy_in_response:
      copy_in_ = true;
      // PostgreSQL ignores a Sync that arrives in copy-in mode; one a
      // pipelining client sent with the Execute gets no answer.
      if (head.what == kind::execute) queue_.drop_syncs_after_front();
      break;
    default:
      break;
  }
  if (head.completed_by(tag)) {
    cache_completed(head);
    queue_.pop();
  }
  return action;
}

}  // namespace pgstash::proxy
