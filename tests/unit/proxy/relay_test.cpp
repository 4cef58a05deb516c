#include "proxy/relay.hpp"

#include <map>

#include <doctest/doctest.h>

#include "wire/backend.hpp"
#include "wire/framing.hpp"
#include "wire/frontend.hpp"
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
// The server's 26000 for SQL prepared statement `name`.
std::string missing_body(std::string_view name) {
  std::string out;
  wire::write_error(out, "ERROR", "26000",
                    "prepared statement \"" + std::string(name) + "\" does not exist");
  return out.substr(5);
}
// The fields of ErrorResponse frame `error`.
std::map<char, std::string> fields_of(std::string_view error) {
  wire::error_fields fields;
  REQUIRE(error.size() > 5);
  REQUIRE_FALSE(wire::parse_error_fields(error.substr(5), fields));
  std::map<char, std::string> out;
  for (const auto& [code, value] : fields.fields) out.emplace(code, value);
  return out;
}

// Runs `sql` and answers it with these command tags, an error (SQLSTATE)
// where a tag starts with '!', and ReadyForQuery `status`.
void run(relay& r, const std::string& sql, std::initializer_list<std::string> tags, char status) {
  send(r, query(sql));
  for (const std::string& tag : tags) {
    if (tag[0] == '!') {
      answer(r, backend_tag::error_response, error_body(tag.substr(1)));
    } else {
      answer(r, backend_tag::command_complete, tag + '\0');
    }
  }
  answer(r, backend_tag::ready_for_query, ready(status));
}

