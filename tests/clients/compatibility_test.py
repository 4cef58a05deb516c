#!/usr/bin/python3
"""What real clients and tools expect of a PostgreSQL server, beyond the protocol itself.

Run with Debian's /usr/bin/python3 (python3-psycopg); cases as in case_harness.

  unix_socket_session, unix_socket_transaction
      clients connect by the unix socket listen.unix_socket_dir names, with its file mode;
      authentication (SCRAM, md5) and cancel requests work there as on TCP, and TLS is not
      offered there, as PostgreSQL does.
  template_database_session, template_database_transaction
      after a client used template1 through pgstash, CREATE DATABASE (which copies template1) works
      at once: pgstash keeps no idle connection there.
  temp_schema_session
      a backend that created a temporary schema is not handed to the next client, who gets what a
      fresh backend gives (PostgreSQL keeps the schema after DISCARD ALL).
  logical_replication_session, logical_replication_transaction
      pg_recvlogical creates a slot, streams a change made directly on PostgreSQL and drops the
      slot through pgstash; the walsender connections end with their clients.
  replication_cancel_and_limits_session, replication_cancel_and_limits_transaction
      a query on a replication connection is cancelled through pgstash's cancel key; the
      replication client limit is apart from max_client_conn; a bad replication value is refused
      as PostgreSQL refuses it.
  base_backup_session, base_backup_transaction
      pg_basebackup (physical replication) through pgstash.

Arguments, if any, name the cases to run (all by default).
"""

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import psycopg
import psycopg.errors

from psycopg import pq

from case_harness import CASE_TIMEOUT, CLUSTER, DB, admin, connect, expect, main, ok

SESSION = 'pool.mode = "session"'
TRANSACTION = 'pool.mode = "transaction"'


def unix_socket(case, mode, user, password, method):
    # Short: a unix socket path is limited to 107 bytes.
    sockdir = tempfile.mkdtemp(prefix="pgstash-sock.")
    case.cleanups.append(lambda: os.rmdir(sockdir))
    ssl = os.path.join(CLUSTER["PGSTASH_PG_TMPDIR"], "ssl")
    inst = case.start(mode, f'listen.unix_socket_dir = "{sockdir}"', 'listen.unix_socket_mode = "0770"',
                      f'auth.method = "{method}"', f'listen.tls_cert_file = "{ssl}/server.crt"',
                      f'listen.tls_key_file = "{ssl}/server.key"')
    path = os.path.join(sockdir, f".s.PGSQL.{inst.port}")
    st = os.stat(path)
    expect(stat.S_ISSOCK(st.st_mode), f"{path} is a socket")
    expect(stat.S_IMODE(st.st_mode) == 0o770, f"mode {oct(stat.S_IMODE(st.st_mode))}, wanted 0o770")
    ok("the socket is where PostgreSQL would put it, with the configured mode")
    login = dict(port=inst.port, dbname=DB, user=user, autocommit=True, connect_timeout=10)
    with psycopg.connect(host=sockdir, password=password, **login) as conn:
        expect(conn.execute("select 'over the socket'").fetchone() == ("over the socket",), "query")
        expect(conn.pgconn.host.decode() == sockdir, "libpq used the socket")
        # As PostgreSQL: no TLS on a unix socket (libpq's default sslmode=prefer asked for it).
        expect(not conn.pgconn.ssl_in_use, "TLS on the unix socket")
        ok(f"a client logs in with {method} over the unix socket, without TLS, and runs a query")
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        try:
            conn.execute("select pg_sleep(20)")
            raise AssertionError("pg_sleep was not cancelled")
        except psycopg.errors.QueryCanceled:
            pass
        ok("a cancel request over the unix socket reaches the query")
    with psycopg.connect(host="127.0.0.1", password=password, sslmode="require", **login) as conn:
        expect(conn.pgconn.ssl_in_use, "TLS on TCP")
    try:
        psycopg.connect(host=sockdir, password="wrong", **login)
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


def walsenders():
    with admin() as conn:
        return conn.execute("select count(*) from pg_stat_activity where backend_type = 'walsender'"
                            ).fetchone()[0]


def eventually(predicate, seconds=5):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def recvlogical(port, slot, *args, **kw):
    return subprocess.run(["pg_recvlogical", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                           "-d", DB, "--slot", slot, *args], check=True, timeout=20, **kw)


def logical_replication(case, mode):
    inst = case.start(mode, "pool.size = 1")
    slot = "pgstash_" + ("session" if mode == SESSION else "transaction")
    table = f"{slot}_changes"
    with admin(DB) as conn:
        conn.execute(f"drop table if exists {table}")
        conn.execute(f"create table {table} (x int)")
        if conn.execute("select 1 from pg_replication_slots where slot_name = %s", (slot,)).fetchone():
            conn.execute("select pg_drop_replication_slot(%s)", (slot,))
    recvlogical(inst.port, slot, "--create-slot", "-P", "test_decoding")
    ok("pg_recvlogical --create-slot through pgstash")
    out = os.path.join(case.root, f"{slot}.out")
    stream = subprocess.Popen(["pg_recvlogical", "-h", "127.0.0.1", "-p", str(inst.port), "-U",
                               "postgres", "-d", DB, "--slot", slot, "--start", "-f", out, "-F", "0"])
    try:
        with admin(DB) as conn:
            conn.execute(f"insert into {table} values (4242)")
        expect(eventually(lambda: os.path.exists(out) and "4242" in open(out).read(), 10),
               "the change made on PostgreSQL never arrived through pgstash")
        ok("a change streams through pgstash (CopyBoth relayed both ways)")
        # The pool's one connection is free: replication takes none of pool.size.
        with connect(inst.port) as conn:
            expect(conn.execute("select 1").fetchone() == (1,), "a regular client alongside")
        ok("regular clients are served while the stream runs")
    finally:
        stream.send_signal(signal.SIGINT)
        stream.wait(10)
    recvlogical(inst.port, slot, "--drop-slot")
    ok("pg_recvlogical --drop-slot through pgstash")
    expect(eventually(lambda: walsenders() == 0), "a walsender outlived its client")
    ok("each replication client's server connection ended with it")
    with admin(DB) as conn:
        conn.execute(f"drop table {table}")


