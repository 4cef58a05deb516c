// The protocol features a proxy must relay faithfully: cancel requests,
// asynchronous notifications, pipelining, multi-statement queries, COPY in
// both directions, and a result far larger than pgstash's buffers.
#include <algorithm>
#include <random>

#include <doctest/doctest.h>

#include "harness.hpp"

namespace pgstash::itest {
namespace {

std::string value(const result_ptr& r, int row = 0, int col = 0) {
  if (!r || PQntuples(r.get()) <= row || PQnfields(r.get()) <= col) return "<none>";
  return PQgetvalue(r.get(), row, col);
}

TEST_CASE("protocol: a CancelRequest through pgstash cancels the running query") {
  pgstash_instance px;
  pg_conn direct(direct_conninfo());
  pg_conn c(px.conninfo());
  const std::string tag = "itest_cancel_" + unique_suffix();
  const std::string running = "select 1 from pg_stat_activity where query like '%" + tag +
                              "%' and pid <> pg_backend_pid() and state = 'active'";
  REQUIRE(PQsendQuery(c.get(), ("select pg_sleep(30) /* " + tag + " */").c_str()));
  REQUIRE(eventually([&] { return direct.exec(running) == "1"; }, seconds(5)));

  // A CancelRequest with the right pid and a wrong secret must do nothing.
  {
    raw_conn bogus(px.port());
    const std::uint32_t pid = static_cast<std::uint32_t>(c.backend_pid());
    REQUIRE(bogus.send(be32(16) + be32(80877102) + be32(pid) + be32(0x12345678)));
    CHECK(bogus.wait_closed(seconds(5)));
  }
  sleep_for(milliseconds(300));
  CHECK(direct.exec(running) == "1");

  // libpq's own cancel, with the BackendKeyData pgstash gave it.
  PGcancel* cancel = PQgetCancel(c.get());
  REQUIRE(cancel);
  char errbuf[256] = {};
  const auto t0 = clock::now();
  const int sent = PQcancel(cancel, errbuf, sizeof errbuf);
  PQfreeCancel(cancel);
  CAPTURE(std::string(errbuf));
  REQUIRE(sent == 1);
  result_ptr r = c.next_result(clock::now() + seconds(5));
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_FATAL_ERROR);
  CHECK(sqlstate_of(r.get()) == "57014");
  CHECK(seconds_since(t0) < 2.0);
  CHECK_FALSE(c.next_result(clock::now() + seconds(5)));
  CHECK(c.exec("select 'still usable'") == "still usable");
}

TEST_CASE("protocol: LISTEN/NOTIFY between two clients") {
  pgstash_instance px;
  pg_conn a(px.conninfo());
  pg_conn b(px.conninfo());
  const std::string channel = "itest_chan_" + unique_suffix();
  a.exec("listen " + channel);
  b.exec("notify " + channel + ", 'hello from b'");

  const auto deadline = clock::now() + seconds(5);
  PGnotify* n = nullptr;
  for (;;) {
    PQconsumeInput(a.get());
    n = PQnotifies(a.get());
    if (n || clock::now() >= deadline) break;
    a.wait_input(deadline);
  }
  REQUIRE(n != nullptr);
  CHECK(std::string(n->relname) == channel);
  CHECK(std::string(n->extra) == "hello from b");
  CHECK(n->be_pid == b.backend_pid());
  PQfreemem(n);

  // Also while the listener is itself busy with a query.
  b.exec("notify " + channel + ", 'second'");
  CHECK(a.exec("select 7, pg_sleep(0.05)") == "7");
  PQconsumeInput(a.get());
  n = PQnotifies(a.get());
  REQUIRE(n != nullptr);
  CHECK(std::string(n->extra) == "second");
  PQfreemem(n);
}

TEST_CASE("protocol: libpq pipeline mode with an error in the middle") {
  pgstash_instance px;
  pg_conn c(px.conninfo());
  auto deadline = clock::now() + seconds(15);
  REQUIRE(PQenterPipelineMode(c.get()) == 1);

  const char* forty_one[] = {"41"};
  REQUIRE(
      PQsendQueryParams(c.get(), "select $1::int + 1", 1, nullptr, forty_one, nullptr, nullptr, 0));
  REQUIRE(PQsendQueryParams(c.get(), "select 1/0", 0, nullptr, nullptr, nullptr, nullptr, 0));
  REQUIRE(PQsendQueryParams(c.get(), "select 'skipped'", 0, nullptr, nullptr, nullptr, nullptr, 0));
  REQUIRE(PQpipelineSync(c.get()) == 1);
  // After the sync, a second batch that must succeed.
  const char* text[] = {"abc"};
  REQUIRE(PQsendQueryParams(c.get(), "select upper($1)", 1, nullptr, text, nullptr, nullptr, 0));
  REQUIRE(PQsendQueryParams(c.get(), "select 2 + 2", 0, nullptr, nullptr, nullptr, nullptr, 0));
  REQUIRE(PQpipelineSync(c.get()) == 1);

  result_ptr r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_TUPLES_OK);
  CHECK(value(r) == "42");
  CHECK_FALSE(c.next_result(deadline));