TEST_CASE("relay: a named statement goes to the server under its shared name") {
  relay r = make_relay();
  pool::server_state server(10);
  r.attach(server);
  CHECK(send(r, parse("s1", "select 1")).where == route::to_server);
  auto sent = frames_of(r.to_server());
  // A Close of the name first: the server may hold a copy pgstash does not
  // know of. A Describe of pgstash's own after it.
  REQUIRE(sent.size() == 3);
  CHECK(sent[0].first == 'C');
  wire::parse_message p;
  REQUIRE_FALSE(wire::parse_parse(sent[1].second, p));
  CHECK(p.statement.starts_with("pgstash_"));
  CHECK(p.query == "select 1");
  CHECK(sent[2].first == 'D');
  r.to_server().clear();
  send(r, bind("", "s1"));
  send(r, execute(""));
  send(r, sync());
  CHECK(tags_of(r.to_server()) == "BES");
  CHECK(answer(r, backend_tag::close_complete) == action::drop);
  CHECK(answer(r, backend_tag::parse_complete) == action::forward);
  CHECK(answer(r, backend_tag::parameter_description, std::string("\0\0", 2)) == action::drop);
  CHECK(answer(r, backend_tag::row_description, std::string("\0\0", 2)) == action::drop);
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
  answer(r, backend_tag::parameter_description, std::string("\0\0", 2));
  answer(r, backend_tag::row_description, std::string("\0\0", 2));
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

TEST_CASE("relay: a Bind streamed through replaces a portal that deallocated a statement") {
  relay r = make_relay();
  pool::server_state server(10);
  r.attach(server);
  send(r, parse("s", "select 2"));
  send(r, sync());
  for (backend_tag t : {backend_tag::close_complete, backend_tag::parse_complete}) answer(r, t);
  answer(r, backend_tag::parameter_description, std::string("\0\0", 2));
  answer(r, backend_tag::row_description, std::string("\0\0", 2));
  answer(r, backend_tag::ready_for_query, ready('I'));
  CHECK(send(r, parse("", "DEALLOCATE s")).where == route::answer_locally);
  CHECK(send(r, bind("", "")).where == route::answer_locally);
  // The next unnamed Parse and a Bind too large to hold, which passes through.
  CHECK(send(r, parse("", "select $1")).where == route::to_server);
  CHECK(r.on_streamed('B', bind("", "")));
  // Its Execute is the server's, not another DEALLOCATE.
  CHECK(r.plan_frame('E', execute("")).where == route::to_server);
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
  send(r, parse("", "select 0"));
  send(r, parse("", "EXECUTE p"));
  send(r, bind("", ""));
  // Before its Parse: pgstash's own Parse/Bind/Execute/Close/Close of each
  // statement, under a name that does not disturb the client's unnamed
  // one (a Query would end the batch).
  const auto sent = frames_of(r.to_server());
  REQUIRE(sent.size() == 13);
  std::string tags;
  for (const auto& f : sent) tags += f.first;
  CHECK(tags == "PPBECCPBECCPB");
  wire::parse_message deallocate, prepare;
  REQUIRE_FALSE(wire::parse_parse(sent[1].second, deallocate));
  REQUIRE_FALSE(wire::parse_parse(sent[6].second, prepare));
  CHECK(deallocate.statement == "pgstash_internal");
  CHECK(deallocate.query == "DEALLOCATE \"p\"");
  CHECK(prepare.query == "PREPARE p AS SELECT 1");
  CHECK(second.sql_prepared.at("p") == "PREPARE p AS SELECT 1");
  // pgstash's own answers are not the client's.
  CHECK(answer(r, backend_tag::parse_complete) == action::forward);  // the client's first Parse
  for (backend_tag t : {backend_tag::parse_complete, backend_tag::bind_complete, backend_tag::command_complete,
                        backend_tag::close_complete, backend_tag::close_complete})
    CHECK(answer(r, t, std::string("X\0", 2)) == action::drop);
}

// A client whose SQL prepared statement `p` (SELECT 1) is on one server, and
// who is attached to `second`, where another client's `p` is.
struct moved_sql_prepared {
  relay r = make_relay();
  pool::server_state first{10};
  pool::server_state second{10};
  explicit moved_sql_prepared(const std::string& prepare = "PREPARE p AS SELECT 1") {
    r.attach(first);
    send(r, query(prepare));
    answer(r, backend_tag::command_complete, std::string("PREPARE\0", 8));
    answer(r, backend_tag::ready_for_query, ready('I'));
    r.detach();
    second.sql_prepared["p"] = "PREPARE p AS SELECT 2";
    r.attach(second);
    r.to_server().clear();
  }
  // The client's own request follows pgstash's DEALLOCATE (if another
  // client's p is there) and PREPARE: their answers, the PREPARE failing
  // with `prepare_error`.
  void answer_sync(std::string_view prepare_error, bool deallocate = true) {
    if (deallocate) {
      answer(r, backend_tag::command_complete, std::string("DEALLOCATE\0", 11));
      CHECK(answer(r, backend_tag::ready_for_query, ready('I')) == action::drop);
    }
    CHECK(answer(r, backend_tag::error_response, prepare_error) == action::drop);
    CHECK(answer(r, backend_tag::ready_for_query, ready('I')) == action::drop);
  }
};

TEST_CASE("relay: SQL-level statements are re-created before a batch that uses them, as Queries") {
  moved_sql_prepared m;
  send(m.r, parse("", "EXECUTE p"));
  CHECK(tags_of(m.r.to_server()) == "QQP");
}

TEST_CASE("relay: the error of re-creating a SQL prepared statement is the one its EXECUTE gets") {
  moved_sql_prepared m;
  send(m.r, query("SELECT 0; EXECUTE p"));
  std::string error;
  wire::write_error(error, "ERROR", "42P01", "relation \"t\" does not exist");
  m.answer_sync(error.substr(5));
  CHECK_FALSE(m.second.sql_prepared.contains("p"));
  // Statements before the EXECUTE run as they would; the EXECUTE's 26000
  // becomes the error of analysing p again.
  CHECK(answer(m.r, backend_tag::command_complete, std::string("SELECT 1\0", 9)) ==
        action::forward);
  CHECK(answer(m.r, backend_tag::error_response, missing_body("p")) == action::replace);
  CHECK(m.r.take_replacement() == error);
  CHECK(answer(m.r, backend_tag::ready_for_query, ready('I')) == action::forward);
}

TEST_CASE(
    "relay: an EXECUTE with the wrong number of arguments gets that error, not the re-creation's") {
  for (const std::string arguments : {"", "(1, 2)", "(1)"}) {
    CAPTURE(arguments);
    moved_sql_prepared m("PREPARE p (int) AS SELECT $1");
    send(m.r, query("EXECUTE p" + arguments));
    m.answer_sync(error_body("42P01"));
    CHECK(answer(m.r, backend_tag::error_response, missing_body("p")) == action::replace);
    const auto fields = fields_of(m.r.take_replacement());
    CHECK(fields.at('C') == (arguments == "(1)" ? "42P01" : "42601"));
    if (arguments.empty()) CHECK(fields.at('D') == "Expected 1 parameters but got 0.");
  }
  // One that takes none ignores arguments, as PostgreSQL does.
  moved_sql_prepared none;
  send(none.r, query("EXECUTE p(1)"));
  none.answer_sync(error_body("42P01"));
  CHECK(answer(none.r, backend_tag::error_response, missing_body("p")) == action::replace);
  const auto fields = fields_of(none.r.take_replacement());
  CHECK(fields.at('C') == "42P01");
}

TEST_CASE("relay: where pgstash's own Describe of an EXECUTE fails, the client's request fails") {
  // Its prepared statement no longer analyses (another search_path, say):
  // PostgreSQL finds out where it describes the portal's rows, after it
  // checked the Bind.
  for (const std::size_t supplied : {0, 1}) {
    CAPTURE(supplied);
    relay r = make_relay();
    pool::server_state server(10);
    r.attach(server);
    run(r, "PREPARE p AS SELECT * FROM t", {"PREPARE"}, 'I');
    send(r, parse("s", "EXECUTE p"));
    std::string bound;
    wire::write_bind(bound, "", "s",
                     std::vector<std::optional<std::string_view>>(supplied, std::string_view("1")));
    send(r, bound);
    send(r, describe('P', ""));
    send(r, execute(""));
    send(r, sync());
    CHECK(answer(r, backend_tag::close_complete) == action::drop);
    CHECK(answer(r, backend_tag::parse_complete) == action::forward);
    CHECK(answer(r, backend_tag::parameter_description, std::string("\0\0", 2)) == action::drop);
    if (supplied == 0) {
      CHECK(answer(r, backend_tag::error_response, error_body("42P01")) == action::replace);
      CHECK(tags_of(r.take_replacement()) == "2E");
    } else {
      // PostgreSQL refuses this Bind with another error; this one stays.
      CHECK(answer(r, backend_tag::error_response, error_body("42P01")) == action::forward);
    }
    CHECK(answer(r, backend_tag::ready_for_query, ready('I')) == action::forward);
  }
}

TEST_CASE("relay: pgstash's own Query does not end the portals of the batch it runs before") {
  moved_sql_prepared m;
  send(m.r, parse("s", "select 1"));
  send(m.r, sync());
  answer(m.r, backend_tag::close_complete);
  answer(m.r, backend_tag::parse_complete);
  answer(m.r, backend_tag::parameter_description, std::string("\0\0", 2));
  answer(m.r, backend_tag::row_description, std::string("\0\0", 2));
  answer(m.r, backend_tag::ready_for_query, ready('I'));
  // A portal that DEALLOCATEs s, which pgstash answers for, then a
  // statement whose SQL prepared statement is re-created by Queries.
  CHECK(send(m.r, parse("", "DEALLOCATE s")).where == route::answer_locally);
  CHECK(send(m.r, bind("d", "")).where == route::answer_locally);
  send(m.r, parse("", "EXECUTE p"));
  answer(m.r, backend_tag::command_complete, std::string("DEALLOCATE\0", 11));
  CHECK(answer(m.r, backend_tag::ready_for_query, ready('I')) == action::drop);
  answer(m.r, backend_tag::command_complete, std::string("PREPARE\0", 8));
  CHECK(answer(m.r, backend_tag::ready_for_query, ready('I')) == action::drop);
  CHECK(send(m.r, execute("d")).where == route::answer_locally);
}

TEST_CASE("relay: a Bind of an EXECUTE's statement that the server refuses is refused") {
  relay r = make_relay();
  pool::server_state server(10);
  r.attach(server);
  run(r, "PREPARE p AS SELECT 1", {"PREPARE"}, 'I');
  send(r, parse("s", "EXECUTE p"));
  auto sent = frames_of(r.to_server());
  wire::parse_message p;
  REQUIRE_FALSE(wire::parse_parse(sent.at(sent.size() - 2).second, p));
  const std::string server_name(p.statement);
  std::string with_parameter;
  wire::write_bind(with_parameter, "", "s", {std::string_view("1")});
  send(r, with_parameter);
  send(r, execute(""));
  send(r, sync());
  answer(r, backend_tag::close_complete);
  answer(r, backend_tag::parse_complete);
  answer(r, backend_tag::parameter_description, std::string("\0\0", 2));
  answer(r, backend_tag::row_description, std::string("\0\0", 2));
  std::string refused;
  wire::write_error(refused, "ERROR", "08P01",
                    "bind message supplies 1 parameters, but prepared statement \"" + server_name +
                        "\" requires 0");
  CHECK(answer(r, backend_tag::error_response, refused.substr(5)) == action::replace);
  CHECK(tags_of(r.take_replacement()) == "E");
}

TEST_CASE(
    "relay: a held re-creation error is dropped when the client's statement fails otherwise") {
  moved_sql_prepared m;
  send(m.r, query("SELECT 1/0; EXECUTE p"));
  m.answer_sync(error_body("42P01"));
  CHECK(answer(m.r, backend_tag::error_response, error_body("22012")) == action::forward);
  CHECK(answer(m.r, backend_tag::ready_for_query, ready('I')) == action::forward);
  // Not given to a later statement.
  send(m.r, query("EXECUTE p"));
  m.answer_sync(error_body("42P01"), false);
  CHECK(answer(m.r, backend_tag::error_response, missing_body("p")) == action::replace);
}

TEST_CASE("relay: inside a transaction, SQL prepared statements are re-created under a savepoint") {
  moved_sql_prepared m;
  send(m.r, query("BEGIN"));
  answer(m.r, backend_tag::command_complete, std::string("BEGIN\0", 6));
  answer(m.r, backend_tag::ready_for_query, ready('T'));
  m.r.to_server().clear();
  send(m.r, query("EXECUTE p"));
  std::vector<std::string> sql;
  for (const auto& [tag, body] : frames_of(m.r.to_server()))
    sql.push_back(body.substr(0, body.size() - 1));
  CHECK(sql == std::vector<std::string>{
                   "SAVEPOINT pgstash_prepare", "DEALLOCATE \"p\"", "PREPARE p AS SELECT 1",
                   "ROLLBACK TO SAVEPOINT pgstash_prepare; RELEASE SAVEPOINT pgstash_prepare",
                   "EXECUTE p"});
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

// A client whose statement s2 (two text parameters, returning rows when
// `rows`) was prepared and described on one server, and whose transaction
// then failed on another, where s2 is not prepared.
struct failed_elsewhere {
  relay r = make_relay();
  pool::server_state first{10};
  pool::server_state second{10};
  explicit failed_elsewhere(bool rows, bool failed = true) {
    r.attach(first);
    send(r, parse("s2", rows ? "SELECT $1::text || $2::text" : "INSERT INTO t VALUES ($1, $2)"));
    send(r, sync());
    answer(r, backend_tag::close_complete);
    answer(r, backend_tag::parse_complete);
    answer(r, backend_tag::parameter_description, std::string("\0\2\0\0\0\x19\0\0\0\x19", 10));
    answer(r, rows ? backend_tag::row_description : backend_tag::no_data, std::string("\0\0", 2));
    answer(r, backend_tag::ready_for_query, ready('I'));
    r.detach();
    r.attach(second);
    if (failed) {
      send(r, query("BEGIN; SELECT 1/0"));
      answer(r, backend_tag::command_complete, std::string("BEGIN\0", 6));
      answer(r, backend_tag::error_response, error_body("22012"));
      answer(r, backend_tag::ready_for_query, ready('E'));
    }
    r.to_server().clear();
  }
  // What the client gets for `frames` (without a server's answer).
  std::string answers(std::initializer_list<std::string> frames) {
    for (const auto& f : frames) send(r, f);
    std::string out;
    r.take_synthetic(out);
    return out;
  }
};

std::string bind_with(std::string_view statement, std::size_t parameters) {
  std::string out;
  wire::write_bind(out, "", statement,
                   std::vector<std::optional<std::string_view>>(parameters, "x"));
  return out;
}

TEST_CASE(
    "relay: in a failed transaction, a statement prepared elsewhere is described as PostgreSQL "
    "would") {
  failed_elsewhere no_rows(false);
  const std::string answers = no_rows.answers({describe('S', "s2")});
  CHECK(tags_of(answers) == "tn");
  CHECK(frames_of(answers)[0].second == std::string("\0\2\0\0\0\x19\0\0\0\x19", 10));
  CHECK(no_rows.r.to_server().empty());
  // One returning rows: PostgreSQL refuses to describe them there.
  failed_elsewhere rows(true);
  rows.answers({describe('S', "s2")});
  CHECK(tags_of(rows.r.to_server()) == "P");  // the server is made to fail too
  std::string syntax;
  wire::write_error(syntax, "ERROR", "42601", "syntax error");
  CHECK(answer(rows.r, backend_tag::error_response, syntax.substr(5)) == action::replace);
  const auto fields = fields_of(rows.r.take_replacement());
  CHECK(fields.at('C') == "25P02");
}

TEST_CASE(
    "relay: a statement prepared elsewhere is described as parsed, its rows as they are now") {
  const std::string parameters("\0\2\0\0\0\x19\0\0\0\x19", 10);
  failed_elsewhere no_rows(false, false);
  // Parameters are fixed when the client parsed it: no server needed.
  CHECK(tags_of(no_rows.answers({describe('S', "s2")})) == "tn");
  CHECK(no_rows.r.to_server().empty());
  // Rows: the server prepares the text again, and either describes them or
  // fails after the parameters, as PostgreSQL does when it checks it again.
  failed_elsewhere rows(true, false);
  CHECK(tags_of(rows.answers({describe('S', "s2")})) == "t");
  CHECK(tags_of(rows.r.to_server()) == "CPD");
  answer(rows.r, backend_tag::close_complete);
  answer(rows.r, backend_tag::parse_complete);
  CHECK(answer(rows.r, backend_tag::parameter_description, parameters) == action::drop);
  CHECK(answer(rows.r, backend_tag::row_description, std::string("\0\0", 2)) == action::forward);
}

TEST_CASE("relay: a failed transaction is known behind owed requests that cannot end it") {
  failed_elsewhere f(false);
  send(f.r, query("SELECT 1"));  // owed: it fails too
  f.r.to_server().clear();
  send(f.r, bind_with("s2", 2));
  // Not prepared there: the server is only made to fail in its turn, with
  // the error PostgreSQL gives.
  CHECK(tags_of(f.r.to_server()) == "P");
  // Behind a ROLLBACK, it is not.
  failed_elsewhere g(false);
  send(g.r, query("ROLLBACK"));
  g.r.to_server().clear();
  send(g.r, bind_with("s2", 2));
  CHECK(tags_of(g.r.to_server()) == "CPB");
}

TEST_CASE(
    "relay: in a failed transaction, a Bind's parameter count is checked before the transaction") {
  for (std::size_t given : {0, 2}) {
    CAPTURE(given);
    failed_elsewhere f(false);
    send(f.r, bind_with("s2", given));
    std::string syntax;
    wire::write_error(syntax, "ERROR", "42601", "syntax error");
    CHECK(answer(f.r, backend_tag::error_response, syntax.substr(5)) == action::replace);
    const auto fields = fields_of(f.r.take_replacement());
    CHECK(fields.at('C') == (given == 2 ? "25P02" : "08P01"));
    if (given == 0)
      CHECK(fields.at('M') ==
            "bind message supplies 0 parameters, but prepared statement \"s2\" requires 2");
  }
}

TEST_CASE("relay: ROLLBACK TO a savepoint takes back the settings made after it") {
  relay r = make_relay();
  pool::server_state first(10);
  r.attach(first);
  run(r, "BEGIN; SET DateStyle = 'SQL, DMY'; SAVEPOINT a; SET extra_float_digits = 3",
      {"BEGIN", "SET", "SAVEPOINT", "SET"}, 'T');
  run(r, "ROLLBACK TO a; COMMIT", {"ROLLBACK", "COMMIT"}, 'I');
  r.detach();
  pool::server_state second(10);
  r.attach(second);
  CHECK(r.settings_sql() == "SET \"datestyle\" TO 'SQL, DMY'");
}

TEST_CASE("relay: settings made after a failed transaction ends AND CHAIN are the client's") {
  relay r = make_relay();
  pool::server_state first(10);
  r.attach(first);
  run(r, "BEGIN; SELECT 1/0", {"BEGIN", "!22012"}, 'E');
  run(r, "ROLLBACK AND CHAIN", {"ROLLBACK"}, 'T');
  run(r, "SET application_name = 'chained'", {"SET"}, 'T');
  run(r, "ABORT; SET extra_float_digits = 3", {"ROLLBACK", "SET"}, 'I');
  r.detach();
  pool::server_state second(10);
  r.attach(second);
  // The chained transaction rolled back its SET; the one after ABORT, in
  // a transaction of its own, committed.
  CHECK(r.settings_sql() == "SET \"extra_float_digits\" TO 3");
}

TEST_CASE("relay: the rollback of a client that left inside a transaction undoes its settings") {
  pool::server_state server(10);
  relay left = make_relay();
  left.attach(server);
  run(left, "SET DateStyle = 'SQL, DMY'", {"SET"}, 'I');
  run(left, "BEGIN; RESET DateStyle", {"BEGIN", "RESET"}, 'T');
  std::string out;
  left.roll_back(out);
  CHECK(tags_of(out) == "Q");
  CHECK(answer(left, backend_tag::command_complete, std::string("ROLLBACK\0", 9)) == action::drop);
  CHECK(answer(left, backend_tag::ready_for_query, ready('I')) == action::drop);
  left.detach();
  // The server is back at the DateStyle the RESET had undone.
  relay next = make_relay();
  next.attach(server);
  CHECK(next.settings_sql() == "RESET \"datestyle\"");
}

TEST_CASE("relay: a portal bound in a pipelined batch outlives the end of the batch before it") {
  relay r = make_relay();
  pool::server_state first(10);
  r.attach(first);
  send(r, parse("", "SELECT 1/0"));
  send(r, bind("", ""));
  send(r, execute(""));
  send(r, sync());
  send(r, parse("", "SET extra_float_digits = 3"));
  send(r, bind("p", ""));
  answer(r, backend_tag::parse_complete);
  answer(r, backend_tag::bind_complete);
  answer(r, backend_tag::error_response, error_body("22012"));
  CHECK(answer(r, backend_tag::ready_for_query, ready('I')) == action::forward);
  // The client's Execute came after the server ended the first batch:
  // portal p, bound after that batch's Sync, is still the SET's.
  send(r, execute("p"));
  send(r, sync());
  answer(r, backend_tag::parse_complete);
  answer(r, backend_tag::bind_complete);
  answer(r, backend_tag::command_complete, std::string("SET\0", 4));
  CHECK(answer(r, backend_tag::ready_for_query, ready('I')) == action::forward);
  r.detach();
  pool::server_state second(10);
  r.attach(second);
  CHECK(r.settings_sql() == "SET \"extra_float_digits\" TO 3");
}

TEST_CASE("relay: an error ends copy-in, and the Sync after it is answered") {
  relay r = make_relay();
  pool::server_state server(10);
  r.attach(server);
  send(r, parse("", "COPY t FROM STDIN"));
  send(r, bind("", ""));
  send(r, execute(""));
  send(r, sync());  // ignored by the server in copy-in mode
  answer(r, backend_tag::parse_complete);
  answer(r, backend_tag::bind_complete);
  answer(r, backend_tag::copy_in_response, std::string("\0\0\0", 3));
  CHECK(r.in_copy());
  // A bad row: the server leaves copy-in and skips to the next Sync.
  CHECK(answer(r, backend_tag::error_response, error_body("22P02")) == action::forward);
  CHECK_FALSE(r.in_copy());
  // The server waits for a Sync: the connection is not free, and a client
  // that left now would have its batch ended.
  CHECK_FALSE(r.idle());
  {
    relay copy = make_relay();
    pool::server_state other(10);
    copy.attach(other);
    for (const std::string& f : {parse("", "COPY t FROM STDIN"), bind("", ""), execute(""), sync()})
      send(copy, f);
    for (backend_tag t : {backend_tag::parse_complete, backend_tag::bind_complete}) answer(copy, t);
    answer(copy, backend_tag::copy_in_response, std::string("\0\0\0", 3));
    answer(copy, backend_tag::error_response, error_body("22P02"));
    std::string cleanup;
    copy.end_batch(cleanup);
    CHECK(tags_of(cleanup) == "ES");
  }
  std::string done;
  wire::write_frame(done, 'c', "");
  CHECK(send(r, done).where == route::skip);
  r.to_server().clear();
  CHECK(send(r, sync()).where == route::to_server);
  CHECK(tags_of(r.to_server()) == "S");
  CHECK(answer(r, backend_tag::ready_for_query, ready('I')) == action::forward);
  CHECK(r.idle());
  // The next batch is answered in full.
  send(r, parse("", "select 1"));
  CHECK(answer(r, backend_tag::parse_complete) == action::forward);
}

TEST_CASE(
    "relay: COPY data is never held back behind a Query that changes SQL prepared statements") {
  relay r = make_relay();
  pool::server_state server(10);
  r.attach(server);
  send(r, query("DEALLOCATE ALL; COPY t FROM STDIN"));
  CHECK(r.must_wait());  // a next batch would wait for the DEALLOCATE
  answer(r, backend_tag::command_complete, std::string("DEALLOCATE ALL\0", 15));
  answer(r, backend_tag::copy_in_response, std::string("\0\0\0", 3));
  // The Query's ReadyForQuery comes only after the client's data.
  CHECK_FALSE(r.must_wait());
}

}  // namespace
}  // namespace pgstash::proxy
