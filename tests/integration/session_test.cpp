// Session pooling: startup parameters reach the server, a server connection is
// reused only after it has been brought back clean, a client that leaves in
// the middle of something does not poison the pool, and the pool's and the
// server connection's limits and timeouts.
#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include <doctest/doctest.h>

#include "harness.hpp"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace pgstash::itest {
namespace {

// A ParameterStatus value libpq has seen, "" if none.
std::string param(const pg_conn& c, const char* name) {
  const char* v = PQparameterStatus(c.get(), name);
  return v ? v : "";
}

TEST_CASE("session: startup parameters reach the server") {
  pgstash_instance px;
  pg_conn c(
      px.conninfo("application_name=itest_app "
                  "options='-c app.tenant=acme -c DateStyle=German -c extra_float_digits=2 "
                  "-c TimeZone=Asia/Tokyo'"));
  CHECK(c.exec("select current_setting('app.tenant')") == "acme");
  CHECK(c.exec("select current_setting('DateStyle')") == "German, DMY");
  CHECK(c.exec("select current_setting('extra_float_digits')") == "2");
  CHECK(c.exec("select current_setting('TimeZone')") == "Asia/Tokyo");
  CHECK(c.exec("select current_setting('application_name')") == "itest_app");
  // And the server's ParameterStatus reports reach the client.
  CHECK(param(c, "DateStyle") == "German, DMY");
  CHECK(param(c, "TimeZone") == "Asia/Tokyo");
  CHECK(param(c, "application_name") == "itest_app");
  CHECK(param(c, "server_version").rfind("15", 0) == 0);
  // A later SET is reported too (ParameterStatus relayed mid-session).
  c.exec("set application_name = 'renamed'");
  CHECK(param(c, "application_name") == "renamed");

  // Another client with other parameters gets its own settings, not the first one's.
  pg_conn d(px.conninfo("options='-c DateStyle=ISO,MDY'"));
  CHECK(d.exec("select current_setting('DateStyle')") == "ISO, MDY");
  CHECK(d.exec("select current_setting('app.tenant', true)") != "acme");
}

TEST_CASE("session: BackendKeyData carries the server backend pid") {
  pgstash_instance px;
  pg_conn c(px.conninfo());
  CHECK(c.backend_pid() != 0);
  CHECK(std::to_string(c.backend_pid()) == c.exec("select pg_backend_pid()"));
}

TEST_CASE("session: a reused server connection carries none of the previous client's state") {
  pgstash_instance px({"pool.size = 1"});
  int first_pid = 0;
  {
    pg_conn a(px.conninfo());
    first_pid = a.backend_pid();
    // No temp table: a backend with a temporary schema is not reused (compatibility_test.py).
    a.exec("set work_mem = '77MB'");
    a.exec("prepare itest_stmt as select 42");
    a.exec("listen itest_channel");
    a.exec("select pg_advisory_lock(424242)");
    a.exec("begin");
    a.exec("select pg_current_xact_id()");
    a.exec("set local search_path = nowhere");
    CHECK(PQtransactionStatus(a.get()) == PQTRANS_INTRANS);
    a.exec("commit");
    // Reported settings changed by A, then a transaction left open.
    a.exec("set application_name = 'dirty'");
    a.exec("set DateStyle = 'SQL, DMY'");
    a.exec("set session authorization pgstash_clear");
    CHECK(a.exec("select current_user") == "pgstash_clear");
    CHECK(param(a, "is_superuser") == "off");
    CHECK(param(a, "DateStyle") == "SQL, DMY");
    a.exec("begin");
    a.exec("select pg_current_xact_id()");
    CHECK(PQtransactionStatus(a.get()) == PQTRANS_INTRANS);
  }  // PQfinish: Terminate in the middle of the transaction

  pg_conn b(px.conninfo(), seconds(10));
  CHECK(b.backend_pid() == first_pid);  // the same server connection, reused
  CHECK(b.exec("select pg_backend_pid()") == std::to_string(first_pid));
  CHECK(b.exec("select current_setting('work_mem')") == "4MB");
  CHECK(b.exec("select count(*) from pg_prepared_statements") == "0");
  CHECK(b.exec("select count(*) from pg_listening_channels()") == "0");
  CHECK(b.exec("select count(*) from pg_locks where locktype = 'advisory' and "
               "pid = pg_backend_pid()") == "0");
  // Not inside A's transaction: this statement starts its own.
  CHECK(b.exec("select pg_current_xact_id_if_assigned() is null") == "t");
  CHECK(b.exec("select xact_start = query_start from pg_stat_activity "
               "where pid = pg_backend_pid()") == "t");
  CHECK(b.exec("select current_setting('search_path')") == "\"$user\", public");
  // What pgstash tells B about the session matches the session, not A's last state.
  CHECK(param(b, "application_name") == b.exec("select current_setting('application_name')"));
  CHECK(param(b, "application_name") != "dirty");
  CHECK(param(b, "DateStyle") == b.exec("select current_setting('DateStyle')"));
  CHECK(param(b, "DateStyle") == "ISO, MDY");
  CHECK(b.exec("select current_user || '/' || session_user") == "postgres/postgres");
  CHECK(param(b, "is_superuser") == "on");
  CHECK(param(b, "session_authorization") == "postgres");
  // A name A used is free again.
  b.exec("prepare itest_stmt as select 43");
  CHECK(b.exec("execute itest_stmt") == "43");
}

// A client leaves in the middle of a transaction, politely (Terminate) or not (socket shut).
void check_abandoned_transaction(bool abrupt, bool failed = false) {
  CAPTURE(abrupt);
  CAPTURE(failed);
  pgstash_instance px({"pool.size = 1"});
  const std::string table = "itest_tx_" + unique_suffix();
  pg_conn direct(direct_conninfo());
  direct.exec("create table " + table + "(x int)");

  int a_pid = 0;
  {
    pg_conn a(px.conninfo());
    a_pid = a.backend_pid();
    a.exec("begin");
    a.exec("insert into " + table + " values (1)");
    if (failed) {
      CHECK_THROWS_AS(a.exec("select 1/0"), pg_error);
      CHECK(PQtransactionStatus(a.get()) == PQTRANS_INERROR);
    }
    if (abrupt) a.kill_socket();
  }

  const auto t0 = clock::now();
  pg_conn b(px.conninfo(), seconds(10));
  CHECK(b.exec("select count(*) from " + table) == "0");
  CHECK(seconds_since(t0) < 3.0);
  CHECK(b.backend_pid() == a_pid);  // rolled back and reused, not thrown away
  // The row was never committed, not even later.
  CHECK(direct.exec("select count(*) from " + table) == "0");
  direct.exec("drop table " + table);
}

TEST_CASE("session: a client leaving mid-transaction with Terminate is rolled back") {
  check_abandoned_transaction(false);
}

TEST_CASE("session: a client vanishing mid-transaction is rolled back") {
  check_abandoned_transaction(true);
}

TEST_CASE("session: a client vanishing in a failed transaction is rolled back") {
  check_abandoned_transaction(true, true);
}

TEST_CASE("session: a client vanishing during a long query gets the query cancelled") {
  pgstash_instance px({"pool.size = 1"});
  const std::string tag = "itest_sleep_" + unique_suffix();
  const std::string sleeping = "select 1 from pg_stat_activity where query like '%" + tag +
                               "%' and pid <> pg_backend_pid() and state = 'active'";
  pg_conn direct(direct_conninfo());

  pg_conn a(px.conninfo());
  const int a_pid = a.backend_pid();
  REQUIRE(PQsendQuery(a.get(), ("select pg_sleep(30) /* " + tag + " */").c_str()));
  REQUIRE(eventually([&] { return direct.exec(sleeping) == "1"; }, seconds(5)));
  a.kill_socket();

  const auto t0 = clock::now();
  pg_conn b(px.conninfo(), seconds(15));
  CHECK(b.exec("select 1") == "1");
  const double took = seconds_since(t0);
  CAPTURE(took);
  CHECK(took < 4.0);
  CHECK(b.backend_pid() == a_pid);  // cancelled, reset and reused
  CHECK(eventually([&] { return direct.exec(sleeping).empty(); }, seconds(3)));
}

TEST_CASE("session: the cleanup cancel is delivered before the connection is reused") {
  // Cancel requests take 600 ms to reach PostgreSQL; A's query ends on its own before
  // that. The cleanup must not reset and hand over the connection while its cancel is
  // still on the way, or the cancel stops the next client's query.
  slow_relay slow(std::stoi(cluster_value("PGSTASH_PG_PORT")), milliseconds(600));
  pgstash_instance px({"pool.size = 1", "server.port = " + std::to_string(slow.port())});
  {
    pg_conn a(px.conninfo());
    REQUIRE(PQsendQuery(a.get(), "select pg_sleep(0.2)"));
    REQUIRE(PQflush(a.get()) == 0);
    sleep_for(milliseconds(50));  // the query is on the server
    a.kill_socket();
  }
  pg_conn b(px.conninfo(), seconds(10));
  CHECK(b.exec("select 'b', pg_sleep(1)") == "b");
  CHECK(slow.connections() == 2);  // the server connection and the cancel
}

TEST_CASE("session: a client vanishing during a long query, politely") {
  // Same, but the client sends Terminate while its query still runs.
  pgstash_instance px({"pool.size = 1"});
  const std::string tag = "itest_sleep_" + unique_suffix();
  const std::string sleeping = "select 1 from pg_stat_activity where query like '%" + tag +
                               "%' and pid <> pg_backend_pid() and state = 'active'";
  pg_conn direct(direct_conninfo());
  {
    pg_conn a(px.conninfo());
    REQUIRE(PQsendQuery(a.get(), ("select pg_sleep(30) /* " + tag + " */").c_str()));
    REQUIRE(eventually([&] { return direct.exec(sleeping) == "1"; }, seconds(5)));
  }
  const auto t0 = clock::now();
  pg_conn b(px.conninfo(), seconds(15));
  CHECK(b.exec("select 1") == "1");
  CHECK(seconds_since(t0) < 4.0);
  CHECK(eventually([&] { return direct.exec(sleeping).empty(); }, seconds(3)));
}

TEST_CASE("session: pool.query_wait_timeout_ms bounds the wait for a full pool") {
  pgstash_instance px({"pool.size = 1", "pool.query_wait_timeout_ms = 500"});
  auto a = std::make_unique<pg_conn>(px.conninfo());
  CHECK(a->exec("select 1") == "1");

  const auto t0 = clock::now();
  pg_error e = pg_conn::connect_error(px.conninfo(), seconds(15));
  const double took = seconds_since(t0);
  CAPTURE(e.what());
  CAPTURE(took);
  CHECK(e.sqlstate == "53300");
  CHECK(took >= 0.4);
  CHECK(took < 5.0);

  // A waiter is served as soon as the holder leaves.
  a.reset();
  pg_conn c(px.conninfo(), seconds(10));
  CHECK(c.exec("select 2") == "2");
}

TEST_CASE("session: a waiting client gets the connection the holder releases") {
  pgstash_instance px({"pool.size = 1", "pool.query_wait_timeout_ms = 10000"});
  auto a = std::make_unique<pg_conn>(px.conninfo());
  const int a_pid = a->backend_pid();
  // B starts connecting while A holds the only connection; A then leaves.
  PGconn* b = PQconnectStart(px.conninfo().c_str());
  REQUIRE(b);
  const auto t0 = clock::now();
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  bool released = false;
  while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && seconds_since(t0) < 10) {
    if (!released && seconds_since(t0) > 0.3) {
      a.reset();
      released = true;
    }
    sleep_for(milliseconds(10));
    st = PQconnectPoll(b);
  }
  CHECK(st == PGRES_POLLING_OK);
  CHECK(PQbackendPID(b) == a_pid);
  PQfinish(b);
}

