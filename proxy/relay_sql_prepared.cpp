// SQL-level prepared statements (PREPARE/EXECUTE/DEALLOCATE) in
// transaction mode: made to match the client's on whichever server
// connection runs its statement, and the errors of re-creating them there,
// held and given where PostgreSQL would give its own.
#include <algorithm>
#include <memory>
#include <set>

#include "proxy/relay.hpp"
#include "wire/backend.hpp"
#include "wire/frontend.hpp"
#include "wire/message_writer.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {

using wire::backend_tag;
using wire::tag_of;

void relay::sync_sql_prepared(const analysis_ptr& analysis, bool in_batch) {
  // In a failed transaction the statement fails anyway, with the error
  // PostgreSQL gives; pgstash's own would come first.
  if (!analysis || !state_ || tx_status_ == 'E') return;
  const bool names_any = std::any_of(analysis->statements.begin(), analysis->statements.end(),
                                     [](const invalidation::statement_effects& s) {
                                       return !s.execute_name.empty() || !s.prepare_name.empty() ||
                                              !s.deallocate_name.empty();
                                     });
  if (!names_any) return;
  // A name an earlier statement (of this text, or of a request of the batch
  // still owed) creates or drops is left to it: the server runs that first,
  // on this connection, and then shows the later one what PostgreSQL would.
  std::set<std::string, std::less<>> decided;
  bool all_decided = false;
  auto note_decided = [&](const invalidation::statement_effects& s) {
    all_decided |= s.deallocate_all || s.discard_all;
    for (const std::string* name : {&s.prepare_name, &s.deallocate_name})
      if (!name->empty()) decided.insert(*name);
  };
  for (const expected_response& e : queue_) {
    if (!e.runs_statements() || !e.analysis) continue;
    for (const auto& s : e.analysis->statements) note_decided(s);
  }
  std::vector<session_state::prepared_sync> statements;
  for (const invalidation::statement_effects& as_sent : analysis->statements) {
    if (all_decided) break;
    invalidation::statement_effects names;
    names.execute_name = as_sent.execute_name;
    names.prepare_name = as_sent.prepare_name;
    names.deallocate_name = as_sent.deallocate_name;
    for (std::string* name : {&names.execute_name, &names.prepare_name, &names.deallocate_name})
      if (decided.contains(*name)) name->clear();
    auto more = state_->sync_prepared_statements(names, *server_);
    statements.insert(statements.end(), more.begin(), more.end());
    note_decided(as_sent);
  }
  if (statements.empty()) return;
  // Each is recorded on the server as if it will succeed; one that fails,
  // or is skipped after an earlier error, is taken back with every one after
  // it, last first, or the record would claim a statement the server does
  // not have (or lost). The ones after it fail or are skipped too, or ran
  // where the record assumed it had worked; their errors are its
  // consequences, and only its own reaches the client.
  struct sync_group {
    std::vector<session_state::prepared_sync> steps;
    std::size_t kept;  // steps[kept..] are taken back
  };
  const std::size_t count = statements.size();
  auto group = std::make_shared<sync_group>(sync_group{std::move(statements), count});
  // Between batches, with nothing owed, a failure is kept from the client's
  // transaction: outside one, each Query is a transaction of its own;
  // inside one, a savepoint takes it back.
  const bool contained = !in_batch && !queue_.owes_server();
  const bool savepoint = contained && tx_status_ == 'T';
  // Outside a transaction block each Query commits alone: one that fails
  // takes back nothing of the others.
  const bool independent = contained && !savepoint;
  if (savepoint) run_internal(out_, "SAVEPOINT pgstash_prepare");
  for (std::size_t i = 0; i < count; ++i) {
    auto undo = [server = server_, group, i, independent] {
      if (independent) {
        group->steps[i].undo(*server);
        return;
      }
      for (; group->kept > i; --group->kept) group->steps[group->kept - 1].undo(*server);
    };
    const session_state::prepared_sync& statement = group->steps[i];
    if (!in_batch) {
      run_internal(out_, statement.sql);
      queue_.back().undo = std::move(undo);
      if (!independent) queue_.back().after_failure = [group, i] { return group->kept <= i; };
      queue_.back().syncs_sql_prepared = statement.name;
      queue_.back().contained = contained;
      continue;
    }
    wire::write_parse(out_, k_internal_name, statement.sql);
    wire::write_bind(out_, k_internal_name, k_internal_name);
    wire::write_execute(out_, k_internal_name);
    wire::write_close(out_, 'P', k_internal_name);
    wire::write_close(out_, 'S', k_internal_name);
    for (kind k : {kind::parse, kind::bind, kind::execute})
      queue_.push(expected_response::internal(k));
    // Whether the Parse, the Bind or PREPARE itself fails, the Execute does
    // not complete.
    queue_.back().undo = std::move(undo);
    for (int i = 0; i < 2; ++i) queue_.push(expected_response::internal(kind::close));
  }
  // PREPARE is not transactional: rolling back to the savepoint keeps what
  // succeeded.
  if (savepoint)
    run_internal(out_, "ROLLBACK TO SAVEPOINT pgstash_prepare; RELEASE SAVEPOINT pgstash_prepare");
}

