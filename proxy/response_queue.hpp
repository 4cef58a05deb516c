// What the server owes one client session, in order: an entry for every
// request sent to the server (the client's, or pgstash's own), and the
// answers pgstash gives in the server's place, kept in the same order so
// that the client sees responses exactly as PostgreSQL would send them.
//
// Pure: no I/O. Owned by one client session.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/container/deque.hpp>
#include <boost/container/options.hpp>

#include "invalidation/statement_analysis.hpp"

namespace pgstash::proxy {

class result_capture;
struct cache_write_set;
struct statement_description;

struct expected_response {
  enum class kind : std::uint8_t {
    query,      // Query or FunctionCall: everything through ReadyForQuery
    parse,      // ParseComplete
    bind,       // BindComplete
    describe,   // [ParameterDescription], then RowDescription or NoData
    execute,    // rows, then CommandComplete, EmptyQueryResponse or PortalSuspended
    close,      // CloseComplete
    sync,       // ReadyForQuery
    synthetic,  // nothing from the server: `bytes` go to the client
  };
  using analysis_ptr = std::shared_ptr<const invalidation::analysis>;

  kind what = kind::query;
  bool forward = true;  // false: pgstash's own request; its success answers are dropped
  std::string bytes;
  // query, execute: per-statement session effects; bind, describe: those
  // of the statements the portal (or statement) described runs.
  analysis_ptr analysis;
  std::size_t parameters = 0;  // bind: how many it supplies
  std::size_t statements_done = 0;
  // parse: the server-side statement being created.
  std::string server_statement;
  // bind and describe of a renamed statement: the client's name for it,
  // which the server's errors about it are given, and the server's name it
  // was sent under (the client may have redefined the name since).
  std::string client_statement;
  std::string statement_server_name;
  // bind: this batch may be replayed after "cached plan must not change
  // result type".
  bool replayable = false;
  bool ends_copy = false;  // see copy_end()
  // describe: pgstash's own, of a client's statement; the answer is kept
  // here.
  std::shared_ptr<statement_description> describes;
  // describe: pgstash gave the client the ParameterDescription already; the
  // server's is dropped.
  bool parameters_answered = false;
  // query, describe, execute: the result, kept for the result cache.
  std::shared_ptr<result_capture> capture;
  // query, execute: what the statement may write, for the result cache.
  std::shared_ptr<const cache_write_set> writes;
  // The server's error for this request is replaced by this one (bytes of
  // an ErrorResponse): pgstash made the request fail on purpose.
  std::string error_instead;
  // An internal query of a group whose earlier one may fail: true once that
  // happened, when this one's error is only its consequence.
  std::function<bool()> after_failure;
  // A Query of pgstash's own that puts the client's SQL prepared statement
  // of this name on the server (a PREPARE, or a DEALLOCATE of another's).
  // Its error is held: PostgreSQL would give the error of analysing the
  // statement again where the client's statement uses it, and that is
  // where pgstash gives it, in place of the "does not exist" (26000) the
  // server then gives, or of the 25P02 if the failure aborted the client's
  // transaction.
  std::string syncs_sql_prepared;
  // Its failure surely cannot touch the client's transaction (it runs in a
  // transaction or a savepoint of its own).
  bool contained = false;
  // query and sync: which cycle of requests it ends, counted by the queue
  // from the session's first.
  std::uint64_t cycle = 0;
  // What pgstash changed in its own records when it sent (or answered)
  // this request, put back if the server skips the request after an error
  // earlier in the batch; empty if nothing.
  std::function<void()> undo;

  // The answer to a request of the client's: forwarded to it.
  static expected_response client(kind what, analysis_ptr analysis = nullptr);
  // The answer to pgstash's own request: dropped unless it is an error.
  static expected_response internal(kind what);
  // The ParseComplete of a server-side statement pgstash creates.
  static expected_response parse_of(std::string server_statement);
  static expected_response synthetic(std::string bytes);
  // Where the client ended COPY (CopyDone or CopyFail): nothing is owed
  // for it; it marks which Syncs the server ignored in copy-in mode.
  static expected_response copy_end();

  // True if backend message `tag` is the last one answering this request.
  bool completed_by(char tag) const;
  // A Query or an Execute: `analysis` is of statements it runs (on other
  // requests it describes what they name).
  bool runs_statements() const { return what == kind::query || what == kind::execute; }
};

class response_queue {
 public:
  bool empty() const { return entries_.empty(); }
  std::size_t size() const { return entries_.size(); }
  expected_response& front() { return entries_.front(); }
  const expected_response& front() const { return entries_.front(); }
  expected_response& back() { return entries_.back(); }
  void push(expected_response&& e) {
    if (e.what == expected_response::kind::query || e.what == expected_response::kind::sync)
      e.cycle = next_cycle_++;
    entries_.push_back(std::move(e));
  }
  // The cycle that a request sent now belongs to: the one the next Query or
  // Sync pushed ends.
  std::uint64_t next_cycle() const { return next_cycle_; }
  void pop() { entries_.pop_front(); }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

  // Appends to `out` the synthetic answers now at the head, and drops them.
  void take_synthetic(std::string& out);

  // The server failed a request of an extended-protocol batch and skips
  // the rest of it until Sync: drops every entry before the next sync
  // entry, telling `dropped` of each. Returns false if no Sync has been
  // sent yet (the queue is then empty).
  // Their undo actions run last change first.
  template <typename F>
  bool skip_to_sync(F&& dropped) {
    return skip_until(
        [](const expected_response& e) { return e.what == expected_response::kind::sync; },
        dropped);
  }
  // A ReadyForQuery came: it answers the first Query or Sync, and the
  // server skipped the requests before that one after an error. Drops
  // them as skip_to_sync() does.
  template <typename F>
  void skip_to_ready(F&& dropped) {
    skip_until(
        [](const expected_response& e) {
          return e.what == expected_response::kind::sync ||
                 e.what == expected_response::kind::query;
        },
        dropped);
  }

  // The request at the front put the server in copy-in mode, where it
  // ignores Sync: Syncs sent after it and before the client ended COPY get
  // no answer.
  void drop_syncs_after_front();

  // True if the server still owes an answer (any entry but pgstash's own).
  bool owes_server() const;

  // True if a request still owed changed pgstash's records (it has an undo
  // action, or prepares a statement the server connection's record already
  // counts) or will change them (it creates or drops SQL prepared
  // statements): what they will say is not known yet.
  bool changes_pending() const;

  // The batch being recorded will not be replayed: no Bind refers to it.
  void forget_replay();

  // Frees memory when empty (an idle client's).
  void shrink() {
    if (entries_.empty()) entries_.shrink_to_fit();
  }

 private:
  template <typename Stop, typename F>
  bool skip_until(Stop&& stop, F&& dropped) {
    std::vector<std::function<void()>> undos;
    while (!entries_.empty() && !stop(entries_.front())) {
      dropped(entries_.front());
      if (entries_.front().undo) undos.push_back(std::move(entries_.front().undo));
      entries_.pop_front();
    }
    for (auto it = undos.rbegin(); it != undos.rend(); ++it) (*it)();
    return !entries_.empty();
  }

  // Allocates nothing until used. Two entries to a block: the default (one,
  // for an entry this size) allocates at every push, and once used two keep
  // no more memory than it does (more would, in every idle client).
  boost::container::deque<expected_response, void,
                          boost::container::deque_options_t<boost::container::block_size<2u>>>
      entries_;
  std::uint64_t next_cycle_ = 0;
};

}  // namespace pgstash::proxy