TEST_CASE("session: an unreachable server gives 08006 quickly") {
  pgstash_instance px({"server.port = " + std::to_string(closed_port())});
  const auto t0 = clock::now();
  pg_error e = pg_conn::connect_error(px.conninfo(), seconds(15));
  CAPTURE(e.what());
  CHECK(e.sqlstate == "08006");
  CHECK(seconds_since(t0) < 3.0);
  CHECK(px.alive());
}

TEST_CASE("session: server.connect_timeout_ms bounds a server that never answers") {
  // A listener that completes the TCP handshake (the kernel accepts into the backlog) and then
  // says nothing, like a wedged server.
  int silent_port = 0;
  const int lfd = listen_loopback(silent_port);

  pgstash_instance px({"server.port = " + std::to_string(silent_port), "server.tls = \"disable\"",
                       "server.connect_timeout_ms = 1000"});
  const auto t0 = clock::now();
  pg_error e = pg_conn::connect_error(px.conninfo(), seconds(20));
  const double took = seconds_since(t0);
  CAPTURE(e.what());
  CAPTURE(took);
  CHECK(e.sqlstate == "08006");
  CHECK(took >= 0.8);
  CHECK(took < 5.0);

  // Same with TLS negotiation toward the silent server (waiting for the SSLRequest answer).
  {
    pgstash_instance tls_px({"server.port = " + std::to_string(silent_port),
                             "server.tls = \"prefer\"", "server.connect_timeout_ms = 1000"});
    const auto t1 = clock::now();
    pg_error e2 = pg_conn::connect_error(tls_px.conninfo(), seconds(20));
    CAPTURE(e2.what());
    CHECK(e2.sqlstate == "08006");
    CHECK(seconds_since(t1) < 5.0);
  }
  ::close(lfd);
  CHECK(px.alive());
}

