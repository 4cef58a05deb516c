#!/usr/bin/python3
"""Transaction-pooling regressions, reproduced with psycopg 3 (and psql) as applications hit them.

Run with Debian's /usr/bin/python3 (python3-psycopg). Every case starts its own pgstash (a small
pool, so that clients meet each other's server connections) and runs in a thread with a time
limit: a hang fails the case instead of blocking the test, and a pgstash that dies during a case
is reported as such. All cases run even when one fails; the test fails if any did.

  large_bind_transaction, large_bind_session, large_bind_pipeline
      a 100 kB bytea bound to a named statement (larger than limits.io_buffer_size), in each
      pooling mode and inside a pipeline; pgstash must survive and its other clients too.
  sql_prepare_default, sql_prepare_zero
      20 clients each PREPARE p / EXECUTE p(1) / DEALLOCATE p 60 times on a pool of 3, with
      psycopg's default prepare_threshold and with 0: EXECUTE must run the client's own p.
  pipeline_after_failed_pipeline
      a pipeline that failed must not leave its server connection unusable for the next client's
      pipeline (on a database of its own, so that the pool starts empty).
  statement_cache_eviction
      psycopg's prepared-statement cache evicting and deallocating entries (prepared_max 5).
  bulk_insert_psql, bulk_insert_psycopg
      a 139 kB, 2,000-row INSERT in one simple Query, through psql -f and through psycopg.
  prepared_type_rolled_back
      a server-side statement prepared by one client for a type that a rolled-back savepoint
      created must not be handed to later clients once the type exists again (with another oid).

  empty_search_path
      pg_dump's set_config('search_path', '', false), carried to another connection, reads back
      as '' (not "", which is what SET search_path TO '' gives).

Arguments, if any, name the cases to run (all by default).
"""

import os
import sys
import subprocess
import threading
import time

import psycopg
import psycopg.errors

from case_harness import (CASE_TIMEOUT, CLUSTER, DB, Failure, admin, connect, expect, main,
                          ok)

POOL_SIZE = 3
TRANSACTION = ['pool.mode = "transaction"', f"pool.size = {POOL_SIZE}"]
SESSION = ['pool.mode = "session"', f"pool.size = {POOL_SIZE}"]


BIG = 100_000  # above limits.io_buffer_size (64 kB by default)


def large_bind(case, extra, pipeline):
    inst = case.start(*extra)
    with connect(inst.port) as bystander:
        expect(bystander.execute("select 'bystander'").fetchone() == ("bystander",), "bystander")
        with connect(inst.port, prepare_threshold=0) as conn:
            if pipeline:
                # The first pipeline carries the Parse with the large Binds; the second only Binds
                # to the statement prepared by then.
                for run in ("with its Parse", "to the prepared statement"):
                    with conn.pipeline():
                        curs = [conn.execute("select %s::int, length(%b::bytea)",
                                             (i, bytes([65 + i]) * BIG)) for i in range(3)]
                    got = [c.fetchone() for c in curs]
                    expect(got == [(i, BIG) for i in range(3)],
                           f"pipelined 100 kB binds {run} gave {got}")
                    ok(f"3 pipelined binds of a 100 kB bytea {run}")
            else:
                for size in (1000, BIG):
                    n = conn.execute("select length(%b::bytea)", (b"x" * size,)).fetchone()[0]
                    expect(n == size, f"length of a {size}-byte bytea parameter is {n}")
                ok("a 100 kB bytea bound to a named statement")
            expect(conn.execute("select 'same client'").fetchone() == ("same client",),
                   "the client that bound 100 kB cannot query again")
        case.expect_alive(inst, "after a 100 kB bind")
        expect(bystander.execute("select 'bystander again'").fetchone() == ("bystander again",),
               "another client's connection broke")
    with connect(inst.port) as later:
        expect(later.execute("select 'later'").fetchone() == ("later",), "a new client")
    ok("pgstash alive, another client and a new client unaffected")


def case_large_bind_transaction(case):
    large_bind(case, TRANSACTION, pipeline=False)


def case_large_bind_session(case):
    large_bind(case, SESSION, pipeline=False)


def case_large_bind_pipeline(case):
    large_bind(case, TRANSACTION, pipeline=True)