  r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_FATAL_ERROR);
  CHECK(sqlstate_of(r.get()) == "22012");
  CHECK_FALSE(c.next_result(deadline));

  r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_PIPELINE_ABORTED);
  CHECK_FALSE(c.next_result(deadline));

  r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_PIPELINE_SYNC);

  r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_TUPLES_OK);
  CHECK(value(r) == "ABC");
  CHECK_FALSE(c.next_result(deadline));
  r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(value(r) == "4");
  CHECK_FALSE(c.next_result(deadline));
  r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_PIPELINE_SYNC);

  CHECK(PQexitPipelineMode(c.get()) == 1);
  CHECK(c.exec("select 'after pipeline'") == "after pipeline");

  // The extended protocol outside pipelines: a named prepared statement.
  REQUIRE(PQsendPrepare(c.get(), "itest_named", "select $1::int * 2", 1, nullptr));
  result_ptr prep = c.next_result(deadline);
  REQUIRE(prep);
  REQUIRE(PQresultStatus(prep.get()) == PGRES_COMMAND_OK);
  CHECK_FALSE(c.next_result(deadline));
  const char* twenty_one[] = {"21"};
  REQUIRE(PQsendQueryPrepared(c.get(), "itest_named", 1, twenty_one, nullptr, nullptr, 0));
  result_ptr ex = c.next_result(deadline);
  CHECK_FALSE(c.next_result(deadline));
  CHECK(value(ex) == "42");
}

TEST_CASE("protocol: several statements in one simple query") {
  pgstash_instance px;
  pg_conn c(px.conninfo());
  auto results = c.exec_all(
      "create temp table itest_multi(x int); insert into itest_multi values (1), (2); "
      "select sum(x) from itest_multi; select 'two'");
  REQUIRE(results.size() == 4);
  CHECK(PQresultStatus(results[0].get()) == PGRES_COMMAND_OK);
  CHECK(PQresultStatus(results[1].get()) == PGRES_COMMAND_OK);
  CHECK(std::string(PQcmdTuples(results[1].get())) == "2");
  CHECK(value(results[2]) == "3");
  CHECK(value(results[3]) == "two");

  // An error stops the rest, and the implicit transaction rolls back what came before it.
  auto failed = c.exec_all(
      "insert into itest_multi values (100); select 1/0; insert into itest_multi values (1000)");
  REQUIRE(failed.size() == 2);
  CHECK(PQresultStatus(failed[0].get()) == PGRES_COMMAND_OK);
  CHECK(sqlstate_of(failed[1].get()) == "22012");
  CHECK(c.exec("select sum(x) from itest_multi") == "3");
  CHECK(PQtransactionStatus(c.get()) == PQTRANS_IDLE);
}