TEST_CASE("session: a client that never finishes logging in is dropped") {
  pgstash_instance px({"limits.client_login_timeout_ms = 1000", "auth.method = \"md5\""});
  raw_conn silent(px.port());
  raw_conn half(px.port());
  raw_conn no_password(px.port());
  // Half a startup packet, then nothing.
  REQUIRE(half.send(startup_packet({{"user", "postgres"}}).substr(0, 6)));
  // A whole startup packet, then no answer to the password request.
  REQUIRE(no_password.send(startup_packet({{"user", "postgres"}, {"database", "pgstash_test"}})));
  auto request = no_password.read_message(seconds(5));
  REQUIRE(request);
  CHECK(request->tag == 'R');
  const auto t0 = clock::now();
  CHECK(silent.wait_closed(seconds(10)));
  CHECK(half.wait_closed(seconds(10)));
  CHECK(no_password.wait_closed(seconds(10)));
  CHECK(seconds_since(t0) < 5.0);
  pg_conn c(px.conninfo("password=postgres-secret"));
  CHECK(c.exec("select 1") == "1");
}

// Waits until backend `pid` sits idle in the pool (its last query was the reset query).
bool pooled_idle(pg_conn& direct, int pid) {
  return eventually(
      [&] {
        return direct.exec("select state || '/' || query from pg_stat_activity where pid = " +
                           std::to_string(pid)) == "idle/DISCARD ALL";
      },
      seconds(5));
}

