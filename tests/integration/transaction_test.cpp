// Transaction pooling (pool.mode = "transaction"): a client holds a server
// connection only while a statement or transaction runs; its session
// (startup parameters, SET, SQL and protocol prepared statements) follows it
// to whichever connection it gets next; what cannot move (LISTEN, advisory
// locks, temp tables, WITH HOLD cursors, SET SESSION AUTHORIZATION) pins it;
// cancel, the pool's limits and timeouts, and a server restart.
//
// Backends opened by pgstash are told apart from everyone else's (the
// harness's direct connections, other tests sharing the cluster) by a login
// role created for the test (scoped_role): pg_stat_activity.usename.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <doctest/doctest.h>

#include "harness.hpp"

namespace pgstash::itest {
namespace {

// The extras that turn the base (session-mode) config into transaction
// pooling, then `extras` (later lines replace earlier ones). A bounded wait
// for a server connection keeps a broken pool from stalling a test.
std::vector<std::string> txn(std::vector<std::string> extras = {}) {
  std::vector<std::string> out{"pool.mode = \"transaction\"", "pool.query_wait_timeout_ms = 10000"};
  out.insert(out.end(), extras.begin(), extras.end());
  return out;
}

// A login superuser made for one test, so that pg_stat_activity can count
// exactly the backends pgstash opened for it. Declare it before the
// pgstash_instance: it is dropped after pgstash stops.
class scoped_role {
 public:
  scoped_role() : name_("itest_txn_" + unique_suffix()) {
    pg_conn d(direct_conninfo());
    d.exec("create role " + name_ + " login superuser");
  }
  ~scoped_role() {
    try {
      pg_conn d(direct_conninfo());
      const bool gone = eventually(
          [&] {
            d.exec("select pg_terminate_backend(pid) from pg_stat_activity where usename = '" +
                   name_ + "'");
            return backends(d) == 0;
          },
          seconds(5));
      if (!gone) std::cerr << "scoped_role: backends of " << name_ << " did not go away\n";
      d.exec("drop owned by " + name_ + " cascade");
      d.exec("drop role " + name_);
    } catch (const std::exception& e) {
      std::cerr << "scoped_role: cannot drop " << name_ << ": " << e.what() << "\n";
    }
  }
  scoped_role(const scoped_role&) = delete;
  scoped_role& operator=(const scoped_role&) = delete;

  const std::string& name() const { return name_; }
  // conninfo keywords to log in as this role.
  std::string login() const { return "user=" + name_; }
  // Client backends of this role (pgstash's server connections), seen
  // through a direct connection.
  int backends(pg_conn& direct) const {
    return std::stoi(direct.exec(
        "select count(*) from pg_stat_activity where backend_type = 'client backend' and "
        "usename = '" +
        name_ + "'"));
  }
  std::set<std::string> backend_pids(pg_conn& direct) const {
    std::set<std::string> out;
    for (const auto& r : direct.exec_all(
             "select pid from pg_stat_activity where backend_type = 'client backend' and "
             "usename = '" +
             name_ + "'"))
      for (int i = 0; i < PQntuples(r.get()); ++i) out.insert(PQgetvalue(r.get(), i, 0));
    return out;
  }

 private:
  std::string name_;
};

// A client that keeps running `sql` in a thread of its own until destroyed,
// so that the pool stays busy around what a test does. Tests stop it last:
// what happens to a connection when its client leaves is tested on its own.
class busy_client {
 public:
  busy_client(std::string conninfo, std::string sql = "select pg_sleep(0.003)")
      : thread_([this, conninfo = std::move(conninfo), sql = std::move(sql)] {
          try {
            pg_conn c(conninfo, seconds(30));
            while (!stop_) {
              c.exec(sql, seconds(30));
              ++done_;
            }
          } catch (const std::exception& e) {
            std::lock_guard lock(mu_);
            error_ = e.what();
          }
        }) {}
  ~busy_client() { stop(); }
  busy_client(const busy_client&) = delete;
  busy_client& operator=(const busy_client&) = delete;

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int done() const { return done_; }
  std::string error() {
    std::lock_guard lock(mu_);
    return error_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> done_{0};
  std::mutex mu_;
  std::string error_;
  std::thread thread_;  // last: starts once the members above exist
};

// The results of what was just sent on `c`, as pg_conn::exec reports them:
// the first value of the last result with rows; throws pg_error on an error.
std::string collect(pg_conn& c, milliseconds timeout = k_default_timeout) {
  const auto deadline = clock::now() + timeout;
  std::string value;
  std::optional<pg_error> first_error;
  while (result_ptr r = c.next_result(deadline)) {
    ExecStatusType st = PQresultStatus(r.get());
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE) {
      if (!first_error) first_error.emplace(sqlstate_of(r.get()), PQresultErrorMessage(r.get()));
      continue;
    }
    if (PQntuples(r.get()) > 0 && PQnfields(r.get()) > 0)
      value = PQgetisnull(r.get(), 0, 0) ? "<NULL>" : PQgetvalue(r.get(), 0, 0);
  }
  if (first_error) throw *first_error;
  return value;
}

// Protocol-level prepared statements through libpq, never blocking past a
// deadline.
void prepare(pg_conn& c, const std::string& name, const std::string& sql, int nparams = 0) {
  REQUIRE(PQsendPrepare(c.get(), name.c_str(), sql.c_str(), nparams, nullptr) == 1);
  collect(c);
}

std::string exec_prepared(pg_conn& c, const std::string& name,
                          const std::vector<std::string>& params = {}) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  REQUIRE(PQsendQueryPrepared(c.get(), name.c_str(), static_cast<int>(values.size()),
                              values.data(), nullptr, nullptr, 0) == 1);
  return collect(c);
}

// `sql` through the extended protocol (Parse/Bind/Execute of the unnamed
// statement), as most drivers send everything.
std::string exec_params(pg_conn& c, const std::string& sql) {
  REQUIRE(PQsendQueryParams(c.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) == 1);
  return collect(c);
}

// The SQLSTATE `f` fails with, or "no error".
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const pg_error& e) {
    return e.sqlstate.empty() ? std::string("libpq: ") + e.what() : e.sqlstate;
  }
  return "no error";
}

std::string param(const pg_conn& c, const char* name) {
  const char* v = PQparameterStatus(c.get(), name);
  return v ? v : "";
}

const std::string k_pid = "select pg_backend_pid()";

// ---------------------------------------------------------------- raw frames

// Every message through the next ReadyForQuery (errors included); throws on
// a timeout or a close.
std::vector<raw_message> read_cycle(raw_conn& c, milliseconds timeout = k_default_timeout) {
  const auto deadline = clock::now() + timeout;
  std::vector<raw_message> out;
  for (;;) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - clock::now());
    auto m = c.read_message(std::max(left, milliseconds(0)));
    if (!m)
      throw std::runtime_error(c.closed() ? "connection closed before ReadyForQuery"
                                          : "timed out waiting for ReadyForQuery");
    out.push_back(std::move(*m));
    if (out.back().tag == 'Z') return out;
  }
}

// The tags of `msgs`, e.g. "12CZ".
std::string tags(const std::vector<raw_message>& msgs) {
  std::string out;
  for (const auto& m : msgs) out += m.tag;
  return out;
}

// The first column of the first DataRow in `msgs`, "" if none.
std::string first_value(const std::vector<raw_message>& msgs) {
  for (const auto& m : msgs) {
    if (m.tag != 'D' || m.body.size() < 6) continue;
    const auto* b = reinterpret_cast<const unsigned char*>(m.body.data());
    const std::uint32_t len = (std::uint32_t{b[2]} << 24) | (std::uint32_t{b[3]} << 16) |
                              (std::uint32_t{b[4]} << 8) | std::uint32_t{b[5]};
    if (len == 0xffffffffu) return "<NULL>";
    return m.body.substr(6, len);
  }
  return "";
}

// The SQLSTATE of the first ErrorResponse in `msgs`, "" if none.
std::string error_code(const std::vector<raw_message>& msgs) {
  for (const auto& m : msgs)
    if (m.tag == 'E') return parse_error_fields(m.body)['C'];
  return "";
}

// ================================================================ tests