TEST_CASE("protocol: COPY FROM STDIN and TO STDOUT") {
  pgstash_instance px;
  pg_conn c(px.conninfo());
  auto deadline = clock::now() + seconds(30);
  c.exec("create temp table itest_copy(a int, b text)");

  constexpr int k_rows = 20000;
  REQUIRE(PQsendQuery(c.get(), "copy itest_copy from stdin"));
  result_ptr r = c.next_result(deadline);
  REQUIRE(PQresultStatus(r.get()) == PGRES_COPY_IN);
  std::string chunk;
  std::size_t expected_bytes = 0;
  for (int i = 1; i <= k_rows; ++i) {
    std::string line = std::to_string(i) + "\tvalue number " + std::to_string(i * 7) + "\n";
    expected_bytes += line.size();
    chunk += line;
    if (chunk.size() > 30000 || i == k_rows) {
      REQUIRE(PQputCopyData(c.get(), chunk.data(), static_cast<int>(chunk.size())) == 1);
      chunk.clear();
    }
  }
  REQUIRE(PQputCopyEnd(c.get(), nullptr) == 1);
  r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_COMMAND_OK);
  CHECK(std::string(PQcmdTuples(r.get())) == std::to_string(k_rows));
  CHECK_FALSE(c.next_result(deadline));
  CHECK(c.exec("select sum(a) from itest_copy") == std::to_string(k_rows * (k_rows + 1LL) / 2));

  REQUIRE(PQsendQuery(c.get(), "copy (select a, b from itest_copy order by a) to stdout"));
  r = c.next_result(deadline);
  REQUIRE(PQresultStatus(r.get()) == PGRES_COPY_OUT);
  std::size_t rows = 0, bytes = 0;
  bool first_ok = false;
  for (;;) {
    char* buf = nullptr;
    int n = PQgetCopyData(c.get(), &buf, 1);
    if (n > 0) {
      if (rows == 0)
        first_ok = std::string(buf, static_cast<std::size_t>(n)) == "1\tvalue number 7\n";
      ++rows;
      bytes += static_cast<std::size_t>(n);
      PQfreemem(buf);
      continue;
    }
    if (n == 0) {
      REQUIRE(c.wait_input(deadline));
      continue;
    }
    break;
  }
  CHECK(first_ok);
  CHECK(rows == k_rows);
  CHECK(bytes == expected_bytes);
  r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_COMMAND_OK);
  CHECK_FALSE(c.next_result(deadline));

  // The client aborts a COPY (CopyFail): the server reports 57014, nothing is loaded.
  REQUIRE(PQsendQuery(c.get(), "copy itest_copy from stdin"));
  r = c.next_result(deadline);
  REQUIRE(PQresultStatus(r.get()) == PGRES_COPY_IN);
  REQUIRE(PQputCopyData(c.get(), "999999\tnever\n", 14) == 1);
  REQUIRE(PQputCopyEnd(c.get(), "itest changed its mind") == 1);
  r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(sqlstate_of(r.get()) == "57014");
  CHECK_FALSE(c.next_result(deadline));

  // Bad data: the server refuses it, the session goes on.
  REQUIRE(PQsendQuery(c.get(), "copy itest_copy from stdin"));
  r = c.next_result(deadline);
  REQUIRE(PQresultStatus(r.get()) == PGRES_COPY_IN);
  REQUIRE(PQputCopyData(c.get(), "not a number\tx\n", 16) == 1);
  REQUIRE(PQputCopyEnd(c.get(), nullptr) == 1);
  r = c.next_result(deadline);
  REQUIRE(r);
  CHECK(sqlstate_of(r.get()) == "22P02");
  CHECK_FALSE(c.next_result(deadline));
  CHECK(c.exec("select count(*) from itest_copy") == std::to_string(k_rows));
}

TEST_CASE("protocol: a 100 MB result streams through with bounded pgstash memory") {
  pgstash_instance px;
  pg_conn c(px.conninfo());
  CHECK(c.exec("select repeat('w', 100000)").size() == 100000);  // warm up buffers
  const long before = px.rss_kb();
  REQUIRE(before > 0);
  long peak = before;
  auto sample = [&] { peak = std::max(peak, px.rss_kb()); };

  const auto deadline = clock::now() + seconds(120);
  REQUIRE(PQsendQuery(c.get(), "select repeat('x', 1000) from generate_series(1, 100000)"));
  REQUIRE(PQsetSingleRowMode(c.get()) == 1);
  std::size_t rows = 0, bytes = 0;
  bool ended_ok = false;
  while (result_ptr r = c.next_result(deadline)) {
    ExecStatusType st = PQresultStatus(r.get());
    if (st == PGRES_SINGLE_TUPLE) {
      ++rows;
      bytes += static_cast<std::size_t>(PQgetlength(r.get(), 0, 0));
      if (rows % 5000 == 0) sample();
      if (rows == 1000) {
        // A slow reader: the server keeps producing; pgstash must not buffer it all.
        for (int i = 0; i < 10; ++i) {
          sleep_for(milliseconds(50));
          sample();
        }
      }
      continue;
    }
    CAPTURE(std::string(PQresultErrorMessage(r.get())));
    ended_ok = st == PGRES_TUPLES_OK;
  }
  sample();
  CHECK(ended_ok);
  CHECK(rows == 100000);
  CHECK(bytes == 100000u * 1000u);
  const long after = px.rss_kb();
  sample();
  CAPTURE(before);
  CAPTURE(peak);
  CAPTURE(after);
  CHECK(peak - before < 64 * 1024);
  CHECK(after - before < 64 * 1024);
  CHECK(c.exec("select 'done'") == "done");
}