TEST_CASE("session: a client vanishing in the middle of COPY FROM STDIN") {
  pgstash_instance px({"pool.size = 1"});
  const std::string table = "itest_copy_" + unique_suffix();
  pg_conn direct(direct_conninfo());
  direct.exec("create table " + table + "(x int)");
  int a_pid = 0;
  {
    pg_conn a(px.conninfo());
    a_pid = a.backend_pid();
    REQUIRE(PQsendQuery(a.get(), ("copy " + table + " from stdin").c_str()));
    result_ptr r = a.next_result(clock::now() + seconds(5));
    REQUIRE(PQresultStatus(r.get()) == PGRES_COPY_IN);
    REQUIRE(PQputCopyData(a.get(), "1\n2\n3\n", 6) == 1);
    REQUIRE(PQflush(a.get()) == 0);
    a.kill_socket();
  }
  const auto t0 = clock::now();
  pg_conn b(px.conninfo(), seconds(10));
  CHECK(b.exec("select count(*) from " + table) == "0");
  CHECK(seconds_since(t0) < 4.0);
  CHECK(b.backend_pid() == a_pid);
  direct.exec("drop table " + table);
}

TEST_CASE("session: a client vanishing with unsynced extended-protocol messages") {
  pgstash_instance px({"pool.size = 1"});
  const std::string tag = "itest_unsynced_" + unique_suffix();
  const std::string sleeping = "select 1 from pg_stat_activity where query like '%" + tag +
                               "%' and pid <> pg_backend_pid() and state = 'active'";
  pg_conn direct(direct_conninfo());
  {
    raw_conn a(px.port());
    a.login("postgres", "pgstash_test");
    std::string out = frame('P', std::string("\0", 1) + "select pg_sleep(30) /* " + tag + " */" +
                                     std::string("\0", 1) + be16(0));
    out += frame('B', std::string("\0\0", 2) + be16(0) + be16(0) + be16(0));
    out += frame('E', std::string("\0", 1) + be32(0));
    out += frame('H', "");  // Flush, no Sync
    REQUIRE(a.send(out));
    REQUIRE(eventually([&] { return direct.exec(sleeping) == "1"; }, seconds(5)));
  }  // closed without Sync or Terminate
  const auto t0 = clock::now();
  pg_conn b(px.conninfo(), seconds(15));
  CHECK(b.exec("select 1") == "1");
  CHECK(seconds_since(t0) < 4.0);
  CHECK(eventually([&] { return direct.exec(sleeping).empty(); }, seconds(3)));
}