TEST_CASE("transaction: many clients share a small pool") {
  scoped_role role;
  pgstash_instance px(txn({"pool.size = 3", "pool.query_wait_timeout_ms = 30000"}));
  pg_conn direct(direct_conninfo());
  constexpr int k_clients = 40;
  constexpr int k_rounds = 6;

  // Samples the number of pgstash's backends while the clients work.
  std::atomic<bool> stop{false};
  std::atomic<int> max_backends{0};
  std::atomic<int> samples{0};
  std::string poll_error;
  std::thread poller([&] {
    try {
      pg_conn d(direct_conninfo());
      while (!stop) {
        const int n = role.backends(d);
        int seen = max_backends.load();
        while (n > seen && !max_backends.compare_exchange_weak(seen, n)) {
        }
        ++samples;
        sleep_for(milliseconds(5));
      }
    } catch (const std::exception& e) {
      poll_error = e.what();
    }
  });
  // Joined however the test ends (a failed REQUIRE or exception included).
  struct joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    ~joiner() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } join_poller{stop, poller};

  // All 40 logged in at once.
  std::vector<std::unique_ptr<pg_conn>> clients;
  for (int i = 0; i < k_clients; ++i)
    clients.push_back(std::make_unique<pg_conn>(px.conninfo(role.login()), seconds(20)));
  CHECK(role.backends(direct) <= 3);

  // Rounds of one statement per client, all sent before any result is read,
  // so that up to 40 statements compete for 3 server connections.
  std::multiset<std::string> pids;
  int ok = 0;
  for (int round = 0; round < k_rounds; ++round) {
    for (int i = 0; i < k_clients; ++i) {
      const std::string sql =
          (round + i) % 3 == 0
              ? "select pg_backend_pid() from (select pg_sleep(0.002)) s"
              : (round + i) % 3 == 1 ? "select pg_backend_pid() /* " + std::to_string(i) + " */"
                                     : "select pg_backend_pid(), " + std::to_string(round * i);
      REQUIRE(PQsendQuery(clients[i]->get(), sql.c_str()) == 1);
    }
    for (int i = 0; i < k_clients; ++i) {
      CAPTURE(round);
      CAPTURE(i);
      try {
        pids.insert(collect(*clients[i], seconds(30)));
        ++ok;
      } catch (const std::exception& e) {
        FAIL_CHECK("client " << i << " round " << round << ": " << e.what());
      }
    }
  }
  // And a transaction per client, some of them left open while others run.
  for (int i = 0; i < k_clients; i += 2) {
    const std::string sql = "begin; select pg_backend_pid(); commit";
    REQUIRE(PQsendQuery(clients[i]->get(), sql.c_str()) == 1);
    REQUIRE(PQsendQuery(clients[i + 1]->get(), "select pg_backend_pid()") == 1);
    pids.insert(collect(*clients[i], seconds(30)));
    pids.insert(collect(*clients[i + 1], seconds(30)));
  }
  stop = true;
  poller.join();

  CHECK(poll_error.empty());
  CHECK(ok == k_clients * k_rounds);
  const std::set<std::string> distinct(pids.begin(), pids.end());
  CAPTURE(distinct.size());
  CAPTURE(samples.load());
  CHECK(distinct.size() <= 3);
  CHECK(distinct.size() >= 2);  // the statements really were spread over the pool
  CHECK(samples.load() > 5);
  CHECK(max_backends.load() <= 3);
  CHECK(role.backends(direct) <= 3);
  CHECK(px.alive());
}

TEST_CASE("transaction: a transaction keeps its server connection until it ends") {
  scoped_role role;
  pgstash_instance px(txn({"pool.size = 2"}));
  pg_conn direct(direct_conninfo());
  const std::string table = "itest_txk_" + unique_suffix();
  direct.exec("create table " + table + "(x int)");

  pg_conn a(px.conninfo(role.login()));
  pg_conn b(px.conninfo(role.login()));
  pg_conn c(px.conninfo(role.login()));
  busy_client busy(px.conninfo(role.login()));

  a.exec("begin");
  const std::string a_pid = a.exec(k_pid);
  const std::string xid = a.exec("select pg_current_xact_id()");
  a.exec("insert into " + table + " values (1)");
  for (int i = 0; i < 15; ++i) {
    CAPTURE(i);
    CHECK(a.exec(k_pid) == a_pid);
    CHECK(a.exec("select pg_current_xact_id()") == xid);
    CHECK(a.exec("select count(*) from " + table) == "1");
    // The others run beside it, on the other connection, outside its transaction.
    CHECK(b.exec(k_pid) != a_pid);
    CHECK(c.exec("select count(*) from " + table) == "0");
    CHECK(PQtransactionStatus(a.get()) == PQTRANS_INTRANS);
  }
  a.exec("commit");
  CHECK(b.exec("select count(*) from " + table) == "1");
  // Released at COMMIT: the others get to use that connection too.
  CHECK(eventually([&] { return b.exec(k_pid) == a_pid || c.exec(k_pid) == a_pid; }, seconds(5)));

  // A failed transaction keeps its connection too, until ROLLBACK.
  a.exec("begin");
  const std::string a_pid2 = a.exec(k_pid);
  CHECK(error_of([&] { a.exec("select 1/0"); }) == "22012");
  CHECK(PQtransactionStatus(a.get()) == PQTRANS_INERROR);
  for (int i = 0; i < 5; ++i) CHECK(b.exec(k_pid) != a_pid2);
  CHECK(error_of([&] { a.exec("select 1"); }) == "25P02");
  a.exec("rollback");
  CHECK(PQtransactionStatus(a.get()) == PQTRANS_IDLE);
  CHECK(a.exec("select 'after'") == "after");

  busy.stop();
  CHECK(busy.error().empty());
  CHECK(busy.done() > 0);
  direct.exec("drop table " + table);
}

TEST_CASE("transaction: a client leaving mid-transaction is rolled back, the connection reused") {
  pgstash_instance px(txn({"pool.size = 1"}));
  pg_conn direct(direct_conninfo());
  const std::string table = "itest_txl_" + unique_suffix();
  direct.exec("create table " + table + "(x int)");
  pg_conn b(px.conninfo());  // logged in all along, sharing the one connection
  for (bool abrupt : {false, true}) {
    CAPTURE(abrupt);
    std::string a_pid;
    {
      pg_conn a(px.conninfo());
      a.exec("begin");
      a_pid = a.exec(k_pid);
      a.exec("insert into " + table + " values (1)");
      if (abrupt) a.kill_socket();
    }
    const auto t0 = clock::now();
    CHECK(b.exec("select count(*) from " + table) == "0");
    CHECK(seconds_since(t0) < 3.0);
    CHECK(b.exec(k_pid) == a_pid);  // rolled back and reused, not thrown away
    CHECK(b.exec("select pg_current_xact_id_if_assigned() is null") == "t");
  }
  CHECK(direct.exec("select count(*) from " + table) == "0");
  direct.exec("drop table " + table);
}

TEST_CASE("transaction: clients leaving right after ReadyForQuery do not strand connections") {
  // Connect, one statement, Terminate at once: the commonest short-lived client, here from four
  // threads at once. A server connection held back after such a client left makes later clients
  // wait (and, past query_wait_timeout_ms, fail with 53300).
  pgstash_instance px(txn({"pool.size = 2", "pool.query_wait_timeout_ms = 3000"}));
  constexpr int k_threads = 4;
  constexpr int k_iterations = 150;
  std::atomic<int> done{0};
  std::mutex mu;
  std::vector<std::string> errors;
  double slowest = 0;
  std::vector<std::thread> threads;
  const auto t0 = clock::now();
  for (int t = 0; t < k_threads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < k_iterations && seconds_since(t0) < 30; ++i) {
        const auto t1 = clock::now();
        try {
          if ((i + t) % 2 == 0) {
            raw_conn a(px.port());
            a.login("postgres", "pgstash_test");
            if (!a.send(query_frame("select 1"))) throw std::runtime_error("send failed");
            auto r = read_cycle(a, seconds(10));
            if (!error_code(r).empty()) throw std::runtime_error("error " + error_code(r));
            if (!a.send(frame('X', ""))) throw std::runtime_error("send failed");
          } else {
            pg_conn c(px.conninfo(), seconds(10));
            c.exec("select 1", seconds(10));
          }  // PQfinish: Terminate right away
        } catch (const std::exception& e) {
          std::lock_guard lock(mu);
          errors.push_back("thread " + std::to_string(t) + " iteration " + std::to_string(i) +
                           " after " + std::to_string(seconds_since(t1)) + " s: " + e.what());
          return;
        }
        std::lock_guard lock(mu);
        slowest = std::max(slowest, seconds_since(t1));
        ++done;
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& e : errors) MESSAGE(e);
  CAPTURE(slowest);
  CHECK(errors.empty());
  CHECK(done == k_threads * k_iterations);
  CHECK(slowest < 1.0);
  CHECK(px.log().find("did not come back clean") == std::string::npos);
}

TEST_CASE("transaction: search_path and TimeZone follow their client on a shared connection") {
  pgstash_instance px(txn({"pool.size = 1"}));
  pg_conn direct(direct_conninfo());
  const std::string sfx = unique_suffix();
  const std::string schema = "itest_a_" + sfx;
  const std::string table = "itest_ss_" + sfx;
  direct.exec("create schema " + schema);
  direct.exec("create table public." + table + " as select 'public'::text as v");
  direct.exec("create table " + schema + "." + table + " as select 'a_schema'::text as v");
  const std::string default_tz = direct.exec("show TimeZone");
  const std::string default_path = direct.exec("show search_path");
  REQUIRE(default_tz != "Asia/Tokyo");

  const std::string probe = "select current_setting('search_path') || '|' || "
                            "current_setting('TimeZone') || '|' || (select v from " +
                            table + ") || '|' || to_char(timestamptz '2020-01-01 00:00:00+00', "
                            "'HH24')";
  const std::string a_expect = schema + ", public|Asia/Tokyo|a_schema|09";
  const std::string b_expect = default_path + "|" + default_tz + "|public|00";

  pg_conn a(px.conninfo());
  pg_conn b(px.conninfo());
  const std::string shared_pid = a.exec(k_pid);
  CHECK(b.exec(k_pid) == shared_pid);  // one server connection for both

  a.exec("set search_path = " + schema + ", public");
  a.exec("SET TimeZone = 'Asia/Tokyo'");
  CHECK(param(a, "TimeZone") == "Asia/Tokyo");
  for (int i = 0; i < 20; ++i) {
    CAPTURE(i);
    switch (i % 4) {
      case 0:
        CHECK(a.exec(probe) == a_expect);
        CHECK(b.exec(probe) == b_expect);
        break;
      case 1:
        CHECK(a.exec("begin; " + probe + "; commit") == a_expect);
        CHECK(b.exec("begin; " + probe + "; commit") == b_expect);
        break;
      case 2:
        a.exec("begin");
        CHECK(a.exec(probe) == a_expect);
        a.exec("commit");
        b.exec("begin");
        CHECK(b.exec(probe) == b_expect);
        b.exec("commit");
        break;
      default:
        CHECK(b.exec(probe) == b_expect);
        CHECK(b.exec(probe) == b_expect);
        CHECK(a.exec(probe) == a_expect);
        break;
    }
  }
  CHECK(a.exec(k_pid) == shared_pid);
  CHECK(b.exec(k_pid) == shared_pid);
  // What libpq was told matches each client's own session.
  CHECK(param(a, "TimeZone") == "Asia/Tokyo");
  CHECK(param(b, "TimeZone") == default_tz);
  // A client logging in right after A used the connection starts from the defaults.
  a.exec("select 1");
  pg_conn c(px.conninfo());
  CHECK(param(c, "TimeZone") == default_tz);
  CHECK(c.exec(probe) == b_expect);

  // Changes made in a committed transaction are A's; B still sees none.
  a.exec("begin; set search_path = public; set TimeZone = 'America/New_York'; commit");
  CHECK(b.exec(probe) == b_expect);
  CHECK(a.exec(probe) == "public|America/New_York|public|19");
  a.exec("reset all");
  CHECK(b.exec(probe) == b_expect);
  CHECK(a.exec(probe) == b_expect);

  direct.exec("drop schema " + schema + " cascade");
  direct.exec("drop table public." + table);
}

