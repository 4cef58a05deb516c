// Client messages larger than limits.io_buffer_size (64 kB by default):
// simple Query texts up to 16 MB and Bind parameters to named statements,
// through both pool modes, with blocking and non-blocking libpq, alone and
// inside a pipeline. In transaction mode pgstash must read such a message
// whole before choosing a server for it (it rewrites and analyses them), and
// must never give its server connection away while it does.
#include <poll.h>

#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "harness.hpp"

namespace pgstash::itest {
namespace {

const std::vector<std::string> k_modes{"session", "transaction"};

std::vector<std::string> mode_config(const std::string& mode) {
  return {"pool.mode = " + toml_string(mode), "pool.size = 2", "pool.query_wait_timeout_ms = 10000"};
}

// Every result of what was sent, in order: each row's first column, or the
// command tag for a result without rows. An error result throws, once all
// results are read.
std::vector<std::string> results_of(pg_conn& c, clock::time_point deadline) {
  std::vector<std::string> out;
  std::optional<pg_error> error;
  while (result_ptr r = c.next_result(deadline)) {
    ExecStatusType st = PQresultStatus(r.get());
    if (st == PGRES_PIPELINE_SYNC) break;
    if (st == PGRES_FATAL_ERROR) {
      if (!error) error.emplace(sqlstate_of(r.get()), PQresultErrorMessage(r.get()));
      continue;
    }
    out.push_back(PQntuples(r.get()) > 0 ? PQgetvalue(r.get(), 0, 0) : PQcmdStatus(r.get()));
  }
  if (error) throw *error;
  return out;
}

// `sql` sent with libpq in non-blocking mode: PQsendQuery queues what the
// socket does not take, and PQflush pushes the rest as the socket drains.
std::vector<std::string> exec_nonblocking(pg_conn& c, const std::string& sql) {
  const auto deadline = clock::now() + seconds(60);
  REQUIRE(PQsetnonblocking(c.get(), 1) == 0);
  REQUIRE(PQsendQuery(c.get(), sql.c_str()) == 1);
  for (;;) {
    const int pending = PQflush(c.get());
    REQUIRE(pending >= 0);
    if (pending == 0) break;
    pollfd p{c.socket(), POLLOUT | POLLIN, 0};
    REQUIRE(::poll(&p, 1, 1000) >= 0);
    if (p.revents & POLLIN) PQconsumeInput(c.get());
    REQUIRE(clock::now() < deadline);
  }
  auto out = results_of(c, deadline);
  REQUIRE(PQsetnonblocking(c.get(), 0) == 0);
  return out;
}

std::vector<std::string> exec_blocking(pg_conn& c, const std::string& sql) {
  REQUIRE(PQsendQuery(c.get(), sql.c_str()) == 1);
  return results_of(c, clock::now() + seconds(60));
}

std::string literal_of_size(std::size_t n) { return "'" + std::string(n, 'x') + "'"; }

TEST_CASE("large messages: simple Query from 64 kB to 16 MB, one and several statements") {
  for (const auto& mode : k_modes) {
    CAPTURE(mode);
    pgstash_instance px(mode_config(mode));
    pg_conn c(px.conninfo());
    pg_conn other(px.conninfo());
    for (std::size_t size : {60000u, 65536u, 70000u, 139000u, 1u << 20, 16u << 20}) {
      CAPTURE(size);
      const std::string lit = literal_of_size(size);
      CHECK(exec_blocking(c, "select length(" + lit + ")") ==
            std::vector<std::string>{std::to_string(size)});
      CHECK(exec_nonblocking(c, "select length(" + lit + ")") ==
            std::vector<std::string>{std::to_string(size)});
      const std::string several = "select 1; select length(" + lit + "); select 3";
      const std::vector<std::string> expected{"1", std::to_string(size), "3"};
      CHECK(exec_blocking(c, several) == expected);
      CHECK(exec_nonblocking(c, several) == expected);
      // A large statement that fails leaves the session usable.
      CHECK_THROWS_AS(exec_blocking(c, "select length(" + lit + ") / 0"), pg_error);
      CHECK(exec_blocking(c, "select 'after'") == std::vector<std::string>{"after"});
      // Others are served meanwhile.
      CHECK(other.exec("select 'other'") == "other");
    }
    // The bulk INSERT an ORM or migration tool sends: 2,000 rows in one Query.
    const std::string table = "itest_bulk_" + unique_suffix();
    c.exec("create table " + table + " (a int, b text)");
    std::string insert = "insert into " + table + " values ";
    for (int i = 0; i < 2000; ++i)
      insert += (i ? ",(" : "(") + std::to_string(i) + ",'" + std::string(60, 'v') + "')";
    CHECK(insert.size() > 64 * 1024);
    CHECK(exec_blocking(c, insert) == std::vector<std::string>{"INSERT 0 2000"});
    CHECK(c.exec("select count(*) from " + table) == "2000");
    c.exec("drop table " + table);
    CHECK(px.alive());
  }
}

// Binds `value` to `statement`'s one text parameter; the whole Bind is then
// larger than the read buffer.
void send_bind(pg_conn& c, const std::string& statement, const std::string& value) {
  const char* values[] = {value.c_str()};
  REQUIRE(PQsendQueryPrepared(c.get(), statement.c_str(), 1, values, nullptr, nullptr, 0) == 1);
}

TEST_CASE("large messages: a Bind larger than the buffer to a named statement") {
  for (const auto& mode : k_modes) {
    CAPTURE(mode);
    pgstash_instance px(mode_config(mode));
    pg_conn c(px.conninfo());
    pg_conn other(px.conninfo());
    REQUIRE(PQsendPrepare(c.get(), "len", "select length($1::text)", 1, nullptr) == 1);
    results_of(c, clock::now() + seconds(15));
    for (std::size_t size : {1000u, 65536u, 100000u, 1u << 20, 8u << 20}) {
      CAPTURE(size);
      send_bind(c, "len", std::string(size, 'b'));
      CHECK(results_of(c, clock::now() + seconds(60)) == std::vector<std::string>{std::to_string(size)});
      CHECK(other.exec("select 'other'") == "other");
    }
    // Several in one pipeline, with a small one between them.
    REQUIRE(PQenterPipelineMode(c.get()) == 1);
    send_bind(c, "len", std::string(100000, 'p'));
    send_bind(c, "len", "small");
    send_bind(c, "len", std::string(200000, 'q'));
    REQUIRE(PQpipelineSync(c.get()) == 1);
    std::vector<std::string> got;
    const auto deadline = clock::now() + seconds(60);
    for (int i = 0; i < 3; ++i) {
      auto part = results_of(c, deadline);  // each query's results end with a null result
      got.insert(got.end(), part.begin(), part.end());
    }
    result_ptr sync = c.next_result(deadline);
    REQUIRE(sync);
    CHECK(PQresultStatus(sync.get()) == PGRES_PIPELINE_SYNC);
    REQUIRE(PQexitPipelineMode(c.get()) == 1);
    CHECK(got == std::vector<std::string>{"100000", "5", "200000"});
    CHECK(c.exec("select 'after'") == "after");
    CHECK(px.alive());
  }
}

}  // namespace
}  // namespace pgstash::itest
