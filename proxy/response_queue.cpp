#include "proxy/response_queue.hpp"

#include <algorithm>

#include "wire/tags.hpp"

namespace pgstash::proxy {

expected_response expected_response::client(kind what, analysis_ptr analysis) {
  expected_response e;
  e.what = what;
  e.analysis = std::move(analysis);
  return e;
}

expected_response expected_response::internal(kind what) {
  expected_response e;
  e.what = what;
  e.forward = false;
  return e;
}

expected_response expected_response::parse_of(std::string server_statement) {
  expected_response e = internal(kind::parse);
  e.server_statement = std::move(server_statement);
  return e;
}

expected_response expected_response::synthetic(std::string bytes) {
  expected_response e;
  e.what = kind::synthetic;
  e.bytes = std::move(bytes);
  return e;
}

expected_response expected_response::copy_end() {
  expected_response e = synthetic({});
  e.ends_copy = true;
  return e;
}

bool expected_response::completed_by(char tag) const {
  using wire::backend_tag;
  switch (static_cast<backend_tag>(tag)) {
    case backend_tag::ready_for_query:
      return what == kind::query || what == kind::sync;
    case backend_tag::command_complete:
    case backend_tag::empty_query_response:
    case backend_tag::portal_suspended:
      return what == kind::execute;
    case backend_tag::parse_complete:
      return what == kind::parse;
    case backend_tag::bind_complete:
      return what == kind::bind;
    case backend_tag::close_complete:
      return what == kind::close;
    case backend_tag::row_description:
    case backend_tag::no_data:
      return what == kind::describe;
    default:
      return false;
  }
}

void response_queue::take_synthetic(std::string& out) {
  while (!entries_.empty() && entries_.front().what == expected_response::kind::synthetic) {
    out += entries_.front().bytes;
    entries_.pop_front();
  }
}

void response_queue::drop_syncs_after_front() {
  if (entries_.empty()) return;
  const auto end = std::find_if(entries_.begin() + 1, entries_.end(),
                                [](const expected_response& e) { return e.ends_copy; });
  auto kept = std::remove_if(entries_.begin() + 1, end, [](const expected_response& e) {
    return e.what == expected_response::kind::sync;
  });
  entries_.erase(kept, end);
}

bool response_queue::owes_server() const {
  return std::any_of(entries_.begin(), entries_.end(), [](const expected_response& e) {
    return e.what != expected_response::kind::synthetic;
  });
}

bool response_queue::changes_pending() const {
  return std::any_of(entries_.begin(), entries_.end(), [](const expected_response& e) {
    return e.undo || (e.what == expected_response::kind::parse && !e.server_statement.empty()) ||
           (e.runs_statements() && e.analysis && e.analysis->changes_prepared_statements());
  });
}

void response_queue::forget_replay() {
  for (auto& e : entries_) e.replayable = false;
}

}  // namespace pgstash::proxy