TEST_CASE("transaction: startup options, RESET, SET LOCAL, rollback and set_config") {
  pgstash_instance px(txn({"pool.size = 1"}));
  pg_conn c(px.conninfo("options='-c statement_timeout=1234 -c app.tenant=acme'"));
  pg_conn b(px.conninfo());
  const std::string probe =
      "select current_setting('statement_timeout') || '|' || "
      "coalesce(current_setting('app.tenant', true), '<none>')";
  // A custom setting never set on a backend reads as NULL; once set and reset there, as ''.
  auto b_ok = [&] {
    const std::string v = b.exec(probe);
    return v == "0|<none>" || v == "0|";
  };
  CHECK(b.exec(k_pid) == c.exec(k_pid));

  // Startup options apply to C only.
  CHECK(c.exec(probe) == "1234ms|acme");
  CHECK(b_ok());
  CHECK(c.exec(probe) == "1234ms|acme");

  // A session SET is kept; RESET goes back to the startup value, not to the server's default.
  c.exec("set statement_timeout = 5000");
  CHECK(b_ok());
  CHECK(c.exec(probe) == "5s|acme");
  c.exec("reset statement_timeout");
  CHECK(b_ok());
  CHECK(c.exec(probe) == "1234ms|acme");
  // Also with no other client in between, on the same server connection. (Within one query
  // string, statements after a RESET see the server's default until the string ends: a
  // documented limit, as pgstash does not rewrite client SQL.)
  c.exec("set statement_timeout = 5000");
  c.exec("reset statement_timeout");
  CHECK(c.exec(probe) == "1234ms|acme");
  CHECK(b_ok());
  c.exec("set app.tenant = 'other'");
  c.exec("reset all");
  CHECK(c.exec(probe) == "1234ms|acme");
  CHECK(b_ok());
  CHECK(c.exec(probe) == "1234ms|acme");

  // SET LOCAL lasts for its transaction only.
  c.exec("begin");
  c.exec("set local statement_timeout = 777");
  CHECK(c.exec(probe) == "777ms|acme");
  c.exec("commit");
  CHECK(b_ok());
  CHECK(c.exec(probe) == "1234ms|acme");
  CHECK(c.exec("begin; set local app.tenant = 'local'; commit; " + probe) == "1234ms|acme");
  CHECK(b_ok());

  // A SET in a transaction that rolls back is not kept...
  c.exec("begin");
  c.exec("set statement_timeout = 999");
  CHECK(c.exec(probe) == "999ms|acme");
  c.exec("rollback");
  CHECK(c.exec(probe) == "1234ms|acme");
  CHECK(b_ok());
  CHECK(c.exec(probe) == "1234ms|acme");
  // ...nor in one that failed, nor in an implicit transaction that failed.
  c.exec("begin");
  c.exec("set app.tenant = 'failed'");
  CHECK(error_of([&] { c.exec("select 1/0"); }) == "22012");
  c.exec("commit");  // reports ROLLBACK
  CHECK(b_ok());
  CHECK(c.exec(probe) == "1234ms|acme");
  CHECK(error_of([&] { c.exec("set statement_timeout = 4321; select 1/0"); }) == "22012");
  CHECK(b_ok());
  CHECK(c.exec(probe) == "1234ms|acme");
  // A SET followed by a savepoint rollback is undone too.
  c.exec("begin; savepoint s; set statement_timeout = 888; rollback to savepoint s; commit");
  CHECK(b_ok());
  CHECK(c.exec(probe) == "1234ms|acme");

  // set_config(..., false) is a session setting; set_config(..., true) is local.
  CHECK(c.exec("select set_config('app.tenant', 'x', false)") == "x");
  CHECK(b_ok());
  CHECK(c.exec(probe) == "1234ms|x");
  CHECK(c.exec("begin; select set_config('app.tenant', 'y', true); commit; " + probe) == "1234ms|x");
  CHECK(b_ok());
  CHECK(c.exec(probe) == "1234ms|x");

  // B's own SET does not reach C.
  b.exec("set statement_timeout = '3s'");
  CHECK(c.exec(probe) == "1234ms|x");
  CHECK(b.exec(probe).rfind("3s|", 0) == 0);

  // A reported setting from the startup packet: after RESET, the session and what libpq was
  // told are both back at the startup value.
  pg_conn t(px.conninfo("options='-c TimeZone=Asia/Tokyo'"));
  CHECK(param(t, "TimeZone") == "Asia/Tokyo");
  t.exec("set TimeZone = 'Europe/Paris'");
  CHECK(param(t, "TimeZone") == "Europe/Paris");
  t.exec("reset TimeZone");
  CHECK(t.exec("show TimeZone") == "Asia/Tokyo");
  CHECK(param(t, "TimeZone") == "Asia/Tokyo");
  CHECK(b.exec("show TimeZone") != "Asia/Tokyo");
  CHECK(t.exec("show TimeZone") == "Asia/Tokyo");
}

TEST_CASE("transaction: settings made through the extended protocol follow their client") {
  pgstash_instance px(txn({"pool.size = 1"}));
  pg_conn d(px.conninfo());
  pg_conn b(px.conninfo());
  const std::string probe = "select current_setting('TimeZone') || '|' || "
                            "current_setting('search_path') || '|' || "
                            "coalesce(current_setting('app.tenant', true), '')";
  const std::string b_default = b.exec(probe);
  REQUIRE(b_default.rfind("Asia/Tokyo|", 0) != 0);

  exec_params(d, "set TimeZone = 'Asia/Tokyo'");
  CHECK(b.exec(probe) == b_default);
  CHECK(exec_params(d, probe).rfind("Asia/Tokyo|", 0) == 0);
  // A SET as a named protocol-level statement.
  prepare(d, "set_path", "set search_path = pg_catalog, public");
  exec_prepared(d, "set_path");
  CHECK(b.exec(probe) == b_default);
  CHECK(d.exec(probe) == "Asia/Tokyo|pg_catalog, public|");
  // set_config with constant arguments, extended protocol.
  CHECK(exec_params(d, "select set_config('app.tenant', 'fixed', false)") == "fixed");
  CHECK(b.exec(probe) == b_default);
  CHECK(d.exec(probe) == "Asia/Tokyo|pg_catalog, public|fixed");
  CHECK(exec_params(d, probe) == "Asia/Tokyo|pg_catalog, public|fixed");
  // In a transaction that rolls back: not kept.
  d.exec("begin");
  exec_params(d, "set TimeZone = 'UTC'");
  d.exec("rollback");
  CHECK(b.exec(probe) == b_default);
  CHECK(d.exec(probe) == "Asia/Tokyo|pg_catalog, public|fixed");
  // A pipeline of SETs and a read, one Sync.
  REQUIRE(PQenterPipelineMode(d.get()) == 1);
  for (const char* sql : {"set TimeZone = 'Europe/Paris'", "set search_path = public", "select 1"})
    REQUIRE(PQsendQueryParams(d.get(), sql, 0, nullptr, nullptr, nullptr, nullptr, 0) == 1);
  REQUIRE(PQpipelineSync(d.get()) == 1);
  const auto deadline = clock::now() + seconds(10);
  for (int i = 0; i < 3; ++i) {
    result_ptr r = d.next_result(deadline);
    REQUIRE(r);
    CHECK(sqlstate_of(r.get()).empty());
    CHECK(!d.next_result(deadline));
  }
  result_ptr sync = d.next_result(deadline);
  REQUIRE(sync);
  CHECK(PQresultStatus(sync.get()) == PGRES_PIPELINE_SYNC);
  REQUIRE(PQexitPipelineMode(d.get()) == 1);
  CHECK(b.exec(probe) == b_default);
  CHECK(d.exec(probe) == "Europe/Paris|public|fixed");
}

TEST_CASE("transaction: server-side statements beyond pool.max_prepared_statements are recycled") {
  pgstash_instance px(txn({"pool.size = 1", "pool.max_prepared_statements = 2"}));
  pg_conn p(px.conninfo());
  pg_conn q(px.conninfo());
  for (int i = 0; i < 5; ++i)
    prepare(p, "s" + std::to_string(i), "select 'p" + std::to_string(i) + "'::text");
  prepare(q, "s0", "select 'q0'::text");
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    for (int i = 0; i < 5; ++i) {
      CAPTURE(i);
      CHECK(exec_prepared(p, "s" + std::to_string(i)) == "p" + std::to_string(i));
      if (i % 2 == 0) CHECK(exec_prepared(q, "s0") == "q0");
    }
    for (int i = 4; i >= 0; --i) CHECK(exec_prepared(p, "s" + std::to_string(i)) == "p" + std::to_string(i));
  }
  // pgstash keeps at most that many on the server connection (the one both clients share).
  const int on_server = std::stoi(p.exec("select count(*) from pg_prepared_statements"));
  CAPTURE(on_server);
  CHECK(on_server <= 2);
  CHECK(on_server >= 1);
}