std::string relay::recreation_error_at_describe(const expected_response& head) {
  // PostgreSQL analyses the statement an EXECUTE names again to describe
  // its portal's rows, and fails there. The server here fails at the Execute (the
  // statement is not there): only if one is on its way before the batch's
  // end can its error stand for PostgreSQL's, given here.
  if (recreation_errors_.empty() || !head.analysis || !head.forward ||
      head.analysis->statements.size() != 1)
    return {};
  const std::string& name = head.analysis->statements[0].execute_name;
  auto held = recreation_errors_.find(name);
  if (held == recreation_errors_.end()) return {};
  // It describes rows only for a statement that returns them.
  const analysis_ptr prepared = client_prepare(name);
  if (!prepared || !prepared->statements[0].prepare_returns_rows) return {};
  for (auto it = queue_.begin() + 1; it != queue_.end() && it->what != kind::sync; ++it) {
    if (!it->runs_statements()) continue;
    // The next statement the batch runs: only if it is that Execute.
    if (it->what != kind::execute || it->analysis != head.analysis) return {};
    std::string error = std::move(held->second.error);
    recreation_errors_.erase(held);
    return error;
  }
  return {};
}

std::string relay::answers_after_own_describe(std::string_view error_body,
                                              const expected_response& describe) {
  // Describing a statement that EXECUTEs a prepared one analyses that one
  // again (its rows may have changed), and PostgreSQL, which makes no such
  // Describe of its own, does so only where the client describes the
  // portal's rows (if it returns rows) or runs it. Where the client's Bind
  // and then that Describe or Execute follow at once, the client gets
  // PostgreSQL's answers, with the error there.
  const analysis_ptr& statement = describe.analysis;
  if (!statement || statement->statements.size() != 1) return {};
  const analysis_ptr prepared = client_prepare(statement->statements[0].execute_name);
  if (!prepared || describe.describes->parameter_description.empty()) return {};
  std::string answers;
  auto answers_and_error = [&] {
    wire::write_frame(answers, tag_of(backend_tag::error_response), error_body);
    return answers;
  };
  for (auto it = queue_.begin() + 1; it != queue_.end() && it->forward && it->analysis == statement;
       ++it) {
    switch (it->what) {
      case kind::bind:
        // PostgreSQL would refuse it: another error than this one.
        if (it->parameters != describe.describes->parameters) return {};
        wire::write_empty(answers, backend_tag::bind_complete);
        break;
      case kind::describe:
        if (prepared->statements[0].prepare_returns_rows) return answers_and_error();
        wire::write_empty(answers, backend_tag::no_data);
        break;
      case kind::execute:
        return answers_and_error();
      default:
        return {};
    }
  }
  return {};
}

std::string relay::take_recreation_error(const wire::error_fields& fields,
                                         const expected_response& head) {
  if (recreation_errors_.empty()) return {};
  const std::string_view code = fields.get('C').value_or("");
  const std::string_view message = fields.get('M').value_or("");
  for (auto it = recreation_errors_.begin(); it != recreation_errors_.end(); ++it) {
    const bool stands_in =
        code == "26000" ? message == "prepared statement \"" + it->first + "\" does not exist"
                        : code == "25P02" && it->second.may_have_aborted;
    if (!stands_in) continue;
    std::string error = std::move(it->second.error);
    const std::string name = it->first;
    recreation_errors_.erase(it);
    // PostgreSQL checks the number of arguments before the text (for a
    // statement that takes any: arguments to one that takes none it
    // ignores).
    const int passed = execute_arguments(head, name);
    const analysis_ptr prepared = client_prepare(name);
    if (passed >= 0 && prepared && prepared->statements[0].prepare_parameters > 0 &&
        prepared->statements[0].prepare_parameters != passed) {
      const int expected = prepared->statements[0].prepare_parameters;
      error.clear();
      wire::write_error(
          error, {{'S', "ERROR"},
                  {'V', "ERROR"},
                  {'C', "42601"},
                  {'M', "wrong number of parameters for prepared statement \"" + name + "\""},
                  {'D', "Expected " + std::to_string(expected) + " parameters but got " +
                            std::to_string(passed) + "."}});
    }
    return error;
  }
  return {};
}

relay::analysis_ptr relay::client_prepare(const std::string& name) const {
  const std::string* text = state_ ? state_->sql_prepared(name) : nullptr;
  analysis_ptr prepared = text ? analyze(*text) : nullptr;
  return prepared && prepared->statements.size() == 1 ? prepared : nullptr;
}

int relay::execute_arguments(const expected_response& head, const std::string& name) {
  if (!head.analysis) return -1;
  for (const auto& s : head.analysis->statements)
    if (s.execute_name == name) return s.execute_arguments;
  return -1;
}

}  // namespace pgstash::proxy