TEST_CASE("session: a client vanishing in the middle of a large result") {
  pgstash_instance px({"pool.size = 1"});
  const std::string tag = "itest_bigresult_" + unique_suffix();
  const std::string running = "select 1 from pg_stat_activity where query like '%" + tag +
                              "%' and pid <> pg_backend_pid() and state = 'active'";
  pg_conn direct(direct_conninfo());
  {
    pg_conn a(px.conninfo());
    // About 2 GB if nobody stops it.
    REQUIRE(PQsendQuery(
        a.get(),
        ("select repeat('x', 1000) from generate_series(1, 2000000) /* " + tag + " */").c_str()));
    REQUIRE(PQsetSingleRowMode(a.get()) == 1);
    const auto deadline = clock::now() + seconds(10);
    for (int i = 0; i < 200; ++i) {
      result_ptr r = a.next_result(deadline);
      REQUIRE(r);
      REQUIRE(PQresultStatus(r.get()) == PGRES_SINGLE_TUPLE);
    }
    a.kill_socket();
  }
  const auto t0 = clock::now();
  pg_conn b(px.conninfo(), seconds(15));
  CHECK(b.exec("select 1") == "1");
  const double took = seconds_since(t0);
  CAPTURE(took);
  CHECK(took < 5.0);
  CHECK(eventually([&] { return direct.exec(running).empty(); }, seconds(3)));
}

TEST_CASE("session: refused logins give their pool slot back") {
  {
    pgstash_instance px({"pool.size = 1", "pool.query_wait_timeout_ms = 500"});
    // The server refuses these; each refusal must free the slot it took, or the second attempt
    // would wait for it and get 53300.
    for (int i = 0; i < 3; ++i) {
      CAPTURE(i);
      pg_error role = pg_conn::connect_error(px.conninfo("user=itest_no_such_role"));
      CHECK(role.sqlstate == "28000");
      pg_error db = pg_conn::connect_error(px.conninfo("dbname=itest_no_such_db"));
      CHECK(db.sqlstate == "3D000");
    }
    pg_conn ok(px.conninfo());
    CHECK(ok.exec("select 1") == "1");
  }
  {
    pgstash_instance px({"pool.size = 1", "pool.query_wait_timeout_ms = 500",
                         "server.port = " + std::to_string(closed_port())});
    for (int i = 0; i < 3; ++i) {
      CAPTURE(i);
      pg_error e = pg_conn::connect_error(px.conninfo());
      CHECK(e.sqlstate == "08006");
    }
  }
}