TEST_CASE(
    "transaction: a COPY that fails while a large CopyData is half sent keeps its connection") {
  pgstash_instance px(txn({"pool.size = 2"}));
  pg_conn direct(direct_conninfo());
  const std::string table = "itest_txcf_" + unique_suffix();
  direct.exec("create table " + table + "(x int)");
  raw_conn a(px.port());
  a.login("postgres", "pgstash_test");
  raw_conn b(px.port());
  b.login("postgres", "pgstash_test");
  REQUIRE(a.send(query_frame("copy " + table + " from stdin")));
  auto in_copy = a.read_message(k_default_timeout);
  REQUIRE(in_copy);
  REQUIRE(in_copy->tag == 'G');
  REQUIRE(a.send(frame('d', "not a number\n")));
  // Larger than the read buffer, so it streams through; the server fails
  // the COPY and is ready for the next query while it is half sent.
  std::string rows;
  while (rows.size() < 300000) rows += "1234567\n";
  const std::string large = frame('d', rows);
  REQUIRE(a.send(large.substr(0, 150000)));
  sleep_for(milliseconds(300));
  // Another client meanwhile. Before, it could be given A's connection, the
  // server still reading A's message: its query became part of A's data and
  // never got an answer, and the rest of A's message went to the server
  // B left as if it were new messages.
  for (int i = 0; i < 3; ++i) {
    REQUIRE(b.send(query_frame("select 'b'")));
    CHECK(first_value(read_cycle(b, seconds(3))) == "b");
  }
  REQUIRE(a.send(large.substr(150000)));
  REQUIRE(a.send(frame('c', "")));
  CHECK(error_code(read_cycle(a)) == "22P02");
  REQUIRE(a.send(query_frame("select 'after'")));
  CHECK(first_value(read_cycle(a)) == "after");
  CHECK(direct.exec("select count(*) from " + table) == "0");
  direct.exec("drop table " + table);
}

TEST_CASE("transaction: COPY FROM STDIN and TO STDOUT keep the connection until they end") {
  pgstash_instance px(txn({"pool.size = 1"}));
  pg_conn direct(direct_conninfo());
  const std::string table = "itest_txc_" + unique_suffix();
  direct.exec("create table " + table + "(x int)");
  pg_conn a(px.conninfo());
  pg_conn b(px.conninfo());
  const auto deadline = clock::now() + seconds(10);

  REQUIRE(PQsendQuery(a.get(), ("copy " + table + " from stdin").c_str()) == 1);
  result_ptr r = a.next_result(deadline);
  REQUIRE(r);
  REQUIRE(PQresultStatus(r.get()) == PGRES_COPY_IN);
  REQUIRE(PQputCopyData(a.get(), "1\n2\n", 4) == 1);
  REQUIRE(PQflush(a.get()) == 0);
  // B waits while A's COPY holds the only connection.
  REQUIRE(PQsendQuery(b.get(), ("select count(*) from " + table).c_str()) == 1);
  sleep_for(milliseconds(300));
  CHECK(!b.wait_input(clock::now() + milliseconds(1)));
  REQUIRE(PQputCopyData(a.get(), "3\n", 2) == 1);
  REQUIRE(PQputCopyEnd(a.get(), nullptr) == 1);
  REQUIRE(PQflush(a.get()) == 0);
  r = a.next_result(deadline);
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_COMMAND_OK);
  CHECK(!a.next_result(deadline));
  CHECK(collect(b) == "3");

  // COPY TO STDOUT, in a transaction, with B in between.
  a.exec("begin");
  REQUIRE(PQsendQuery(a.get(), ("copy (select x from " + table + " order by x) to stdout").c_str()) == 1);
  r = a.next_result(deadline);
  REQUIRE(r);
  REQUIRE(PQresultStatus(r.get()) == PGRES_COPY_OUT);
  std::string copied;
  for (;;) {
    char* buf = nullptr;
    int n = PQgetCopyData(a.get(), &buf, 1);
    if (n > 0) {
      copied.append(buf, static_cast<std::size_t>(n));
      PQfreemem(buf);
      continue;
    }
    if (n == 0) {
      REQUIRE(a.wait_input(deadline));
      continue;
    }
    break;  // -1: done
  }
  CHECK(copied == "1\n2\n3\n");
  r = a.next_result(deadline);
  REQUIRE(r);
  CHECK(PQresultStatus(r.get()) == PGRES_COMMAND_OK);
  CHECK(!a.next_result(deadline));
  a.exec("insert into " + table + " values (4)");
  CHECK(direct.exec("select count(*) from " + table) == "3");
  a.exec("commit");
  CHECK(b.exec("select count(*) from " + table) == "4");
  direct.exec("drop table " + table);
}

TEST_CASE("transaction: protocol-level prepared statements follow their client across servers") {
  scoped_role role;
  pgstash_instance px(txn({"pool.size = 2"}));
  pg_conn p1(px.conninfo(role.login()));
  pg_conn p2(px.conninfo(role.login()));
  pg_conn h(px.conninfo(role.login()));
  // The same client name, different statements; the pid tells which server ran it.
  prepare(p1, "s1", "select 'one:' || $1::text || ':' || pg_backend_pid()", 1);
  prepare(p2, "s1", "select 'two:' || $1::text || ':' || pg_backend_pid()", 1);
  // A third client, same text as p1's: pgstash shares the server-side statement.
  pg_conn p3(px.conninfo(role.login()));
  prepare(p3, "other_name", "select 'one:' || $1::text || ':' || pg_backend_pid()", 1);

  busy_client busy(px.conninfo(role.login()));
  std::set<std::string> p1_servers;
  std::set<std::string> p2_servers;
  auto server_of = [](const std::string& v) { return v.substr(v.rfind(':') + 1); };
  for (int i = 0; i < 30; ++i) {
    CAPTURE(i);
    const std::string arg = std::to_string(i);
    std::string v = exec_prepared(p1, "s1", {arg});
    CHECK(v.rfind("one:" + arg + ":", 0) == 0);
    p1_servers.insert(server_of(v));
    // H takes the connection P1 just used, so P1 and P2 must use the other one.
    if (i % 2 == 0) h.exec("begin");
    v = exec_prepared(p2, "s1", {arg});
    CHECK(v.rfind("two:" + arg + ":", 0) == 0);
    p2_servers.insert(server_of(v));
    v = exec_prepared(p1, "s1", {arg});
    CHECK(v.rfind("one:" + arg + ":", 0) == 0);
    p1_servers.insert(server_of(v));
    v = exec_prepared(p3, "other_name", {arg});
    CHECK(v.rfind("one:" + arg + ":", 0) == 0);
    if (i % 2 == 0) h.exec("commit");
    // Inside a transaction too.
    if (i % 5 == 0) {
      p2.exec("begin");
      CHECK(exec_prepared(p2, "s1", {"tx"}).rfind("two:tx:", 0) == 0);
      CHECK(exec_prepared(p2, "s1", {"tx2"}).rfind("two:tx2:", 0) == 0);
      p2.exec("commit");
    }
  }
  CAPTURE(p1_servers.size());
  CAPTURE(p2_servers.size());
  CHECK(p1_servers.size() == 2);  // it did run on both connections
  CHECK(p2_servers.size() == 2);

  // A statement that fails at run time leaves everything usable.
  prepare(p1, "div", "select 10 / $1::int", 1);
  CHECK(error_of([&] { exec_prepared(p1, "div", {"0"}); }) == "22012");
  CHECK(exec_prepared(p1, "div", {"5"}) == "2");
  // A statement the server refuses to prepare gives the server's error, and the name stays free.
  CHECK(error_of([&] { prepare(p1, "bad", "select * from itest_no_such_table"); }) == "42P01");
  CHECK(error_of([&] { exec_prepared(p1, "bad"); }) == "26000");
  prepare(p1, "bad", "select 'fixed'");
  CHECK(exec_prepared(p1, "bad") == "fixed");
  // An unknown name is the server's 26000.
  CHECK(error_of([&] { exec_prepared(p1, "never_prepared"); }) == "26000");
  busy.stop();
  CHECK(busy.error().empty());
}

