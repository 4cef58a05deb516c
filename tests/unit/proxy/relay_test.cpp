#include "proxy/relay.hpp"

#include <doctest/doctest.h>

#include "wire/backend.hpp"
#include "wire/frontend.hpp"
#include "wire/framing.hpp"
#include "wire/message_writer.hpp"
#include "wire/tags.hpp"

namespace pgstash::proxy {
namespace {

using wire::backend_tag;
using wire::frontend_tag;
using route = relay::route;
using action = relay::server_action;

relay make_relay(bool transaction_mode = true) {
  relay::options o;
  o.transaction_mode = transaction_mode;
  return relay(o, {});
}

// Feeds one client frame through plan and handling, as the session does.
relay::plan send(relay& r, const std::string& frame) {
  relay::plan p = r.plan_frame(frame[0], frame);
  r.on_client_frame(frame[0], frame, p);
  return p;
}

std::string parse(std::string_view name, std::string_view sql) {
  std::string out;
  wire::write_parse(out, name, sql);
  return out;
}
std::string bind(std::string_view portal, std::string_view statement) {
  std::string out;
  wire::write_bind(out, portal, statement);
  return out;
}
std::string execute(std::string_view portal) {
  std::string out;
  wire::write_execute(out, portal);
  return out;
}
std::string describe(char target, std::string_view name) {
  std::string out;
  wire::write_describe(out, target, name);
  return out;
}
std::string sync() {
  std::string out;
  wire::write_sync(out);
  return out;
}
std::string query(std::string_view sql) {
  std::string out;
  wire::write_query(out, sql);
  return out;
}

// The tags of the frames in `bytes`, and their bodies.
std::vector<std::pair<char, std::string>> frames_of(std::string_view bytes) {
  std::vector<std::pair<char, std::string>> out;
  while (!bytes.empty()) {
    wire::decoded_frame h = wire::decode_header(bytes, wire::phase::normal, 1 << 30);
    REQUIRE(h.status == wire::decode_status::message);
    const std::size_t size = h.header.frame_size();
    out.emplace_back(bytes[0], std::string(bytes.substr(5, size - 5)));
    bytes.remove_prefix(size);
  }
  return out;
}

std::string tags_of(std::string_view bytes) {
  std::string out;
  for (const auto& f : frames_of(bytes)) out += f.first;
  return out;
}

// The server answers: a frame with `tag` and `body`.
action answer(relay& r, backend_tag tag, std::string_view body = {}) {
  return r.on_server_frame(static_cast<char>(tag), body);
}
std::string ready(char status) { return std::string(1, status); }
std::string error_body(std::string_view sqlstate) {
  std::string out;
  wire::write_error(out, "ERROR", sqlstate, "boom");
  return out.substr(5);
}

TEST_CASE("relay: a named statement goes to the server under its shared name") {
  relay r = make_relay();
  pool::server_state server(10);
  r.attach(server);
  CHECK(send(r, parse("s1", "select 1")).where == route::to_server);
  auto sent = frames_of(r.to_server());
  // A Close of the name first: the server may hold a copy pgstash does not know of.
  REQUIRE(sent.size() == 2);
  CHECK(sent[0].first == 'C');
  wire::parse_message p;
  REQUIRE_FALSE(wire::parse_parse(sent[1].second, p));
  CHECK(p.statement.starts_with("pgstash_"));
  CHECK(p.query == "select 1");
  r.to_server().clear();
  send(r, bind("", "s1"));
  send(r, execute(""));
  send(r, sync());
  CHECK(tags_of(r.to_server()) == "BES");
  CHECK(answer(r, backend_tag::close_complete) == action::drop);
  CHECK(answer(r, backend_tag::parse_complete) == action::forward);
  CHECK(answer(r, backend_tag::bind_complete) == action::forward);
  CHECK(answer(r, backend_tag::command_complete, std::string("SELECT 1\0", 9)) == action::forward);
  CHECK_FALSE(r.idle());
  CHECK(answer(r, backend_tag::ready_for_query, ready('I')) == action::forward);
  CHECK(r.idle());
}

TEST_CASE("relay: after an error before the client's Sync, the batch's rest gets no answer") {
  relay r = make_relay();
  pool::server_state server(10);
  r.attach(server);
  send(r, parse("", "select aaaa"));
  send(r, bind("", ""));
  send(r, execute(""));
  CHECK(answer(r, backend_tag::error_response, error_body("42703")) == action::forward);
  // PostgreSQL skips to the Sync; so does pgstash, and keeps the server.
  CHECK(send(r, parse("", "select 123")).where == route::skip);
  CHECK(send(r, bind("", "")).where == route::skip);
  CHECK(send(r, execute("")).where == route::skip);
  CHECK_FALSE(r.idle());
  r.to_server().clear();
  CHECK(send(r, sync()).where == route::to_server);
  CHECK(tags_of(r.to_server()) == "S");
  CHECK(answer(r, backend_tag::ready_for_query, ready('I')) == action::forward);
  CHECK(r.idle());
  // The next batch is answered as usual.
  CHECK(send(r, parse("", "select 1")).where == route::to_server);
}

TEST_CASE("relay: a ReadyForQuery answers the first Sync, whatever the server skipped before it") {
  relay r = make_relay();
  pool::server_state server(10);
  r.attach(server);
  send(r, parse("", "select 1"));
  send(r, bind("", ""));
  send(r, sync());
  CHECK(answer(r, backend_tag::ready_for_query, ready('I')) == action::forward);
  CHECK_FALSE(r.owed());
}

TEST_CASE("relay: DEALLOCATE of a protocol statement through the extended protocol") {
  relay r = make_relay();
  pool::server_state server(10);
  r.attach(server);
  send(r, parse("_pg3_1", "select 2"));
  answer(r, backend_tag::close_complete);
  answer(r, backend_tag::parse_complete);
  r.to_server().clear();
  CHECK(send(r, parse("", "DEALLOCATE _pg3_1")).where == route::answer_locally);
  CHECK(send(r, bind("", "")).where == route::answer_locally);
  CHECK(send(r, describe('P', "")).where == route::answer_locally);
  CHECK(send(r, execute("")).where == route::answer_locally);
  CHECK(send(r, sync()).where == route::to_server);
  CHECK(tags_of(r.to_server()) == "S");
  std::string answers;
  r.take_synthetic(answers);
  CHECK(tags_of(answers) == "12nC");
  CHECK(frames_of(answers)[3].second == std::string("DEALLOCATE\0", 11));
  // The name is free again: a new Parse under it is the client's right.
  CHECK(send(r, parse("_pg3_1", "select 3")).where == route::to_server);
}

TEST_CASE("relay: DEALLOCATE of a protocol statement as a Query is answered locally") {
  relay r = make_relay();
  pool::server_state server(10);
  r.attach(server);
  send(r, parse("s", "select 2"));
  send(r, sync());
  answer(r, backend_tag::close_complete);
  answer(r, backend_tag::parse_complete);
  answer(r, backend_tag::ready_for_query, ready('I'));
  r.detach();
  // No server is needed for it.
  CHECK(send(r, query("deallocate s")).where == route::answer_locally);
  std::string answers;
  r.take_synthetic(answers);
  CHECK(tags_of(answers) == "CZ");
}

TEST_CASE("relay: SQL-level statements follow their client inside an extended-protocol batch") {
  relay r = make_relay();
  pool::server_state first(10);
  r.attach(first);
  send(r, parse("", "PREPARE p AS SELECT 1"));
  send(r, bind("", ""));
  send(r, execute(""));
  send(r, sync());
  answer(r, backend_tag::parse_complete);
  answer(r, backend_tag::bind_complete);
  answer(r, backend_tag::command_complete, std::string("PREPARE\0", 8));
  answer(r, backend_tag::ready_for_query, ready('I'));
  r.detach();

  // Another server, where another client's `p` is prepared.
  pool::server_state second(10);
  second.sql_prepared["p"] = "PREPARE p AS SELECT 2";
  r.attach(second);
  r.to_server().clear();
  send(r, parse("", "EXECUTE p"));
  send(r, bind("", ""));
  // Before the Bind: pgstash's own Parse/Bind/Execute/Close/Close of each
  // statement, under a name that does not disturb the client's unnamed one.
  const auto sent = frames_of(r.to_server());
  REQUIRE(sent.size() == 12);
  CHECK(sent[0].first == 'P');
  std::string tags;
  for (std::size_t i = 1; i < sent.size(); ++i) tags += sent[i].first;
  CHECK(tags == "PBECCPBECCB");
  wire::parse_message deallocate, prepare;
  REQUIRE_FALSE(wire::parse_parse(sent[1].second, deallocate));
  REQUIRE_FALSE(wire::parse_parse(sent[6].second, prepare));
  CHECK(deallocate.statement == "pgstash_internal");
  CHECK(deallocate.query == "DEALLOCATE \"p\"");
  CHECK(prepare.query == "PREPARE p AS SELECT 1");
  CHECK(second.sql_prepared.at("p") == "PREPARE p AS SELECT 1");
  // pgstash's own answers are not the client's.
  answer(r, backend_tag::parse_complete);  // the client's Parse
  for (backend_tag t : {backend_tag::parse_complete, backend_tag::bind_complete, backend_tag::command_complete,
                        backend_tag::close_complete, backend_tag::close_complete})
    CHECK(answer(r, t, std::string("X\0", 2)) == action::drop);
}

TEST_CASE("relay: a Close and a Parse the server skips after an error change nothing") {
  relay r = make_relay();
  pool::server_state server(10);
  r.attach(server);
  send(r, parse("s1", "select 10"));
  send(r, sync());
  answer(r, backend_tag::close_complete);
  answer(r, backend_tag::parse_complete);
  answer(r, backend_tag::ready_for_query, ready('I'));
  // One batch: an Execute that fails, then a Close and a new Parse of s1.
  send(r, parse("", "select 1/0"));
  send(r, bind("", ""));
  send(r, execute(""));
  std::string close;
  wire::write_close(close, 'S', "s1");
  CHECK(send(r, close).where == route::answer_locally);
  send(r, parse("s1", "select 20"));
  send(r, sync());
  answer(r, backend_tag::parse_complete);
  answer(r, backend_tag::bind_complete);
  answer(r, backend_tag::error_response, error_body("22012"));
  CHECK(answer(r, backend_tag::ready_for_query, ready('I')) == action::forward);
  // PostgreSQL skipped both: s1 is still "select 10", prepared where it was.
  r.to_server().clear();
  send(r, bind("", "s1"));
  const auto sent = frames_of(r.to_server());
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].first == 'B');
  wire::bind_message b;
  REQUIRE_FALSE(wire::parse_bind(sent[0].second, b));
  wire::parse_message first;
  std::string first_parse = parse("s1", "select 10");
  REQUIRE_FALSE(wire::parse_parse(std::string_view(first_parse).substr(5), first));
  CHECK(b.statement == server_statement_name(first));
}