TEST_CASE("session: an idle pooled connection the server closed is replaced") {
  pgstash_instance px({"pool.size = 1"});
  pg_conn direct(direct_conninfo());
  int a_pid = 0;
  {
    pg_conn a(px.conninfo());
    a_pid = a.backend_pid();
  }
  REQUIRE(pooled_idle(direct, a_pid));
  CHECK(direct.exec("select pg_terminate_backend(" + std::to_string(a_pid) + ")") == "t");
  REQUIRE(eventually(
      [&] {
        return direct.exec("select count(*) from pg_stat_activity where pid = " +
                           std::to_string(a_pid)) == "0";
      },
      seconds(5)));
  pg_conn b(px.conninfo(), seconds(10));
  CHECK(b.exec("select 'fresh'") == "fresh");
  CHECK(b.backend_pid() != a_pid);
}

TEST_CASE("session: an idle connection opened for other parameters makes room in a full pool") {
  pgstash_instance px({"pool.size = 1", "pool.query_wait_timeout_ms = 3000"});
  pg_conn direct(direct_conninfo());
  int a_pid = 0;
  {
    pg_conn a(px.conninfo("application_name=itest_one"));
    a_pid = a.backend_pid();
  }
  REQUIRE(pooled_idle(direct, a_pid));
  const auto t0 = clock::now();
  pg_conn b(px.conninfo("application_name=itest_two"), seconds(10));
  CHECK(seconds_since(t0) < 2.0);
  CHECK(b.exec("select current_setting('application_name')") == "itest_two");
  CHECK(b.backend_pid() != a_pid);
  // The old one was closed, not kept beyond pool.size.
  CHECK(eventually(
      [&] {
        return direct.exec("select count(*) from pg_stat_activity where pid = " +
                           std::to_string(a_pid)) == "0";
      },
      seconds(5)));
}

TEST_CASE("session: many clients share a small pool") {
  pgstash_instance px({"pool.size = 3", "pool.query_wait_timeout_ms = 30000"});
  const std::string app = "itest_many_" + unique_suffix();
  pg_conn direct(direct_conninfo());
  constexpr int k_clients = 24;
  std::mutex mu;
  std::vector<std::string> errors;
  std::multiset<std::string> pids;
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < k_clients; ++i) {
    threads.emplace_back([&] {
      try {
        pg_conn c(px.conninfo("application_name=" + app), seconds(60));
        std::string pid = c.exec("select pg_backend_pid()");
        c.exec("select pg_sleep(0.02)");
        std::lock_guard lock(mu);
        pids.insert(pid);
      } catch (const std::exception& e) {
        std::lock_guard lock(mu);
        errors.push_back(e.what());
      }
      ++done;
    });
  }
  int max_open = 0;
  const auto deadline = clock::now() + seconds(60);
  while (done < k_clients && clock::now() < deadline) {
    max_open =
        std::max(max_open, std::stoi(direct.exec("select count(*) from pg_stat_activity where "
                                                 "application_name = '" +
                                                 app + "'")));
    sleep_for(milliseconds(10));
  }
  for (auto& t : threads) t.join();
  CHECK(errors.empty());
  for (const auto& e : errors) MESSAGE(e);
  CHECK(pids.size() == k_clients);
  const std::set<std::string> distinct(pids.begin(), pids.end());
  CAPTURE(distinct.size());
  CAPTURE(max_open);
  CHECK(distinct.size() <= 3);  // at most pool.size backends, reused
  CHECK(max_open <= 3);
}