TEST_CASE("protocol: a departed client's cancel key cannot cancel the next client's query") {
  pgstash_instance px({"pool.size = 1"});
  pg_conn direct(direct_conninfo());
  PGcancel* stale = nullptr;
  int a_pid = 0;
  {
    pg_conn a(px.conninfo());
    a_pid = a.backend_pid();
    stale = PQgetCancel(a.get());
  }
  REQUIRE(stale);
  pg_conn b(px.conninfo(), seconds(10));
  REQUIRE(b.backend_pid() == a_pid);  // same server backend, so the same pid in the key
  const std::string tag = "itest_stale_" + unique_suffix();
  const std::string running = "select 1 from pg_stat_activity where query like '%" + tag +
                              "%' and pid <> pg_backend_pid() and state = 'active'";
  REQUIRE(PQsendQuery(b.get(), ("select pg_sleep(1.5), 'survived' /* " + tag + " */").c_str()));
  REQUIRE(eventually([&] { return direct.exec(running) == "1"; }, seconds(5)));
  char errbuf[256] = {};
  PQcancel(stale, errbuf, sizeof errbuf);
  PQfreeCancel(stale);
  result_ptr r = b.next_result(clock::now() + seconds(10));
  REQUIRE(r);
  CAPTURE(std::string(PQresultErrorMessage(r.get())));
  CHECK(PQresultStatus(r.get()) == PGRES_TUPLES_OK);
  CHECK(value(r, 0, 1) == "survived");
  CHECK_FALSE(b.next_result(clock::now() + seconds(5)));
}

TEST_CASE(
    "protocol: a client asking for protocol 3.1 and _pq_ options gets NegotiateProtocolVersion") {
  pgstash_instance px;
  raw_conn c(px.port());
  REQUIRE(c.send(startup_packet(
      {{"user", "postgres"}, {"database", "pgstash_test"}, {"_pq_.itest_option", "on"}},
      (3u << 16) | 1u)));
  auto m = c.read_message(seconds(5));
  REQUIRE(m);
  REQUIRE(m->tag == 'v');
  REQUIRE(m->body.size() >= 8);
  const auto* v = reinterpret_cast<const unsigned char*>(m->body.data());
  const unsigned long version = (v[0] << 24) | (v[1] << 16) | (v[2] << 8) | v[3];
  CAPTURE(version);
  // The newest version supported, 3.0, as PostgreSQL sends it (PG_PROTOCOL_LATEST, major << 16
  // | minor); newer libpq rejects anything below 3.0 here as a downgrade to protocol 2.
  CHECK(m->body.substr(0, 4) == be32(196608));
  CHECK(m->body.substr(4, 4) == be32(1));  // one option not recognized
  CHECK(m->body.substr(8) == std::string("_pq_.itest_option\0", 18));
  auto rest = c.read_until_ready();
  CHECK(rest.back().tag == 'Z');
  REQUIRE(c.send(query_frame("select 1")));
  CHECK(c.read_until_ready().front().tag == 'T');
}

TEST_CASE("protocol: a large COPY FROM STDIN in big messages streams with bounded memory") {
  pgstash_instance px;
  pg_conn c(px.conninfo());
  c.exec("create temp table itest_bigcopy(t text)");
  const long before = px.rss_kb();
  REQUIRE(before > 0);
  long peak = before;
  const auto deadline = clock::now() + seconds(120);
  REQUIRE(PQsendQuery(c.get(), "copy itest_bigcopy from stdin"));
  result_ptr r = c.next_result(deadline);
  REQUIRE(PQresultStatus(r.get()) == PGRES_COPY_IN);
  // 4 MB CopyData messages, each far larger than pgstash's I/O buffer: 96 MB in all.
  std::string row = std::string(1023, 'c') + "\n";
  std::string chunk;
  while (chunk.size() < (4u << 20)) chunk += row;
  for (int i = 0; i < 24; ++i) {
    REQUIRE(PQputCopyData(c.get(), chunk.data(), static_cast<int>(chunk.size())) == 1);
    peak = std::max(peak, px.rss_kb());
  }
  REQUIRE(PQputCopyEnd(c.get(), nullptr) == 1);
  r = c.next_result(deadline);
  REQUIRE(r);
  CAPTURE(std::string(PQresultErrorMessage(r.get())));
  CHECK(PQresultStatus(r.get()) == PGRES_COMMAND_OK);
  CHECK(std::string(PQcmdTuples(r.get())) == std::to_string(24 * (chunk.size() / row.size())));
  CHECK_FALSE(c.next_result(deadline));
  peak = std::max(peak, px.rss_kb());
  CAPTURE(before);
  CAPTURE(peak);
  CHECK(peak - before < 64 * 1024);
}