# --- (b) SQL-level PREPARE / EXECUTE / DEALLOCATE by many clients on a small pool

SQL_PREPARE_CLIENTS = 20
SQL_PREPARE_CYCLES = 60


def sql_prepare(case, kw):
    inst = case.start(*TRANSACTION)
    lock = threading.Lock()
    counts = {"cycles": 0, "mismatch": 0, "error": 0}
    samples = {"mismatch": [], "error": []}

    def note(kind, detail):
        with lock:
            counts[kind] += 1
            if len(samples[kind]) < 3:
                samples[kind].append(detail)

    def client(i):
        try:
            conn = connect(inst.port, **kw)
        except psycopg.Error as e:
            note("error", f"client {i} connect: {e}")
            return
        try:
            for _ in range(SQL_PREPARE_CYCLES):
                try:
                    conn.execute(f"PREPARE p AS SELECT {i} + $1::int")
                    got = conn.execute("EXECUTE p(1)").fetchone()[0]
                    if got != i + 1:
                        note("mismatch", f"client {i}: EXECUTE p(1) gave {got}, expected {i + 1}")
                    conn.execute("DEALLOCATE p")
                    with lock:
                        counts["cycles"] += 1
                except psycopg.Error as e:
                    note("error", f"client {i}: {type(e).__name__}: {str(e).strip()}")
                    conn.close()
                    try:
                        conn = connect(inst.port, **kw)
                    except psycopg.Error as e2:
                        note("error", f"client {i} reconnect: {e2}")
                        return
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True)
               for i in range(SQL_PREPARE_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expect(counts["mismatch"] == 0 and counts["error"] == 0,
           f"{counts} (of {SQL_PREPARE_CLIENTS * SQL_PREPARE_CYCLES} cycles); "
           f"first of each: {samples}")
    ok(f"{counts['cycles']} PREPARE/EXECUTE/DEALLOCATE cycles by {SQL_PREPARE_CLIENTS} clients "
       f"on a pool of {POOL_SIZE}: every EXECUTE ran the client's own statement")


def case_sql_prepare_default(case):
    sql_prepare(case, {})


def case_sql_prepare_zero(case):
    sql_prepare(case, {"prepare_threshold": 0})


# --- (c) a pipeline after another client's failed pipeline

PIPELINE_DB = "pgstash_regr_pipeline"


def case_pipeline_after_failed_pipeline(case):
    with admin() as a:
        a.execute(f"drop database if exists {PIPELINE_DB} with (force)")
        a.execute(f"create database {PIPELINE_DB}")

    def drop_db():
        with admin() as a:
            a.execute(f"drop database if exists {PIPELINE_DB} with (force)")
    case.cleanups.append(drop_db)

    inst = case.start(*TRANSACTION)
    query = "SELECT 1"

    def connect_db():
        return connect(inst.port, dbname=PIPELINE_DB)

    with connect_db() as conn:
        conn.execute(query, prepare=True).fetchone()
    with connect_db() as conn:
        with conn.pipeline() as p, conn.cursor() as cur:
            cur.execute("SELECT aaaa")
            try:
                p.sync()
                raise Failure("SELECT aaaa in a pipeline did not fail")
            except psycopg.errors.UndefinedColumn:
                pass
            cur.execute(query, prepare=True)
            got = cur.fetchall()
            expect(got == [(1,)], f"prepared query after the failed pipeline gave {got}")
    ok("a prepared query in a pipeline after its failed first sync")
    with connect_db() as conn:
        expect(conn.execute(query, prepare=True).fetchone() == (1,),
               "prepared query of a new client")
    with connect_db() as conn:
        with conn.pipeline() as p, conn.cursor() as cur:
            cur.execute("SELECT aaaa")
            time.sleep(0.1)  # lets the error arrive before the next query is queued
            try:
                cur.execute("SELECT 123")
            except psycopg.errors.UndefinedColumn:
                pass
            try:
                cur.fetchall()
            except psycopg.errors.PipelineAborted:
                pass
            p.sync()
            cur.execute(query, prepare=True)
            got = cur.fetchall()
            expect(got == [(1,)], f"prepared query after the second failed pipeline gave {got}")
    ok("a second client's pipeline after an aborted pipeline")
    with connect_db() as conn:
        expect(conn.execute("select 'after'").fetchone() == ("after",),
               "a client after both pipelines")
    ok("the database's connections still serve a new client")


# --- (d) psycopg's statement cache evicting its own prepared statements


def case_statement_cache_eviction(case):
    inst = case.start(*TRANSACTION)
    with connect(inst.port, prepare_threshold=0) as conn:
        conn.prepared_max = 5
        for i in range(10):
            expect(conn.execute("select 'a'").fetchone() == ("a",), f"select 'a', round {i}")
            expect(conn.execute(f"select {i}").fetchone() == (i,), f"select {i}")
    ok("prepared_max 5, prepare_threshold 0: 20 statements with evictions (DEALLOCATE) in between")


# --- (e) a simple Query larger than the I/O buffer

BULK_ROWS = 2000


def bulk_insert_sql(table):
    return (f"insert into {table} values "
            + ",".join(f"({i},'{'v' * 60}')" for i in range(BULK_ROWS)) + ";\n")


def bulk_table(case):
    """A table of its own for the INSERT, made and dropped on the cluster directly."""
    table = f"regr_bulk_{case.name}_{os.getpid()}"
    with admin(DB) as a:
        a.execute(f"drop table if exists {table}")
        a.execute(f"create table {table} (a int, b text)")

    def drop_table():
        with admin(DB) as a:
            a.execute(f"drop table if exists {table}")
    case.cleanups.append(drop_table)
    return table


def rows_in(table):
    with admin(DB) as a:
        return a.execute(f"select count(*) from {table}").fetchone()[0]


def case_bulk_insert_psql(case):
    table = bulk_table(case)
    sql = bulk_insert_sql(table)
    expect(len(sql) > 130_000, f"the INSERT is only {len(sql)} bytes")
    inst = case.start(*TRANSACTION)
    path = os.path.join(case.root, f"{table}.sql")
    with open(path, "w") as f:
        f.write(sql)
    psql = os.path.join(CLUSTER["PGSTASH_PG_BIN"], "psql")
    try:
        r = subprocess.run([psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(inst.port), "-U", "postgres", "-d", DB, "-f", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20,
                           env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
    except subprocess.TimeoutExpired:
        raise Failure(f"psql -f with a {len(sql)}-byte INSERT got no answer within 20 s") from None
    expect(r.returncode == 0, f"psql -f exited {r.returncode}: {r.stdout.strip()}")
    n = rows_in(table)
    expect(n == BULK_ROWS, f"after psql -f the table has {n} rows")
    ok(f"psql -f: one {len(sql)}-byte, {BULK_ROWS}-row INSERT")


def case_bulk_insert_psycopg(case):
    table = bulk_table(case)
    sql = bulk_insert_sql(table)
    inst = case.start(*TRANSACTION)
    with connect(inst.port) as conn:
        cur = conn.execute(sql, prepare=False)  # no parameters, not prepared: a simple Query
        expect(cur.rowcount == BULK_ROWS, f"psycopg's INSERT reported {cur.rowcount} rows")
        expect(conn.execute("select 'next'").fetchone() == ("next",), "a query after the INSERT")
    n = rows_in(table)
    expect(n == BULK_ROWS, f"after psycopg's INSERT the table has {n} rows")
    ok(f"psycopg execute with no parameters: one {len(sql)}-byte, {BULK_ROWS}-row INSERT")


# --- (f) a shared server-side statement that refers to a type rolled back since

MOOD_TYPE = "regr_mood"
MOOD_TABLE = "regr_mood_log"
MOOD_INSERT = f"insert into {MOOD_TABLE} (v) values (%s::{MOOD_TYPE}::text)"
MOOD_CLIENTS = 2 * POOL_SIZE


def case_prepared_type_rolled_back(case):
    with admin(DB) as a:
        a.execute(f"drop table if exists {MOOD_TABLE}")
        a.execute(f"drop type if exists {MOOD_TYPE}")
        a.execute(f"create table {MOOD_TABLE} (v text)")

    def drop_objects():
        with admin(DB) as a:
            a.execute(f"drop table if exists {MOOD_TABLE}")
            a.execute(f"drop type if exists {MOOD_TYPE}")
    case.cleanups.append(drop_objects)

    inst = case.start(*TRANSACTION)
    # The parameter's type is resolved at Parse to the type's oid; the savepoint's rollback removes
    # the type but not the statement, which the server keeps (and pgstash may share) by its text.
    with connect(inst.port, prepare_threshold=0) as conn:
        conn.execute("begin")
        conn.execute("savepoint s")
        conn.execute(f"create type {MOOD_TYPE} as enum ('happy', 'sad')")
        conn.execute(MOOD_INSERT, ("happy",))
        # psycopg deallocates all its statements after a ROLLBACK; many drivers (node-postgres,
        # postgres.js, JDBC) keep theirs. Not preparing from here on keeps this client's
        # statement, as those drivers would.
        conn.prepare_threshold = None
        conn.execute("rollback to savepoint s")
        conn.execute("commit")
    ok("a client prepared an INSERT for a type that its savepoint's rollback removed")

    with admin(DB) as a:
        a.execute(f"create type {MOOD_TYPE} as enum ('happy', 'sad')")

    # Clients that all hold a server connection at once cover the whole pool, so one of them is
    # on the connection where the first client prepared its statement.
    barrier = threading.Barrier(POOL_SIZE, timeout=CASE_TIMEOUT / 2)
    lock = threading.Lock()
    errors = []

    def client(i):
        try:
            with connect(inst.port, prepare_threshold=0, autocommit=False) as conn:
                conn.execute("select 1")  # opens the transaction: holds a server connection
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    pass
                conn.execute(MOOD_INSERT, ("sad",))
                conn.commit()
        except psycopg.Error as e:
            with lock:
                errors.append(f"client {i}: {type(e).__name__}: {str(e).strip()}")

    for rnd in range(MOOD_CLIENTS // POOL_SIZE):
        barrier.reset()
        threads = [threading.Thread(target=client, args=(rnd * POOL_SIZE + i,), daemon=True)
                   for i in range(POOL_SIZE)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    expect(not errors, f"{len(errors)} of {MOOD_CLIENTS} later clients failed; first: {errors[:3]}")
    with connect(inst.port) as conn:
        n = conn.execute(f"select count(*) from {MOOD_TABLE}").fetchone()[0]
        expect(n == MOOD_CLIENTS, f"{MOOD_TABLE} has {n} rows, expected {MOOD_CLIENTS}")
    ok(f"{MOOD_CLIENTS} later clients, {POOL_SIZE} at a time, ran the same INSERT "
       "once the type existed")


# --- (h) pg_dump's empty search_path, carried to another connection


def case_empty_search_path(case):
    inst = case.start('pool.mode = "transaction"', "pool.size = 1")
    with connect(inst.port) as a, connect(inst.port) as b:
        a.execute("select pg_catalog.set_config('search_path', '', false)")
        # B takes the one connection and puts it back to its own settings; A's comes back after.
        b.execute("select 1")
        value = a.execute("select current_setting('search_path')").fetchone()[0]
        expect(value == "", f"search_path reads back {value!r}, PostgreSQL gives ''")
    ok("set_config('search_path', '', false) reads back '' on the next connection, as set")


CASES = [
    ("large_bind_transaction", case_large_bind_transaction, CASE_TIMEOUT),
    ("large_bind_session", case_large_bind_session, CASE_TIMEOUT),
    ("large_bind_pipeline", case_large_bind_pipeline, CASE_TIMEOUT),
    ("sql_prepare_default", case_sql_prepare_default, 2 * CASE_TIMEOUT),
    ("sql_prepare_zero", case_sql_prepare_zero, 2 * CASE_TIMEOUT),
    ("pipeline_after_failed_pipeline", case_pipeline_after_failed_pipeline, CASE_TIMEOUT),
    ("statement_cache_eviction", case_statement_cache_eviction, CASE_TIMEOUT),
    ("bulk_insert_psql", case_bulk_insert_psql, CASE_TIMEOUT),
    ("bulk_insert_psycopg", case_bulk_insert_psycopg, CASE_TIMEOUT),
    ("prepared_type_rolled_back", case_prepared_type_rolled_back, CASE_TIMEOUT),
    ("empty_search_path", case_empty_search_path, CASE_TIMEOUT),
]


if __name__ == "__main__":
    sys.exit(main("transaction_regressions_test", CASES))