TEST_CASE("session: a client that gives up waiting does not hold up the queue") {
  pgstash_instance px({"pool.size = 1", "pool.query_wait_timeout_ms = 20000"});
  auto a = std::make_unique<pg_conn>(px.conninfo());
  // B queues behind A, then gives up.
  PGconn* b = PQconnectStart(px.conninfo().c_str());
  REQUIRE(b);
  const auto t0 = clock::now();
  while (seconds_since(t0) < 0.3) {
    PQconnectPoll(b);
    sleep_for(milliseconds(10));
  }
  REQUIRE(PQstatus(b) != CONNECTION_OK);
  PQfinish(b);
  // C queues behind the departed B; A leaves.
  PGconn* c = PQconnectStart(px.conninfo().c_str());
  REQUIRE(c);
  const auto t1 = clock::now();
  while (seconds_since(t1) < 0.2) {
    PQconnectPoll(c);
    sleep_for(milliseconds(10));
  }
  a.reset();
  const auto t2 = clock::now();
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && seconds_since(t2) < 10) {
    sleep_for(milliseconds(10));
    st = PQconnectPoll(c);
  }
  CAPTURE(std::string(PQerrorMessage(c)));
  CHECK(st == PGRES_POLLING_OK);
  CHECK(seconds_since(t2) < 3.0);
  PQfinish(c);
}

TEST_CASE("session: a server backend terminated under a connected client frees its slot") {
  pgstash_instance px({"pool.size = 1", "pool.query_wait_timeout_ms = 3000"});
  pg_conn direct(direct_conninfo());
  pg_conn a(px.conninfo());
  const int a_pid = a.backend_pid();
  CHECK(direct.exec("select pg_terminate_backend(" + std::to_string(a_pid) + ")") == "t");
  // A learns it from the server's FATAL, forwarded.
  bool a_failed = false;
  try {
    a.exec("select 1", seconds(10));
  } catch (const pg_error& e) {
    a_failed = true;
    CAPTURE(e.what());
    CHECK((e.sqlstate == "57P01" || e.sqlstate.empty()));
  }
  CHECK(a_failed);
  pg_conn b(px.conninfo(), seconds(10));
  CHECK(b.exec("select 1") == "1");
  CHECK(b.backend_pid() != a_pid);
}

// Terminates the backend running the statement tagged `tag` once it runs.
void terminate_running(pg_conn& direct, const std::string& tag) {
  const std::string running = "select pid from pg_stat_activity where query like '%" + tag +
                              "%' and pid <> pg_backend_pid() and state = 'active'";
  REQUIRE(eventually([&] { return !direct.exec(running).empty(); }, seconds(5)));
  CHECK(direct.exec("select pg_terminate_backend(pid) from (" + running + ") s") == "t");
}

TEST_CASE("session: a server connection lost while a batch waits for an earlier batch's answers") {
  // The Parse of s2 must wait until the Parse of s1 is answered (it may fail, and the second
  // batch's names are taken as they will be then). The answer never comes: the server
  // connection is terminated during the query before. The waiting client must go, not spin its
  // worker thread, which serves every other client too (one worker here).
  // The result cache keeps track of the statements' texts, which an error may undo.
  temp_dir cache;
  pgstash_instance px({"pool.size = 2", "process.workers = 1", "cache.enabled = true",
                       "cache.path = " + toml_string(cache.path() + "/lmdb")});
  const std::string tag = "itest_lost_wait_" + unique_suffix();
  pg_conn direct(direct_conninfo());
  raw_conn a(px.port());
  a.login("postgres", "pgstash_test");
  REQUIRE(a.send(query_frame("select pg_sleep(30) /* " + tag + " */") + parse_msg("s1", "select 1") +
                 sync_msg() + parse_msg("s2", "select 2") + sync_msg()));
  terminate_running(direct, tag);
  CHECK(a.wait_closed(seconds(10)));
  pg_conn b(px.conninfo(), seconds(10));
  CHECK(b.exec("select 'still serving'", seconds(10)) == "still serving");
}