TEST_CASE(
    "protocol: a server message beyond limits.max_message_size ends the session with an error") {
  pgstash_instance px({"limits.max_message_size = 1048576"});
  pg_conn c(px.conninfo());
  CHECK(c.exec("select length(repeat('s', 900000))") == "900000");
  auto results = c.exec_all("select repeat('s', 2000000)", seconds(15));
  REQUIRE_FALSE(results.empty());
  const PGresult* last = results.back().get();
  CAPTURE(std::string(PQresultErrorMessage(last)));
  CHECK(PQresultStatus(last) == PGRES_FATAL_ERROR);
  // Not a bare close: pgstash says why with a FATAL 08P01, as PostgreSQL does before closing.
  // libpq then reports the close itself as one more result, so look at all of them.
  bool said_why = false;
  for (const auto& r : results) said_why |= sqlstate_of(r.get()) == "08P01";
  CHECK(said_why);
  CHECK(px.alive());
  pg_conn again(px.conninfo());
  CHECK(again.exec("select 1") == "1");
}

TEST_CASE("protocol: a query sent right behind the startup packet is not lost") {
  pgstash_instance px;
  raw_conn c(px.port());
  REQUIRE(c.send(startup_packet({{"user", "postgres"}, {"database", "pgstash_test"}}) +
                 query_frame("select 'early bird'")));
  c.read_until_ready();  // the login
  auto reply = c.read_until_ready(seconds(5));
  REQUIRE(reply.size() >= 3);
  CHECK(reply[0].tag == 'T');
  CHECK(reply[1].tag == 'D');
  CHECK(reply[1].body.find("early bird") != std::string::npos);
}

TEST_CASE("protocol: every byte arrives intact with the smallest io_buffer_size") {
  // Frames straddle buffer boundaries all the time here, plain and over TLS.
  pgstash_instance px({"limits.io_buffer_size = 4096",
                       "listen.tls_cert_file = " + toml_string(cluster_server_cert()),
                       "listen.tls_key_file = " + toml_string(cluster_server_key())});
  for (const char* mode : {"sslmode=disable", "sslmode=require"}) {
    CAPTURE(mode);
    pg_conn c(px.conninfo(mode));
    const auto deadline = clock::now() + seconds(60);
    REQUIRE(PQsendQuery(c.get(),
                        "select i, repeat(chr(65 + i % 26), i % 3000) from generate_series(1, "
                        "12000) i"));
    REQUIRE(PQsetSingleRowMode(c.get()) == 1);
    int rows = 0, bad = 0;
    while (result_ptr r = c.next_result(deadline)) {
      if (PQresultStatus(r.get()) != PGRES_SINGLE_TUPLE) {
        CHECK(PQresultStatus(r.get()) == PGRES_TUPLES_OK);
        continue;
      }
      ++rows;
      const int i = std::atoi(PQgetvalue(r.get(), 0, 0));
      const std::string v(PQgetvalue(r.get(), 0, 1),
                          static_cast<std::size_t>(PQgetlength(r.get(), 0, 1)));
      if (i != rows ||
          v != std::string(static_cast<std::size_t>(i % 3000), static_cast<char>(65 + i % 26)))
        ++bad;
    }
    CHECK(rows == 12000);
    CHECK(bad == 0);

    // Many small messages each way, with notifications interleaved.
    const std::string channel = "itest_small_" + unique_suffix();
    c.exec("listen " + channel);
    REQUIRE(PQenterPipelineMode(c.get()) == 1);
    for (int i = 0; i < 300; ++i) {
      const std::string sql = i % 50 == 0 ? "notify " + channel + ", '" + std::to_string(i) + "'"
                                          : "select " + std::to_string(i);
      REQUIRE(PQsendQueryParams(c.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0));
    }
    REQUIRE(PQpipelineSync(c.get()) == 1);
    int ok = 0;
    for (int i = 0; i < 300; ++i) {
      result_ptr r = c.next_result(deadline);
      REQUIRE(r);
      if (i % 50 != 0 && PQntuples(r.get()) == 1 &&
          std::string(PQgetvalue(r.get(), 0, 0)) == std::to_string(i))
        ++ok;
      if (i % 50 == 0 && PQresultStatus(r.get()) == PGRES_COMMAND_OK) ++ok;
      CHECK_FALSE(c.next_result(deadline));
    }
    CHECK(ok == 300);
    result_ptr sync = c.next_result(deadline);
    REQUIRE(sync);
    CHECK(PQresultStatus(sync.get()) == PGRES_PIPELINE_SYNC);
    REQUIRE(PQexitPipelineMode(c.get()) == 1);
    int notes = 0;
    PQconsumeInput(c.get());
    while (PGnotify* n = PQnotifies(c.get())) {
      ++notes;
      PQfreemem(n);
    }
    CHECK(notes == 6);
  }
}

}  // namespace
}  // namespace pgstash::itest