TEST_CASE("transaction: PQdescribePrepared on a server connection that never saw the statement") {
  scoped_role role;
  // One worker: with several, a client prefers idle connections on its own thread, and P
  // would keep the one it prepared on.
  pgstash_instance px(txn({"pool.size = 2", "process.workers = 1"}));
  pg_conn p(px.conninfo(role.login()));
  pg_conn g(px.conninfo(role.login()));
  int fresh = 0;
  for (int k = 0; k < 5; ++k) {
    CAPTURE(k);
    const std::string name = "d" + std::to_string(k);
    // G holds one connection, so P prepares on the other; when G commits, its connection is
    // the most recently released one, and P's next request gets it.
    g.exec("begin");
    const std::string g_pid = g.exec(k_pid);
    prepare(p, name,
            "select $1::int + " + std::to_string(k) + " as a, 'k'::text as b, pg_backend_pid() as pid",
            1);
    g.exec("commit");
    sleep_for(milliseconds(50));
    // Describe, then the backend pid, in one pipeline (one Sync: one server connection).
    REQUIRE(PQenterPipelineMode(p.get()) == 1);
    REQUIRE(PQsendDescribePrepared(p.get(), name.c_str()) == 1);
    REQUIRE(PQsendQueryParams(p.get(), k_pid.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) == 1);
    REQUIRE(PQpipelineSync(p.get()) == 1);
    const auto deadline = clock::now() + seconds(10);
    result_ptr d = p.next_result(deadline);
    REQUIRE(d);
    CAPTURE(PQresultErrorMessage(d.get()));
    REQUIRE(PQresultStatus(d.get()) == PGRES_COMMAND_OK);
    CHECK(PQnparams(d.get()) == 1);
    CHECK(PQparamtype(d.get(), 0) == 23);  // int4
    CHECK(PQnfields(d.get()) == 3);
    CHECK(std::string(PQfname(d.get(), 0)) == "a");
    CHECK(std::string(PQfname(d.get(), 1)) == "b");
    CHECK(std::string(PQfname(d.get(), 2)) == "pid");
    CHECK(PQftype(d.get(), 1) == 25);  // text
    CHECK(!p.next_result(deadline));
    result_ptr pid = p.next_result(deadline);
    REQUIRE(pid);
    REQUIRE(PQresultStatus(pid.get()) == PGRES_TUPLES_OK);
    if (g_pid == PQgetvalue(pid.get(), 0, 0)) ++fresh;
    CHECK(!p.next_result(deadline));
    result_ptr sync = p.next_result(deadline);
    REQUIRE(sync);
    CHECK(PQresultStatus(sync.get()) == PGRES_PIPELINE_SYNC);
    REQUIRE(PQexitPipelineMode(p.get()) == 1);
    CHECK(exec_prepared(p, name, {"1"}) == std::to_string(1 + k));
  }
  CHECK(fresh >= 3);  // the describes did run where the statement was not prepared yet
}

TEST_CASE("transaction: Close of a protocol-level statement, then the name reused") {
  pgstash_instance px(txn({"pool.size = 1"}));
  raw_conn a(px.port());
  a.login("postgres", "pgstash_test");
  pg_conn other(px.conninfo());

  REQUIRE(a.send(parse_msg("s1", "select 'first'") + bind_msg("", "s1") + execute_msg() + sync_msg()));
  auto r = read_cycle(a);
  CHECK(tags(r) == "12DCZ");
  CHECK(first_value(r) == "first");
  CHECK(other.exec("select 1") == "1");

  // Close is answered (by pgstash or the server) with CloseComplete.
  REQUIRE(a.send(close_msg('S', "s1") + sync_msg()));
  r = read_cycle(a);
  CHECK(tags(r) == "3Z");
  CHECK(other.exec("select 1") == "1");
  // Closing a name that does not exist is not an error either (PostgreSQL's rule).
  REQUIRE(a.send(close_msg('S', "never_was") + sync_msg()));
  r = read_cycle(a);
  CHECK(tags(r) == "3Z");
  // The closed name is gone for this client...
  REQUIRE(a.send(bind_msg("", "s1") + execute_msg() + sync_msg()));
  r = read_cycle(a);
  CHECK(error_code(r) == "26000");
  CHECK(r.back().tag == 'Z');
  // ...and free for a new statement.
  REQUIRE(a.send(parse_msg("s1", "select 'second'") + bind_msg("", "s1") + execute_msg() + sync_msg()));
  r = read_cycle(a);
  CHECK(tags(r) == "12DCZ");
  CHECK(first_value(r) == "second");
  CHECK(other.exec("select 1") == "1");
  REQUIRE(a.send(bind_msg("", "s1") + execute_msg() + sync_msg()));
  r = read_cycle(a);
  CHECK(first_value(r) == "second");
  // Parse, Bind, Close and Bind again in one batch: the Close applies in order.
  REQUIRE(a.send(parse_msg("s2", "select 'third'") + bind_msg("", "s2") + execute_msg() +
                 close_msg('S', "s2") + bind_msg("", "s2") + execute_msg() + sync_msg()));
  r = read_cycle(a);
  CHECK(first_value(r) == "third");
  CHECK(error_code(r) == "26000");
  // Portals: Close of a portal goes to the server.
  REQUIRE(a.send(parse_msg("s3", "select 'portal'") + bind_msg("p", "s3") + close_msg('P', "p") +
                 sync_msg()));
  r = read_cycle(a);
  CHECK(tags(r) == "123Z");
}

TEST_CASE("transaction: a Parse of a name in use gets the error PostgreSQL checks first") {
  // PostgreSQL checks the statement's text (syntax, an aborted transaction, analysis) before
  // its name; the name's "already exists" comes last, and names the client's statement.
  pgstash_instance px(txn({"pool.size = 1"}));
  raw_conn a(px.port());
  a.login("postgres", "pgstash_test");
  REQUIRE(a.send(parse_msg("s1", "select 'kept'") + sync_msg()));
  CHECK(tags(read_cycle(a)) == "1Z");

  REQUIRE(a.send(parse_msg("s1", "select nosuchcol from pg_class") + sync_msg()));
  auto r = read_cycle(a);
  CHECK(error_code(r) == "42703");
  CHECK(r.back().body == "I");

  REQUIRE(a.send(parse_msg("s1", "select 'other'") + sync_msg()));
  r = read_cycle(a);
  REQUIRE(error_code(r) == "42P05");
  CHECK(parse_error_fields(r[0].body)['M'] == "prepared statement \"s1\" already exists");

  // In a pipeline, after statements that succeeded, the text's own error still comes first.
  REQUIRE(a.send(parse_msg("", "select 1") + bind_msg("", "") + execute_msg() +
                 parse_msg("s1", "selec 1") + sync_msg()));
  r = read_cycle(a);
  CHECK(tags(r) == "12DCEZ");
  CHECK(error_code(r) == "42601");

  REQUIRE(a.send(query_frame("begin")));
  read_cycle(a);
  REQUIRE(a.send(query_frame("select 1/0")));
  CHECK(error_code(read_cycle(a)) == "22012");
  REQUIRE(a.send(parse_msg("s1", "select 'again'") + sync_msg()));
  r = read_cycle(a);
  CHECK(error_code(r) == "25P02");
  CHECK(r.back().body == "E");
  REQUIRE(a.send(query_frame("rollback")));
  read_cycle(a);

  // None of it changed what s1 is.
  REQUIRE(a.send(bind_msg("", "s1") + execute_msg() + sync_msg()));
  CHECK(first_value(read_cycle(a)) == "kept");
}

TEST_CASE("transaction: a Parse of a name in use behind a skipped preparation of it") {
  // The statement's preparation on a fresh server connection is skipped (an earlier error in
  // its batch); a Parse of the same name pipelined behind must still be refused, not taken.
  pgstash_instance px(txn({"pool.size = 2"}));
  raw_conn a(px.port());
  a.login("postgres", "pgstash_test");
  REQUIRE(a.send(parse_msg("s1", "select 'kept'") + sync_msg()));
  CHECK(tags(read_cycle(a)) == "1Z");
  // b holds the connection s1 was prepared on, so a's next batches get another.
  pg_conn b(px.conninfo());
  b.exec("begin");
  REQUIRE(a.send(parse_msg("", "selec 1") + bind_msg("", "s1") + execute_msg() + sync_msg() +
                 parse_msg("s1", "select 'taken'") + sync_msg() + bind_msg("", "s1") +
                 execute_msg() + sync_msg()));
  auto r = read_cycle(a);
  CHECK(error_code(r) == "42601");
  r = read_cycle(a);
  CHECK(error_code(r) == "42P05");
  r = read_cycle(a);
  CHECK(first_value(r) == "kept");
  b.exec("commit");
}

TEST_CASE("transaction: protocol statements follow PostgreSQL's namespace rules") {
  // PostgreSQL has one namespace for PREPARE and protocol-level statements: SQL DEALLOCATE,
  // DEALLOCATE ALL and DISCARD ALL remove protocol-level statements too (psycopg 3, for one,
  // evicts its prepared statements with SQL DEALLOCATE), and a name in use cannot be prepared
  // again.
  pgstash_instance px(txn({"pool.size = 1"}));
  pg_conn p(px.conninfo());
  pg_conn other(px.conninfo());

  prepare(p, "s1", "select 'v1'");
  CHECK(exec_prepared(p, "s1") == "v1");
  CHECK(error_of([&] { prepare(p, "s1", "select 'v1'"); }) == "42P05");
  CHECK(error_of([&] { prepare(p, "s1", "select 'v2'"); }) == "42P05");
  CHECK(exec_prepared(p, "s1") == "v1");

  CHECK(error_of([&] { p.exec("deallocate s1"); }) == "no error");
  CHECK(error_of([&] { exec_prepared(p, "s1"); }) == "26000");
  prepare(p, "s1", "select 'v3'");
  CHECK(exec_prepared(p, "s1") == "v3");

  other.exec("select 1");
  CHECK(error_of([&] { p.exec("deallocate all"); }) == "no error");
  CHECK(error_of([&] { exec_prepared(p, "s1"); }) == "26000");
  prepare(p, "s1", "select 'v4'");
  CHECK(exec_prepared(p, "s1") == "v4");
  other.exec("select 1");
  CHECK(exec_prepared(p, "s1") == "v4");

  CHECK(error_of([&] { p.exec("discard all"); }) == "no error");
  CHECK(error_of([&] { exec_prepared(p, "s1"); }) == "26000");
  prepare(p, "s1", "select 'v5'");
  CHECK(exec_prepared(p, "s1") == "v5");
  other.exec("select 1");
  CHECK(exec_prepared(p, "s1") == "v5");
}

