#include "proxy/response_queue.hpp"

#include <doctest/doctest.h>

#include "wire/tags.hpp"

namespace pgstash::proxy {
namespace {

using kind = expected_response::kind;
using wire::backend_tag;

constexpr char tag(backend_tag t) { return static_cast<char>(t); }

TEST_CASE("each request is completed by the backend message that ends its answer") {
  CHECK(expected_response::client(kind::query).completed_by(tag(backend_tag::ready_for_query)));
  CHECK_FALSE(expected_response::client(kind::query).completed_by(tag(backend_tag::command_complete)));
  CHECK(expected_response::client(kind::sync).completed_by(tag(backend_tag::ready_for_query)));
  CHECK(expected_response::client(kind::parse).completed_by(tag(backend_tag::parse_complete)));
  CHECK(expected_response::client(kind::bind).completed_by(tag(backend_tag::bind_complete)));
  CHECK(expected_response::client(kind::close).completed_by(tag(backend_tag::close_complete)));
  const auto describe = expected_response::client(kind::describe);
  CHECK_FALSE(describe.completed_by(tag(backend_tag::parameter_description)));
  CHECK(describe.completed_by(tag(backend_tag::row_description)));
  CHECK(describe.completed_by(tag(backend_tag::no_data)));
  const auto execute = expected_response::client(kind::execute);
  CHECK_FALSE(execute.completed_by(tag(backend_tag::data_row)));
  CHECK(execute.completed_by(tag(backend_tag::command_complete)));
  CHECK(execute.completed_by(tag(backend_tag::empty_query_response)));
  CHECK(execute.completed_by(tag(backend_tag::portal_suspended)));
  CHECK_FALSE(execute.completed_by(tag(backend_tag::ready_for_query)));
}

TEST_CASE("named constructors: the client's answers are forwarded, pgstash's own are not") {
  CHECK(expected_response::client(kind::bind).forward);
  CHECK_FALSE(expected_response::internal(kind::query).forward);
  auto own = expected_response::parse_of("pgstash_1");
  CHECK_FALSE(own.forward);
  CHECK(own.what == kind::parse);
  CHECK(own.server_statement == "pgstash_1");
  CHECK(expected_response::synthetic("x").bytes == "x");
}

TEST_CASE("synthetic answers leave only when everything before them is answered") {
  response_queue q;
  q.push(expected_response::client(kind::bind));
  q.push(expected_response::synthetic("A"));
  q.push(expected_response::synthetic("B"));
  q.push(expected_response::client(kind::sync));
  std::string out;
  q.take_synthetic(out);
  CHECK(out.empty());
  q.pop();  // BindComplete arrived
  q.take_synthetic(out);
  CHECK(out == "AB");
  CHECK(q.size() == 1);
  CHECK(q.front().what == kind::sync);
}

TEST_CASE("after an error the server skips to the batch's Sync") {
  response_queue q;
  q.push(expected_response::client(kind::bind));
  q.push(expected_response::client(kind::execute));
  q.push(expected_response::synthetic("CloseComplete the server would not send"));
  q.push(expected_response::client(kind::sync));
  q.push(expected_response::client(kind::parse));  // the next batch
  int dropped = 0;
  CHECK(q.skip_to_sync([&](const expected_response&) { ++dropped; }));
  CHECK(dropped == 3);
  CHECK(q.size() == 2);
  CHECK(q.front().what == kind::sync);
}

TEST_CASE("a Sync sent before the server entered copy-in mode gets no answer") {
  response_queue q;
  q.push(expected_response::client(kind::execute));  // COPY ... FROM STDIN
  q.push(expected_response::client(kind::sync));
  q.drop_syncs_after_front();
  CHECK(q.size() == 1);
  CHECK(q.front().what == kind::execute);
}

TEST_CASE("a Sync sent after the client ended COPY is answered") {
  response_queue q;
  q.push(expected_response::client(kind::execute));  // COPY ... FROM STDIN
  q.push(expected_response::client(kind::sync));      // sent with the Execute: ignored
  q.push(expected_response::copy_end());
  q.push(expected_response::client(kind::sync));      // after CopyDone: answered
  q.drop_syncs_after_front();
  REQUIRE(q.size() == 3);
  q.pop();
  std::string nothing;
  q.take_synthetic(nothing);
  CHECK(nothing.empty());
  CHECK(q.front().what == kind::sync);
}

TEST_CASE("an error before the client's Sync leaves nothing to wait for") {
  response_queue q;
  q.push(expected_response::client(kind::parse));
  q.push(expected_response::client(kind::bind));
  CHECK_FALSE(q.skip_to_sync([](const expected_response&) {}));
  CHECK(q.empty());
}

TEST_CASE("a batch that will not be replayed forgets its statement") {
  response_queue q;
  auto bind = expected_response::client(kind::bind);
  bind.replayable = true;
  q.push(std::move(bind));
  q.forget_replay();
  CHECK_FALSE(q.front().replayable);
}

TEST_CASE("what pgstash changed for requests the server skips is put back, last change first") {
  response_queue q;
  std::string log;
  auto first = expected_response::client(kind::parse);
  first.undo = [&] { log += "1"; };
  auto second = expected_response::synthetic("CloseComplete");
  second.undo = [&] { log += "2"; };
  q.push(expected_response::client(kind::bind));
  q.push(std::move(first));
  q.push(std::move(second));
  q.push(expected_response::client(kind::sync));
  CHECK(q.skip_to_sync([](const expected_response&) {}));
  CHECK(log == "21");
  // Answered requests keep their changes.
  auto answered = expected_response::client(kind::parse);
  answered.undo = [&] { log += "3"; };
  q.push(std::move(answered));
  q.pop();  // the Sync's ReadyForQuery
  q.pop();  // ParseComplete
  CHECK(log == "21");
}

}  // namespace
}  // namespace pgstash::proxy
