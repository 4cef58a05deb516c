// Transaction mode: a prepared statement whose result type changed (DDL)
// is prepared again and retried once instead of failing the client.
#include <doctest/doctest.h>
#include <libpq-fe.h>

#include "harness.hpp"

using pgstash::itest::direct_conninfo;
using pgstash::itest::pgstash_instance;
using conn = pgstash::itest::pg_conn;

TEST_CASE("transaction: a prepared statement survives a change of its result type") {
  pgstash_instance px({"pool.mode = \"transaction\"", "pool.size = 2"});
  conn direct(direct_conninfo());
  direct.exec("drop table if exists replay_t; create table replay_t(a int); insert into replay_t values (1)");
  conn c(px.conninfo());
  PGresult* prepared = PQprepare(c.get(), "everything", "select * from replay_t", 0, nullptr);
  REQUIRE(PQresultStatus(prepared) == PGRES_COMMAND_OK);
  PQclear(prepared);
  for (int i = 0; i < 2; ++i) {
    PGresult* r = PQexecPrepared(c.get(), "everything", 0, nullptr, nullptr, nullptr, 0);
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    CHECK(PQnfields(r) == 1);
    PQclear(r);
  }
  direct.exec("alter table replay_t add column b int default 7");
  PGresult* r = PQexecPrepared(c.get(), "everything", 0, nullptr, nullptr, nullptr, 0);
  INFO(PQresultErrorMessage(r));
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  CHECK(PQnfields(r) == 2);
  CHECK(std::string(PQgetvalue(r, 0, 1)) == "7");
  PQclear(r);
  CHECK(c.exec("select 1") == "1");
}