TEST_CASE("transaction: a SQL PREPARE that fails where pgstash re-creates it is tried again") {
  // EXECUTE on a server connection that lacks the client's statement: pgstash PREPAREs it there
  // first. If that fails (its table is gone), the server has no statement, and the next EXECUTE
  // must prepare it again, not take it as there.
  pg_conn direct(direct_conninfo());
  direct.exec(
      "drop table if exists txn_prepare_retry; create table txn_prepare_retry (v int); "
      "insert into txn_prepare_retry values (1)");
  pgstash_instance px(txn({"pool.size = 2"}));
  pg_conn a(px.conninfo());
  a.exec("prepare q as select v from txn_prepare_retry");
  CHECK(a.exec("execute q") == "1");
  // b holds the connection q was prepared on: a's next statements run on another.
  pg_conn b(px.conninfo());
  b.exec("begin");
  direct.exec("drop table txn_prepare_retry");
  CHECK(error_of([&] { a.exec("execute q"); }) == "42P01");
  direct.exec("create table txn_prepare_retry (v int); insert into txn_prepare_retry values (2)");
  CHECK(a.exec("execute q") == "2");
  CHECK(error_of([&] { a.exec("begin; execute q; commit"); }) == "no error");
  b.exec("commit");
  direct.exec("drop table txn_prepare_retry");
}

TEST_CASE("transaction: SQL PREPARE/EXECUTE/DEALLOCATE across transactions and servers") {
  scoped_role role;
  pgstash_instance px(txn({"pool.size = 2"}));
  pg_conn q1(px.conninfo(role.login()));
  pg_conn q2(px.conninfo(role.login()));
  pg_conn h(px.conninfo(role.login()));

  q1.exec("PREPARE q(int) AS select $1 * 2");
  q2.exec("prepare q (int) as select $1 * 3");
  q1.exec("prepare \"Mixed Name\" as select 'mixed'");
  busy_client busy(px.conninfo(role.login()));
  for (int i = 0; i < 20; ++i) {
    CAPTURE(i);
    if (i % 2 == 0) h.exec("begin");  // pushes the next statements to the other connection
    CHECK(q1.exec("execute q(21)") == "42");
    CHECK(q2.exec("execute q(21)") == "63");
    CHECK(q1.exec("begin; execute q(" + std::to_string(i) + "); commit") == std::to_string(i * 2));
    q2.exec("begin");
    CHECK(q2.exec("execute q(1)") == "3");
    CHECK(q2.exec("execute q(2)") == "6");
    q2.exec("commit");
    CHECK(q1.exec("EXECUTE \"Mixed Name\"") == "mixed");
    if (i % 2 == 0) h.exec("commit");
  }

  // PREPARE is not transactional: it survives the rollback of its transaction.
  q1.exec("begin; prepare r as select 7; rollback");
  h.exec("begin");
  CHECK(q1.exec("execute r") == "7");
  h.exec("commit");
  CHECK(q1.exec("execute r") == "7");
  // A name in use cannot be prepared again (42P05), and the old statement stays.
  CHECK(error_of([&] { q1.exec("prepare r as select 8"); }) == "42P05");
  CHECK(q1.exec("execute r") == "7");

  // DEALLOCATE removes it for this client only.
  q1.exec("deallocate q");
  CHECK(error_of([&] { q1.exec("execute q(1)"); }) == "26000");
  CHECK(q2.exec("execute q(5)") == "15");
  h.exec("begin");
  CHECK(error_of([&] { q1.exec("execute q(1)"); }) == "26000");
  CHECK(q2.exec("execute q(5)") == "15");
  h.exec("commit");
  q1.exec("prepare q(int) as select $1 * 4");  // the name is free again
  CHECK(q1.exec("execute q(5)") == "20");
  CHECK(q2.exec("execute q(5)") == "15");

  // DEALLOCATE ALL.
  q2.exec("deallocate all");
  CHECK(error_of([&] { q2.exec("execute q(1)"); }) == "26000");
  h.exec("begin");
  CHECK(error_of([&] { q2.exec("execute q(1)"); }) == "26000");
  h.exec("commit");
  CHECK(q1.exec("execute q(5)") == "20");
  CHECK(q1.exec("execute r") == "7");
  // DEALLOCATE of a name never prepared is the server's 26000.
  CHECK(error_of([&] { q2.exec("deallocate never_prepared"); }) == "26000");
  CHECK(q2.exec("select 'still fine'") == "still fine");
  busy.stop();
  CHECK(busy.error().empty());
}

TEST_CASE("transaction: LISTEN pins the client until DISCARD ALL or it leaves") {
  pgstash_instance px(txn({"pool.size = 1", "pool.query_wait_timeout_ms = 1500"}));
  pg_conn direct(direct_conninfo());
  const std::string channel = "itest_ch_" + unique_suffix();

  // 1. A client waiting for the pinned connection gets it when the listener leaves.
  {
    auto l = std::make_unique<pg_conn>(px.conninfo());
    pg_conn o(px.conninfo());
    l->exec("listen " + channel);
    REQUIRE(PQsendQuery(o.get(), "select 'waited'") == 1);
    sleep_for(milliseconds(300));
    CHECK(!o.wait_input(clock::now() + milliseconds(1)));  // still waiting
    const auto t0 = clock::now();
    l.reset();
    CHECK(collect(o, seconds(5)) == "waited");
    CHECK(seconds_since(t0) < 1.2);
    // The listener's session was reset before reuse.
    CHECK(o.exec("select count(*) from pg_listening_channels()") == "0");
  }

  // 2. While pinned, others time out; notifications reach the listener; DISCARD ALL unpins.
  pg_conn l(px.conninfo());
  pg_conn o(px.conninfo());
  l.exec("listen " + channel);
  const std::string l_pid = l.exec(k_pid);
  auto t0 = clock::now();
  CHECK(error_of([&] { o.exec("select 1"); }) == "53300");
  CAPTURE(seconds_since(t0));
  CHECK(seconds_since(t0) >= 1.3);
  CHECK(seconds_since(t0) < 4.0);
  CHECK(pg_conn::connect_error(px.conninfo()).sqlstate == "53300");

  direct.exec("notify " + channel + ", 'hello'");
  PGnotify* n = nullptr;
  eventually(
      [&] {
        l.wait_input(clock::now() + milliseconds(20));
        n = PQnotifies(l.get());
        return n != nullptr;
      },
      seconds(5));
  REQUIRE(n);
  CHECK(std::string(n->relname) == channel);
  CHECK(std::string(n->extra) == "hello");
  PQfreemem(n);
  for (int i = 0; i < 5; ++i) CHECK(l.exec(k_pid) == l_pid);
  CHECK(l.exec("select count(*) from pg_listening_channels()") == "1");

  l.exec("discard all");
  pg_conn o2(px.conninfo(), seconds(5));
  CHECK(o2.exec("select 'free'") == "free");
  CHECK(l.exec("select count(*) from pg_listening_channels()") == "0");
  CHECK(o2.exec("select 'free'") == "free");
}

TEST_CASE("transaction: a session advisory lock pins the client") {
  pgstash_instance px(txn({"pool.size = 1", "pool.query_wait_timeout_ms = 800"}));
  pg_conn direct(direct_conninfo());
  const std::string key = std::to_string(400000 + std::stoul(unique_suffix().substr(0, 6), nullptr, 16) % 100000);
  const std::string held = "select count(*) from pg_locks where locktype = 'advisory' and "
                           "objid = " +
                           key + " and granted";
  pg_conn k(px.conninfo());
  pg_conn o(px.conninfo());
  k.exec("select pg_advisory_lock(" + key + ")");
  const std::string holder_pid = k.exec(k_pid);
  CHECK(direct.exec(held) == "1");
  CHECK(error_of([&] { o.exec("select 1"); }) == "53300");
  for (int i = 0; i < 3; ++i) CHECK(k.exec(k_pid) == holder_pid);
  // Unlocking does not unpin (pgstash cannot know no lock is left); DISCARD ALL does.
  CHECK(k.exec("select pg_advisory_unlock(" + key + ")") == "t");
  k.exec("select pg_advisory_lock(" + key + ")");
  k.exec("discard all");
  CHECK(direct.exec(held) == "0");  // DISCARD ALL released it
  pg_conn o2(px.conninfo(), seconds(5));
  CHECK(o2.exec("select 'free'") == "free");

  // A pinned client that leaves has its lock released before the connection is reused.
  {
    pg_conn k2(px.conninfo());
    k2.exec("select pg_advisory_lock(" + key + ")");
    CHECK(direct.exec(held) == "1");
  }
  pg_conn o3(px.conninfo(), seconds(5));
  CHECK(o3.exec("select pg_try_advisory_lock(" + key + ")") == "t");
  CHECK(o3.exec("select pg_advisory_unlock(" + key + ")") == "t");
  CHECK(eventually([&] { return direct.exec(held) == "0"; }, seconds(3)));
}

