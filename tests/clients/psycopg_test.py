#!/usr/bin/python3
"""psycopg 3 through pgstash (session pooling).

Run with Debian's /usr/bin/python3 (python3-psycopg). For each of postgres (trust) and
pgstash_scram / pgstash_md5 / pgstash_clear (whose server authentication pgstash does with the
userlist secrets): server-side parameters, explicit prepared statements, executemany, COPY FROM
STDIN and COPY TO STDOUT through the copy API, an error (division by zero, SQLSTATE 22012) after
which the connection works again after a rollback, commit and rollback, pipeline mode.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from decimal import Decimal

import psycopg
import psycopg.errors

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("PGSTASH_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
INSTANCE = os.path.join(SOURCE_DIR, "tests", "lib", "pgstash_instance.sh")

USERS = [
    ("postgres", None),
    ("pgstash_scram", "scram-secret-1"),
    ("pgstash_md5", "md5-secret-1"),
    ("pgstash_clear", "clear-secret-1"),
]

checks = 0


class Failure(Exception):
    pass


def ok(msg):
    global checks
    checks += 1
    print(f"ok - {msg}", flush=True)


def expect(cond, msg):
    if not cond:
        raise Failure(msg)


def connect(port, user, password, **kw):
    params = dict(host="127.0.0.1", port=port, dbname="pgstash_test", user=user,
                  connect_timeout=10, application_name="psycopg_test")
    if password is not None:
        params["password"] = password
    params.update(kw)
    return psycopg.connect(**params)


def check_user(port, user, password):
    table = f"psycopg_{user}_{os.getpid()}"
    tag = f"[{user}]"
    with connect(port, user, password) as conn:
        # --- identity
        row = conn.execute("select current_user, current_database()").fetchone()
        expect(row == (user, "pgstash_test"), f"{tag} current_user/current_database is {row}")
        ok(f"{tag} connected as {row[0]} to {row[1]}")

        # --- server-side parameters
        row = conn.execute("select %s::int + %s::int, %s::text || '!', %s::numeric * 2, %s::bool",
                           (40, 2, "héllo ✓", Decimal("1.25"), None)).fetchone()
        expect(row == (42, "héllo ✓!", Decimal("2.50"), None), f"{tag} parameters gave {row}")
        row = conn.execute("select %s::bytea, length(%s::text)",
                           (b"\x00\x01\xff", "x" * 100000)).fetchone()
        expect(row == (b"\x00\x01\xff", 100000), f"{tag} bytea/long text parameters gave {row[1]}")
        ok(f"{tag} server-side parameters (int, text, numeric, NULL, bytea, 100 kB text)")

        # --- explicitly prepared statement, run several times
        with conn.cursor() as cur:
            for i in range(5):
                cur.execute("select %s::int * 10", (i,), prepare=True)
                expect(cur.fetchone() == (i * 10,), f"{tag} prepared statement, run {i}")
        ok(f"{tag} prepared statement run 5 times")

        # --- DDL, executemany, transaction
        conn.execute(f"drop table if exists {table}")
        conn.execute(f"create table {table} (id int primary key, name text, amount numeric(12,2))")
        conn.commit()
        with conn.cursor() as cur:
            cur.executemany(f"insert into {table} values (%s, %s, %s)",
                            [(i, f"name-{i}", Decimal(i) / 4) for i in range(1, 201)])
        conn.commit()
        n, total = conn.execute(f"select count(*), sum(amount) from {table}").fetchone()
        expect((n, total) == (200, Decimal("5025.00")), f"{tag} executemany: count/sum {n}/{total}")
        ok(f"{tag} executemany inserted 200 rows")

        # --- COPY FROM STDIN
        rows = [(1000 + i, f"copy\t{i}\\ \"q\" ✓" if i % 3 else None, Decimal(i)) for i in range(500)]
        with conn.cursor() as cur:
            with cur.copy(f"copy {table} (id, name, amount) from stdin") as copy:
                for r in rows:
                    copy.write_row(r)
            expect(cur.rowcount == 500, f"{tag} COPY FROM STDIN rowcount {cur.rowcount}")
        conn.commit()
        n = conn.execute(f"select count(*) from {table} where id >= 1000").fetchone()[0]
        expect(n == 500, f"{tag} after COPY FROM STDIN: {n} rows")
        ok(f"{tag} COPY FROM STDIN of 500 rows")

        # --- COPY TO STDOUT
        got = []
        with conn.cursor() as cur:
            with cur.copy(f"copy (select id, name, amount from {table} where id >= 1000 order by id) "
                          "to stdout") as copy:
                copy.set_types(["int4", "text", "numeric"])
                for r in copy.rows():
                    got.append(r)
        expect(got == rows, f"{tag} COPY TO STDOUT gave back different rows")
        with conn.cursor() as cur:
            with cur.copy(f"copy (select * from {table} order by id) to stdout (format csv)") as copy:
                raw = b"".join(bytes(block) for block in copy)
        lines = raw.count(b"\n")
        expect(lines == 700, f"{tag} COPY TO STDOUT (csv) gave {lines} lines")
        ok(f"{tag} COPY TO STDOUT gives back the rows copied in (and 700 CSV lines)")

        # --- an error, then the connection is usable after a rollback
        try:
            conn.execute("select 1 / %s::int", (0,))
            raise Failure(f"{tag} division by zero did not raise")
        except psycopg.errors.DivisionByZero as e:
            expect(e.sqlstate == "22012", f"{tag} SQLSTATE {e.sqlstate}, expected 22012")
            expect("division by zero" in str(e), f"{tag} error text: {e}")
        try:
            conn.execute("select 1")
            raise Failure(f"{tag} statement in an aborted transaction did not raise")
        except psycopg.errors.InFailedSqlTransaction:
            pass
        conn.rollback()
        expect(conn.execute("select 'alive'").fetchone() == ("alive",), f"{tag} after rollback")
        try:
            conn.execute("select * from no_such_table_xyz")
            raise Failure(f"{tag} undefined table did not raise")
        except psycopg.errors.UndefinedTable as e:
            expect(e.sqlstate == "42P01", f"{tag} SQLSTATE {e.sqlstate}, expected 42P01")
        conn.rollback()
        ok(f"{tag} DivisionByZero (22012), InFailedSqlTransaction, UndefinedTable (42P01); usable after rollback")

        # --- commit and rollback, seen from a second connection
        conn.execute(f"insert into {table} values (-1, 'rolled back', 0)")
        conn.rollback()
        conn.execute(f"insert into {table} values (-2, 'committed', 0)")
        with connect(port, user, password) as other:
            n = other.execute(f"select count(*) from {table} where id < 0").fetchone()[0]
            expect(n == 0, f"{tag} uncommitted row visible to another connection")
            conn.commit()
            other.rollback()  # new snapshot (psycopg opened a transaction for the select)
            got = other.execute(f"select id from {table} where id < 0 order by id").fetchall()
            expect(got == [(-2,)], f"{tag} after commit another connection sees {got}")
        with conn.transaction():
            conn.execute(f"update {table} set name = 'inner' where id = -2")
            try:
                with conn.transaction():  # savepoint
                    conn.execute(f"update {table} set name = 'to be undone' where id = -2")
                    conn.execute("select 1/0")
            except psycopg.errors.DivisionByZero:
                pass
        name = conn.execute(f"select name from {table} where id = -2").fetchone()[0]
        expect(name == "inner", f"{tag} savepoint rollback: name is {name!r}")
        conn.commit()
        ok(f"{tag} rollback discards, commit is visible to another connection, savepoint rollback")

        # --- pipeline mode (several extended-protocol queries before one Sync)
        with conn.pipeline():
            curs = [conn.execute("select %s::int + 1", (i,)) for i in range(20)]
        expect([c.fetchone()[0] for c in curs] == list(range(1, 21)), f"{tag} pipeline results")
        conn.commit()
        ok(f"{tag} pipeline of 20 queries")

        # --- autocommit and session state
        conn.autocommit = True
        conn.execute("set application_name = 'psycopg_test_changed'")
        got = conn.execute("show application_name").fetchone()[0]
        expect(got == "psycopg_test_changed", f"{tag} SET in autocommit: {got}")
        conn.execute(f"drop table {table}")
        ok(f"{tag} autocommit, SET/SHOW, drop table")


def main():
    cluster = os.environ.get("PGSTASH_TEST_CLUSTER_DIR")
    if not cluster:
        print("FAIL: run through ctest (PGSTASH_TEST_CLUSTER_DIR is not set)", file=sys.stderr)
        return 1
    print(f"psycopg {psycopg.__version__}, libpq {psycopg.pq.version()}", flush=True)
    work = tempfile.mkdtemp(prefix="pgstash-psycopg-test.")
    rc = 0
    try:
        out = subprocess.run([INSTANCE, "start", work], check=True, stdout=subprocess.PIPE,
                             text=True).stdout
        port, pid = out.split()
        print(f"pgstash listening on 127.0.0.1:{port} (pid {pid})", flush=True)
        for user, password in USERS:
            check_user(int(port), user, password)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        rc = 1
    except Exception:  # noqa: BLE001 - any unexpected error fails the test with its traceback
        traceback.print_exc()
        print("FAIL: unexpected exception", file=sys.stderr)
        rc = 1
    finally:
        env = dict(os.environ, PGSTASH_KEEP_LOG="1") if rc else None  # on failure, show the log
        if subprocess.run([INSTANCE, "stop", work], env=env).returncode != 0:
            rc = 1
    if rc == 0:
        shutil.rmtree(work, ignore_errors=True)
        print(f"psycopg_test: all {checks} checks passed")
    else:
        print(f"psycopg_test: FAILED; files kept in {work}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