def replication_cancel_and_limits(case, mode):
    inst = case.start(mode, "listen.max_replication_conn = 1", "listen.max_client_conn = 1")
    conninfo = f"host=127.0.0.1 port={inst.port} dbname={DB} user=postgres replication=database"
    walsender = pq.PGconn.connect(conninfo.encode())
    expect(walsender.status == pq.ConnStatus.OK, walsender.error_message.decode())
    try:
        with connect(inst.port) as regular:
            expect(regular.execute("select 1").fetchone() == (1,), "regular client")
        ok("a replication client does not count against listen.max_client_conn")
        second = pq.PGconn.connect(conninfo.encode())
        expect(second.status == pq.ConnStatus.BAD and "too many replication clients" in
               second.error_message.decode(), second.error_message.decode())
        second.finish()
        ok("replication clients beyond listen.max_replication_conn are refused")
        # The SQL a logical replication connection accepts, in the simple protocol.
        walsender.send_query(b"select pg_sleep(30)")
        threading.Timer(0.5, lambda: walsender.get_cancel().cancel()).start()
        started = time.monotonic()
        result = None
        while True:
            r = walsender.get_result()
            if r is None:
                break
            result = result or r
        expect(result is not None and result.error_field(pq.DiagnosticField.SQLSTATE) == b"57014",
               "the query was not cancelled")
        expect(time.monotonic() - started < 10, "the cancel took too long")
        ok("a cancel request reaches the replication connection's server")
        r = walsender.exec_(b"IDENTIFY_SYSTEM")
        expect(r.status == pq.ExecStatus.TUPLES_OK, "IDENTIFY_SYSTEM after the cancel")
        ok("the replication connection goes on after the cancel")
    finally:
        walsender.finish()
    for port in (inst.port, CLUSTER["PGSTASH_PG_PORT"]):
        bad = pq.PGconn.connect(f"host=127.0.0.1 port={port} dbname={DB} user=postgres "
                                f"replication=maybe".encode())
        expect(bad.status == pq.ConnStatus.BAD and
               'invalid value for parameter "replication"' in bad.error_message.decode(),
               bad.error_message.decode())
        bad.finish()
    ok("an invalid replication value is refused as PostgreSQL refuses it")


def base_backup(case, mode):
    inst = case.start(mode, "pool.size = 1")
    target = tempfile.mkdtemp(prefix="base_backup.", dir=case.root)
    # A fast checkpoint: a spread one waits out the checkpoint that the suite's other writers
    # may have started on the shared cluster, which took over a minute once.
    subprocess.run(["pg_basebackup", "-h", "127.0.0.1", "-p", str(inst.port), "-U", "postgres",
                    "-D", target, "-Ft", "-X", "none", "--no-sync", "--no-manifest",
                    "--checkpoint=fast"],
                   check=True, timeout=60)
    expect(os.path.getsize(os.path.join(target, "base.tar")) > 1_000_000, "a base backup")
    ok("pg_basebackup through pgstash")
    expect(eventually(lambda: walsenders() == 0), "a walsender outlived pg_basebackup")
    shutil.rmtree(target)


CASES = [
    ("unix_socket_session",
     lambda case: unix_socket(case, SESSION, "pgstash_scram", "scram-secret-1", "scram-sha-256"),
     CASE_TIMEOUT),
    ("unix_socket_transaction",
     lambda case: unix_socket(case, TRANSACTION, "pgstash_md5", "md5-secret-1", "md5"), CASE_TIMEOUT),
    ("template_database_session", lambda case: template_database(case, SESSION), CASE_TIMEOUT),
    ("template_database_transaction", lambda case: template_database(case, TRANSACTION), CASE_TIMEOUT),
    ("temp_schema_session", temp_schema_session, CASE_TIMEOUT),
    ("logical_replication_session", lambda case: logical_replication(case, SESSION), CASE_TIMEOUT),
    ("logical_replication_transaction", lambda case: logical_replication(case, TRANSACTION),
     CASE_TIMEOUT),
    ("replication_cancel_and_limits_session",
     lambda case: replication_cancel_and_limits(case, SESSION), CASE_TIMEOUT),
    ("replication_cancel_and_limits_transaction",
     lambda case: replication_cancel_and_limits(case, TRANSACTION), CASE_TIMEOUT),
    ("base_backup_session", lambda case: base_backup(case, SESSION), 90),
    ("base_backup_transaction", lambda case: base_backup(case, TRANSACTION), 90),
]

if __name__ == "__main__":
    sys.exit(main("compatibility", CASES))