TEST_CASE("transaction: temp tables, WITH HOLD cursors and SET SESSION AUTHORIZATION pin") {
  scoped_role role;
  // Three clients pinned, one connection left for the others.
  pgstash_instance px(txn({"pool.size = 4"}));
  pg_conn t(px.conninfo(role.login()));
  pg_conn w(px.conninfo(role.login()));
  pg_conn s(px.conninfo(role.login()));
  pg_conn o(px.conninfo(role.login()));
  busy_client busy(px.conninfo(role.login()));

  t.exec("create temp table itest_tt(x int)");
  w.exec("declare itest_cur cursor with hold for select g from generate_series(1, 100) g");
  s.exec("set session authorization pgstash_clear");
  // The operator can tell who holds a connection and why.
  const std::string log = px.log();
  CHECK(log.find("until it leaves: temporary object") != std::string::npos);
  CHECK(log.find("until it leaves: WITH HOLD cursor") != std::string::npos);
  CHECK(log.find("until it leaves: SET SESSION AUTHORIZATION") != std::string::npos);
  const std::string t_pid = t.exec(k_pid);
  const std::string w_pid = w.exec(k_pid);
  const std::string s_pid = s.exec(k_pid);
  for (int i = 1; i <= 10; ++i) {
    CAPTURE(i);
    t.exec("begin; insert into itest_tt values (" + std::to_string(i) + "); commit");
    CHECK(t.exec("select count(*) from itest_tt") == std::to_string(i));
    CHECK(w.exec("fetch next from itest_cur") == std::to_string(i));
    CHECK(s.exec("select current_user") == "pgstash_clear");
    CHECK(o.exec("select to_regclass('itest_tt') is null") == "t");
    CHECK(o.exec("select current_user") == role.name());
    CHECK(t.exec(k_pid) == t_pid);
    CHECK(w.exec(k_pid) == w_pid);
    CHECK(s.exec(k_pid) == s_pid);
  }
  // The pinned clients leave; their state does not reach the next users of those connections. The
  // temp table's connection is closed instead (its backend keeps a temporary schema), so a new
  // one takes its place.
  t.finish();
  w.finish();
  s.finish();
  // Four clients in transactions at once hold all four connections.
  std::set<std::string> seen;
  CHECK(eventually(
      [&] {
        std::vector<std::unique_ptr<pg_conn>> n;
        seen.clear();
        for (int i = 0; i < 4; ++i) {
          n.push_back(std::make_unique<pg_conn>(px.conninfo(role.login())));
          n.back()->exec("begin");
          seen.insert(n.back()->exec(k_pid));
          CHECK(n.back()->exec("select to_regclass('itest_tt') is null") == "t");
          CHECK(n.back()->exec("select count(*) from pg_cursors") == "0");
          CHECK(n.back()->exec("select current_user") == role.name());
        }
        return !seen.count(t_pid) && seen.count(w_pid) && seen.count(s_pid);
      },
      seconds(5)));
  busy.stop();
  CHECK(busy.error().empty());
}

TEST_CASE("transaction: cancel reaches the server running the client's query") {
  scoped_role role;
  pgstash_instance px(txn({"pool.size = 2"}));
  pg_conn direct(direct_conninfo());
  const std::string tag = "itest_cancel_" + unique_suffix();
  pg_conn a(px.conninfo(role.login()));
  pg_conn b(px.conninfo(role.login()));

  // BackendKeyData carries a number of pgstash's, not a server pid.
  CHECK(a.backend_pid() != 0);
  CHECK(std::to_string(a.backend_pid()) != a.exec(k_pid));
  CHECK(direct.exec("select count(*) from pg_stat_activity where pid = " +
                    std::to_string(a.backend_pid())) == "0");
  CHECK(a.backend_pid() != b.backend_pid());

  // A cancel while A has no query running does nothing.
  {
    PGcancel* cancel = PQgetCancel(a.get());
    char err[256];
    CHECK(PQcancel(cancel, err, sizeof err) == 1);
    PQfreeCancel(cancel);
    CHECK(a.exec("select 'idle cancel ignored'") == "idle cancel ignored");
  }

  for (bool in_transaction : {false, true}) {
    CAPTURE(in_transaction);
    if (in_transaction) a.exec("begin");
    REQUIRE(PQsendQuery(a.get(), ("select pg_sleep(30) /* " + tag + " */").c_str()) == 1);
    REQUIRE(PQsendQuery(b.get(), "select 'b', pg_sleep(1)") == 1);
    REQUIRE(eventually(
        [&] {
          return direct.exec("select count(*) from pg_stat_activity where state = 'active' and "
                             "query like '%" +
                             tag + "%' and pid <> pg_backend_pid()") == "1";
        },
        seconds(5)));
    const auto t0 = clock::now();
    PGcancel* cancel = PQgetCancel(a.get());
    REQUIRE(cancel);
    char err[256];
    CHECK(PQcancel(cancel, err, sizeof err) == 1);
    PQfreeCancel(cancel);
    CHECK(error_of([&] { collect(a, seconds(10)); }) == "57014");
    CAPTURE(seconds_since(t0));
    CHECK(seconds_since(t0) < 2.0);
    // B's query, on the other connection, was not touched.
    CHECK(collect(b, seconds(10)) == "b");
    if (in_transaction) {
      CHECK(PQtransactionStatus(a.get()) == PQTRANS_INERROR);
      a.exec("rollback");
    }
    CHECK(a.exec("select 'after cancel'") == "after cancel");
  }
}

TEST_CASE("transaction: a late cancel never reaches the next client on the connection") {
  // Cancel requests take 600 ms to reach PostgreSQL, longer than A's query runs, so
  // the cancel is still on its way when A's query ends on its own. The connection must
  // not pass to B before the server has the cancel, or the cancel stops B's query.
  slow_relay slow(std::stoi(cluster_value("PGSTASH_PG_PORT")), milliseconds(600));
  pgstash_instance px(txn({"pool.size = 1", "server.port = " + std::to_string(slow.port())}));
  pg_conn a(px.conninfo());
  pg_conn b(px.conninfo());
  CHECK(a.exec("select 1") == "1");  // the one server connection is open

  REQUIRE(PQsendQuery(a.get(), "select 'a', pg_sleep(0.2)") == 1);
  PGcancel* cancel = PQgetCancel(a.get());
  REQUIRE(cancel);
  char err[256];
  CHECK(PQcancel(cancel, err, sizeof err) == 1);
  PQfreeCancel(cancel);
  REQUIRE(PQsendQuery(b.get(), "select 'b', pg_sleep(1)") == 1);
  CHECK(collect(a, seconds(10)) == "a");
  CHECK(collect(b, seconds(10)) == "b");
  CHECK(slow.connections() == 2);  // the server connection and the cancel
}

TEST_CASE("transaction: pool.query_wait_timeout_ms gives 53300 while the pool is held") {
  pgstash_instance px(txn({"pool.size = 1", "pool.query_wait_timeout_ms = 500"}));
  pg_conn h(px.conninfo());
  pg_conn w(px.conninfo());
  h.exec("begin");
  h.exec("select 1");
  const auto t0 = clock::now();
  CHECK(error_of([&] { w.exec("select 1", seconds(10)); }) == "53300");
  const double took = seconds_since(t0);
  CAPTURE(took);
  CHECK(took >= 0.4);
  CHECK(took < 1.5);
  h.exec("commit");
  pg_conn n(px.conninfo());
  CHECK(n.exec("select 'next'") == "next");
  CHECK(h.exec("select 'holder'") == "holder");
}

TEST_CASE("transaction: pool.server_lifetime_ms replaces connections once released") {
  pgstash_instance px(txn({"pool.size = 1", "pool.server_lifetime_ms = 300"}));
  pg_conn direct(direct_conninfo());
  pg_conn c(px.conninfo());
  const std::string p1 = c.exec(k_pid);
  // Not while in use: a transaction outliving the lifetime keeps its connection.
  c.exec("begin");
  CHECK(c.exec(k_pid) == p1);
  c.exec("select pg_sleep(0.4)");
  CHECK(c.exec(k_pid) == p1);
  c.exec("commit");
  // Closed when it was released: the next statement runs on a new connection.
  const std::string p2 = c.exec(k_pid);
  CHECK(p2 != p1);
  CHECK(eventually(
      [&] { return direct.exec("select count(*) from pg_stat_activity where pid = " + p1) == "0"; },
      seconds(3)));
  // And again, for a client that only runs short statements.
  CHECK(eventually([&] { return c.exec(k_pid) != p2; }, seconds(3)));
}

TEST_CASE("transaction: pool.server_idle_timeout_ms closes idle connections") {
  scoped_role role;
  pgstash_instance px(txn({"pool.size = 2", "pool.server_idle_timeout_ms = 1000"}));
  pg_conn direct(direct_conninfo());
  pg_conn c(px.conninfo(role.login()));
  const std::string p1 = c.exec(k_pid);
  const auto t0 = clock::now();
  CHECK(role.backends(direct) == 1);
  CHECK(eventually([&] { return role.backends(direct) == 0; }, seconds(5)));
  const double took = seconds_since(t0);
  CAPTURE(took);
  CHECK(took >= 0.8);
  CHECK(took < 3.0);
  // The client does not notice, beyond getting a new connection.
  CHECK(c.exec(k_pid) != p1);
}

TEST_CASE("transaction: pool.min_pool_size opens spare connections once the pool is used") {
  scoped_role role;
  pgstash_instance px(txn({"pool.size = 5", "pool.min_pool_size = 2"}));
  pg_conn direct(direct_conninfo());
  sleep_for(milliseconds(1200));  // a maintenance tick with the pool never used
  CHECK(role.backends(direct) == 0);
  pg_conn c(px.conninfo(role.login()));
  CHECK(c.exec("select 1") == "1");
  CHECK(eventually([&] { return role.backends(direct) == 2; }, seconds(4)));
  // Kept at that, not beyond, while nothing else happens.
  sleep_for(milliseconds(1200));
  CHECK(role.backends(direct) == 2);
  // Replaced when the server closes them, without waiting for a client to need one.
  for (const auto& pid : role.backend_pids(direct))
    direct.exec("select pg_terminate_backend(" + pid + ")");
  REQUIRE(eventually([&] { return role.backends(direct) == 0; }, seconds(3)));
  CHECK(eventually([&] { return role.backends(direct) == 2; }, seconds(4)));
  // A client finds working connections.
  CHECK(c.exec("select 2") == "2");
  CHECK(eventually([&] { return role.backends(direct) == 2; }, seconds(4)));
}

