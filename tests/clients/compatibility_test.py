#!/usr/bin/python3
"""What real clients and tools expect of a PostgreSQL server, beyond the protocol itself.

Run with Debian's /usr/bin/python3 (python3-psycopg); cases as in case_harness.

  unix_socket_session, unix_socket_transaction
      clients connect by the unix socket listen.unix_socket_dir names, with its file mode, and
      authentication applies there as on TCP.
  template_database_session, template_database_transaction
      after a client used template1 through pgstash, CREATE DATABASE (which copies template1) works
      at once: pgstash keeps no idle connection there.
  temp_schema_session
      a backend that created a temporary schema is not handed to the next client, who gets what a
      fresh backend gives (PostgreSQL keeps the schema after DISCARD ALL).

Arguments, if any, name the cases to run (all by default).
"""

import os
import stat
import sys
import tempfile
import time

import psycopg
import psycopg.errors

from case_harness import CASE_TIMEOUT, DB, admin, connect, expect, main, ok

SESSION = 'pool.mode = "session"'
TRANSACTION = 'pool.mode = "transaction"'


def unix_socket(case, mode):
    # Short: a unix socket path is limited to 107 bytes.
    sockdir = tempfile.mkdtemp(prefix="pgstash-sock.")
    case.cleanups.append(lambda: os.rmdir(sockdir))
    inst = case.start(mode, f'listen.unix_socket_dir = "{sockdir}"', 'listen.unix_socket_mode = "0770"',
                      'auth.method = "scram-sha-256"')
    path = os.path.join(sockdir, f".s.PGSQL.{inst.port}")
    st = os.stat(path)
    expect(stat.S_ISSOCK(st.st_mode), f"{path} is a socket")
    expect(stat.S_IMODE(st.st_mode) == 0o770, f"mode {oct(stat.S_IMODE(st.st_mode))}, wanted 0o770")
    ok("the socket is where PostgreSQL would put it, with the configured mode")
    with psycopg.connect(host=sockdir, port=inst.port, dbname=DB, user="pgstash_scram",
                         password="scram-secret-1", autocommit=True, connect_timeout=10) as conn:
        expect(conn.execute("select 'over the socket'").fetchone() == ("over the socket",), "query")
        expect(conn.pgconn.host.decode() == sockdir, "libpq used the socket")
    ok("a client logs in with SCRAM over the unix socket and runs a query")
    try:
        psycopg.connect(host=sockdir, port=inst.port, dbname=DB, user="pgstash_scram",
                        password="wrong", connect_timeout=10)
        raise AssertionError("a wrong password was accepted over the unix socket")
    except psycopg.OperationalError as e:
        expect("password authentication failed" in str(e), f"unexpected error: {e}")
    ok("a wrong password is refused over the unix socket as over TCP")
    inst.stop(show_log=False)
    expect(not os.path.exists(path), "the socket file is removed when pgstash stops")
    ok("the socket file is removed on shutdown")


def connections_to(dbname):
    with admin() as conn:
        return conn.execute("select count(*) from pg_stat_activity where datname = %s",
                            (dbname,)).fetchone()[0]


def template_database(case, mode):
    inst = case.start(mode, "pool.size = 2")
    with connect(inst.port, dbname="template1") as conn:
        first = conn.execute("select pg_backend_pid()").fetchone()[0]
        conn.execute("select 1")
        expect(conn.execute("select pg_backend_pid()").fetchone()[0] == first,
               "a template1 client keeps its server connection between transactions")
    ok("a template1 client keeps one server connection for its session")
    deadline = time.monotonic() + 5
    while connections_to("template1") and time.monotonic() < deadline:
        time.sleep(0.05)
    expect(connections_to("template1") == 0, "pgstash still holds a connection to template1")
    name = "pgstash_copy_" + ("session" if mode == SESSION else "transaction")
    with admin() as conn:
        conn.execute(f"drop database if exists {name}")
        conn.execute(f"create database {name}")
        conn.execute(f"drop database {name}")
    ok("CREATE DATABASE copies template1 right after a client used it through pgstash")


def temp_schema_session(case):
    inst = case.start(SESSION, "pool.size = 1")
    with connect(inst.port) as conn:
        conn.execute("create temp table scratch (x int)")
        expect(conn.execute("select pg_my_temp_schema() <> 0").fetchone() == (True,), "temp schema")
    with connect(inst.port) as conn:
        expect(conn.execute("select pg_my_temp_schema() = 0").fetchone() == (True,),
               "the next client's backend has a temporary schema left by the one before")
        # PostgreSQL's regression test: a fresh backend creates its temporary schema for
        # current_schema() under search_path = pg_temp, which makes PREPARE TRANSACTION refuse.
        conn.execute("set search_path = pg_temp")
        conn.execute("begin")
        conn.execute("select current_schema() ~ 'pg_temp'")
        try:
            conn.execute("prepare transaction 'pgstash_temp_schema'")
            raise AssertionError("PREPARE TRANSACTION was accepted")
        except psycopg.errors.FeatureNotSupported as e:
            expect("temporary objects" in str(e), f"unexpected error: {e}")
    ok("the next client gets a backend without a temporary schema, as a fresh one")
    pids = []
    for _ in range(2):
        with connect(inst.port) as conn:
            pids.append(conn.execute("select pg_backend_pid()").fetchone()[0])
    expect(pids[0] == pids[1], f"backends {pids}: one without a temporary schema is reused")
    ok("backends without a temporary schema are still reused")


CASES = [
    ("unix_socket_session", lambda case: unix_socket(case, SESSION), CASE_TIMEOUT),
    ("unix_socket_transaction", lambda case: unix_socket(case, TRANSACTION), CASE_TIMEOUT),
    ("template_database_session", lambda case: template_database(case, SESSION), CASE_TIMEOUT),
    ("template_database_transaction", lambda case: template_database(case, TRANSACTION), CASE_TIMEOUT),
    ("temp_schema_session", temp_schema_session, CASE_TIMEOUT),
]

if __name__ == "__main__":
    sys.exit(main("compatibility", CASES))