TEST_CASE("both pool modes: what a client sent after its server connection was lost is not run on another") {
  // The Query waits for the answers to the batch before it (its unnamed Parse may fail), and
  // is still buffered when the server connection is terminated under that batch. The client's
  // session is over: its INSERT must not run on a fresh connection behind its back.
  std::string mode;
  SUBCASE("session pooling") { mode = "session"; }
  SUBCASE("transaction pooling") { mode = "transaction"; }
  CAPTURE(mode);
  temp_dir cache;
  pgstash_instance px({"pool.mode = " + toml_string(mode), "pool.size = 2", "cache.enabled = true",
                       "cache.path = " + toml_string(cache.path() + "/lmdb")});
  const std::string tag = "itest_lost_after_" + unique_suffix();
  pg_conn direct(direct_conninfo());
  direct.exec("create table " + tag + "(x int)");
  raw_conn a(px.port());
  a.login("postgres", "pgstash_test");
  REQUIRE(a.send(parse_msg("", "select pg_sleep(30) /* " + tag + " */") + bind_msg("", "") +
                 execute_msg() + sync_msg() + query_frame("insert into " + tag + " values (1)")));
  terminate_running(direct, tag);
  CHECK(a.wait_closed(seconds(10)));
  pg_conn b(px.conninfo(), seconds(10));
  CHECK(b.exec("select 'still serving'") == "still serving");
  // Run, it would be within milliseconds.
  CHECK_FALSE(eventually([&] { return direct.exec("select count(*) from " + tag) != "0"; }, seconds(1)));
  direct.exec("drop table " + tag);
}

TEST_CASE("session: with the cache on, a Parse the server skipped is not taken as accepted") {
  // The cache answers an unnamed Parse itself only for a text the server accepted last time. One
  // sent after an error in its batch was skipped by the server, never accepted: its own error must
  // come at its next Parse, as PostgreSQL gives it, not at the Bind after a ParseComplete.
  temp_dir cache;
  pgstash_instance px(
      {"cache.enabled = true", "cache.path = " + toml_string(cache.path() + "/lmdb")});
  const std::string table = "itest_skipped_parse_" + unique_suffix();
  pg_conn direct(direct_conninfo());
  direct.exec("create table " + table + " (v int)");
  raw_conn a(px.port());
  a.login("postgres", "pgstash_test");
  const std::string bad = "select nosuchcol from " + table;
  REQUIRE(a.send(parse_msg("", "selec 1") + frame('H', "")));
  auto m = a.read_message(seconds(5));
  REQUIRE(m);
  CHECK(m->tag == 'E');
  // Sent after the error has come back: the server skips it.
  REQUIRE(a.send(parse_msg("", bad) + sync_msg()));
  m = a.read_message(seconds(5));
  REQUIRE(m);
  CHECK(m->tag == 'Z');
  REQUIRE(a.send(parse_msg("", bad) + bind_msg("", "") + execute_msg() + sync_msg()));
  m = a.read_message(seconds(5));
  REQUIRE(m);
  CHECK(m->tag == 'E');
  CHECK(parse_error_fields(m->body)['C'] == "42703");
  direct.exec("drop table " + table);
}

TEST_CASE("session: a client vanishing in the middle of sending a message") {
  // The server has been handed the first part of a Query and waits for the rest, which will never
  // come: a cancel cannot help (the server is reading, not executing), so the connection cannot
  // be brought back clean and must be dropped at once instead of blocking the pool.
  // A short cleanup timeout keeps this test cheap; the point is that it is not needed.
  pgstash_instance px(
      {"pool.size = 1", "pool.query_wait_timeout_ms = 30000", "pool.cleanup_timeout_ms = 5000"});
  {
    raw_conn a(px.port());
    a.login("postgres", "pgstash_test");
    std::string sql = "select length('" + std::string(400000, 'p') + "')";
    std::string q = query_frame(sql);
    REQUIRE(a.send(q.substr(0, 100000)));
    // Let pgstash pass that much on to the server before the client goes.
    sleep_for(milliseconds(200));
  }
  const auto t0 = clock::now();
  pg_conn b(px.conninfo(), seconds(20));
  CHECK(b.exec("select 1") == "1");
  const double took = seconds_since(t0);
  CAPTURE(took);
  CHECK(took < 3.0);
}

}  // namespace
}  // namespace pgstash::itest