TEST_CASE("transaction: the reserve pool serves a client that waited reserve_pool_timeout_ms") {
  scoped_role role;
  pgstash_instance px(txn({"pool.size = 1", "pool.reserve_pool_size = 1",
                           "pool.reserve_pool_timeout_ms = 300", "pool.query_wait_timeout_ms = 1500"}));
  pg_conn direct(direct_conninfo());
  pg_conn h(px.conninfo(role.login()));
  pg_conn w(px.conninfo(role.login()));
  pg_conn x(px.conninfo(role.login()));
  h.exec("begin");
  const std::string h_pid = h.exec(k_pid);
  auto t0 = clock::now();
  w.exec("begin");
  const std::string w_pid = w.exec(k_pid);
  double took = seconds_since(t0);
  CAPTURE(took);
  CHECK(w_pid != h_pid);
  CHECK(took >= 0.25);
  CHECK(took < 1.2);
  CHECK(role.backends(direct) == 2);
  // pool.size + reserve_pool_size is the bound.
  t0 = clock::now();
  CHECK(error_of([&] { x.exec("select 1"); }) == "53300");
  CHECK(seconds_since(t0) >= 1.3);
  CHECK(role.backends(direct) == 2);
  h.exec("commit");
  w.exec("commit");
  pg_conn n(px.conninfo(role.login()));
  CHECK(n.exec("select 'ok'") == "ok");
}

// Restarts the test cluster (fast shutdown) and records the new postmaster's
// pid in the cluster's env file, where scripts/pg_test_cluster.sh stop looks.
void restart_cluster() {
  const std::string bin = cluster_value("PGSTASH_PG_BIN");
  const std::string data = cluster_value("PGSTASH_PG_DATA");
  const std::string log = cluster_value("PGSTASH_PG_LOG");
  const std::string user = cluster_value("PGSTASH_PG_OSUSER");
  command_result r = run_command({"/bin/sh", "-c",
                                  "cd / && exec runuser -u '" + user + "' -- '" + bin +
                                      "/pg_ctl' -D '" + data + "' -l '" + log +
                                      "' -w -t 60 -m fast restart"},
                                 seconds(90));
  std::string pid;
  {
    std::ifstream pidfile(data + "/postmaster.pid");
    std::getline(pidfile, pid);
  }
  const std::string env_path = require_env("PGSTASH_TEST_CLUSTER_DIR") + "/env";
  if (!pid.empty()) {
    std::ifstream in(env_path);
    std::stringstream out;
    std::string line;
    while (std::getline(in, line))
      out << (line.rfind("PGSTASH_PG_PID=", 0) == 0 ? "PGSTASH_PG_PID=" + pid : line) << "\n";
    in.close();
    {
      std::ofstream tmp(env_path + ".tmp", std::ios::trunc);
      tmp << out.str();
    }
    std::rename((env_path + ".tmp").c_str(), env_path.c_str());
  }
  INFO("pg_ctl restart: " << r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(!pid.empty());
}

TEST_CASE("transaction: PostgreSQL restarting under idle and busy clients") {
  pgstash_instance px(txn({"pool.size = 3", "pool.query_wait_timeout_ms = 5000"}));
  pg_conn c(px.conninfo());
  pg_conn d(px.conninfo());
  c.exec("set application_name = 'itest_restart'");
  CHECK(c.exec("select 1") == "1");
  d.exec("begin");
  const std::string old_pid = d.exec(k_pid);

  restart_cluster();

  // C was between transactions: it carries on, on a new connection, with its session.
  const auto t0 = clock::now();
  std::string first;
  try {
    first = c.exec("select current_setting('application_name')", seconds(10));
  } catch (const std::exception& e) {
    FAIL_CHECK("the first statement after the restart failed: " << e.what());
  }
  CHECK(first == "itest_restart");
  CHECK(eventually(
      [&] {
        try {
          return c.exec("begin; select 'tx'; commit", seconds(5)) == "tx";
        } catch (const std::exception&) {
          return false;
        }
      },
      seconds(10)));
  CHECK(seconds_since(t0) < 5.0);
  CHECK(c.exec(k_pid) != old_pid);
  // D's transaction died with its server: it hears so promptly, it does not hang.
  const auto t1 = clock::now();
  CHECK(error_of([&] { d.exec("select 1", seconds(10)); }) != "no error");
  CHECK(seconds_since(t1) < 3.0);
  // New clients log in and work.
  pg_conn e(px.conninfo(), seconds(10));
  CHECK(e.exec("select 'new'") == "new");
  for (int i = 0; i < 5; ++i) CHECK(c.exec("select 'again'") == "again");
  CHECK(px.alive());
}

// Waits for pgstash to end `c` with a FATAL `sqlstate` within [min, max]
// seconds; returns true if it did.
bool ended_with(raw_conn& c, const std::string& sqlstate, double min, double max) {
  const auto t0 = clock::now();
  auto m = c.read_message(milliseconds(static_cast<long>(max * 1000) + 2000));
  const double took = seconds_since(t0);
  CAPTURE(sqlstate);
  CAPTURE(took);
  if (!m) {
    FAIL_CHECK("no message within " << max + 2 << " s (connection "
                                    << std::string(c.closed() ? "closed" : "still open") << ")");
    return false;
  }
  auto f = parse_error_fields(m->body);
  CHECK(m->tag == 'E');
  CHECK(f['C'] == sqlstate);
  CHECK(f['S'] == "FATAL");
  CHECK(took >= min);
  CHECK(took < max);
  CHECK(c.wait_closed(seconds(3)));
  return m->tag == 'E' && f['C'] == sqlstate;
}

// Sends `sql` as a simple Query and reads through ReadyForQuery; returns the
// transaction status, or "E<sqlstate>" on an error, or "closed".
std::string simple(raw_conn& c, const std::string& sql, milliseconds timeout = k_default_timeout) {
  if (!c.send(query_frame(sql))) return "closed";
  try {
    auto r = read_cycle(c, timeout);
    const std::string e = error_code(r);
    return e.empty() ? r.back().body : "E" + e;
  } catch (const std::exception& e) {
    return e.what();
  }
}

TEST_CASE("transaction: limits.idle_transaction_timeout_ms ends an idle transaction with 25P03") {
  pgstash_instance px(txn({"pool.size = 1", "limits.idle_transaction_timeout_ms = 500"}));
  pg_conn direct(direct_conninfo());
  const std::string table = "itest_txi_" + unique_suffix();
  direct.exec("create table " + table + "(x int)");

  SUBCASE("busy with short pauses, or running a long statement, is not idle") {
    raw_conn a(px.port());
    a.login("postgres", "pgstash_test");
    CHECK(simple(a, "begin") == "T");
    for (int i = 0; i < 4; ++i) {
      CHECK(simple(a, "select 1") == "T");
      sleep_for(milliseconds(200));
    }
    // The client waits for the server here, it is not idle.
    CHECK(simple(a, "select pg_sleep(1)") == "T");
    CHECK(simple(a, "commit") == "I");
    sleep_for(milliseconds(800));  // idle outside a transaction: fine
    CHECK(simple(a, "select 'still here'") == "I");
  }
  SUBCASE("BEGIN and INSERT sent one by one, then silence") {
    raw_conn a(px.port());
    a.login("postgres", "pgstash_test");
    CHECK(simple(a, "begin") == "T");
    CHECK(simple(a, "insert into " + table + " values (1)") == "T");
    CHECK(ended_with(a, "25P03", 0.4, 2.0));
  }
  SUBCASE("BEGIN alone, then silence") {
    raw_conn a(px.port());
    a.login("postgres", "pgstash_test");
    CHECK(simple(a, "begin") == "T");
    CHECK(ended_with(a, "25P03", 0.4, 2.0));
  }
  SUBCASE("BEGIN and INSERT in one query string, then silence") {
    raw_conn a(px.port());
    a.login("postgres", "pgstash_test");
    CHECK(simple(a, "begin; insert into " + table + " values (1)") == "T");
    CHECK(ended_with(a, "25P03", 0.4, 2.0));
  }
  // Rolled back, and the connection is free again at once.
  const auto t1 = clock::now();
  pg_conn b(px.conninfo(), seconds(10));
  CHECK(b.exec("select count(*) from " + table) == "0");
  CHECK(seconds_since(t1) < 2.0);
  CHECK(direct.exec("select count(*) from " + table) == "0");
  direct.exec("drop table " + table);
}

TEST_CASE("transaction: limits.client_idle_timeout_ms disconnects an idle client with 57P05") {
  pgstash_instance px(txn({"pool.size = 1", "limits.client_idle_timeout_ms = 500"}));
  SUBCASE("after some activity") {
    raw_conn a(px.port());
    a.login("postgres", "pgstash_test");
    // Active every 200 ms for 1.2 s: never idle long enough.
    for (int i = 0; i < 6; ++i) {
      if (i > 0) sleep_for(milliseconds(200));
      CHECK(simple(a, "select 1") == "I");
    }
    CHECK(ended_with(a, "57P05", 0.4, 2.0));
  }
  SUBCASE("right after login") {
    raw_conn a(px.port());
    a.login("postgres", "pgstash_test");
    CHECK(ended_with(a, "57P05", 0.4, 2.0));
  }
  SUBCASE("a client waiting for a long statement is not idle") {
    raw_conn a(px.port());
    a.login("postgres", "pgstash_test");
    CHECK(simple(a, "select pg_sleep(1)") == "I");
    CHECK(simple(a, "select 'still here'") == "I");
  }
  pg_conn b(px.conninfo(), seconds(10));
  CHECK(b.exec("select 1") == "1");
}

}  // namespace
}  // namespace pgstash::itest