TEST_CASE("relay: frames larger than the buffer are held only where pgstash reads them") {
  relay txn = make_relay();
  relay session = make_relay(false);
  std::string big_sql(100000, ' ');
  big_sql += "select 1";
  const std::string big_query = query(big_sql);
  CHECK(txn.must_hold(big_query[0], big_query));
  CHECK_FALSE(session.must_hold(big_query[0], big_query));
  pool::server_state server(10);
  txn.attach(server);
  send(txn, parse("named", "select $1"));
  // A Bind to a renamed statement must be rewritten; one to the unnamed
  // statement with no session effects streams.
  CHECK(txn.must_hold('B', bind("", "named")));
  CHECK_FALSE(txn.must_hold('B', bind("", "")));
  // Its names are enough to decide: the rest need not have arrived.
  CHECK(txn.must_hold('B', bind("", "named").substr(0, 12)));
}

TEST_CASE("relay: session mode passes frames through untouched") {
  relay r = make_relay(false);
  pool::server_state server(10);
  r.attach(server);
  const std::string p = parse("s1", "select 1");
  send(r, p);
  send(r, query("deallocate s1"));
  CHECK(r.to_server() == p + query("deallocate s1"));
  CHECK_FALSE(r.idle());
}

}  // namespace
}  // namespace pgstash::proxy
