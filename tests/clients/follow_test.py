#!/usr/bin/python3
"""Writes that bypass pgstash (made on the server's own port), caught from PostgreSQL's logical
replication stream (invalidation.replication = true), seen from psycopg through pgstash.

  direct_writes_<mode>
      UPDATE, INSERT, DELETE, TRUNCATE, a write made by a trigger, and DDL (CREATE OR REPLACE
      VIEW) made directly on PostgreSQL: the next reads through pgstash see each within the bound
      (the lag of each is printed), although the read was being answered from the cache.
  direct_write_unseen_without_stream
      the same UPDATE with the stream off stays unseen (the cache answers the old row until its
      TTL): the cases above can fail.
  no_hits_while_down
      with the stream broken and unable to come back (a transaction holding up the new slot),
      reads reach the server every time; once it is back, hits resume.
  stream_killed
      the replication connection terminated by the server: it comes back on its own, and a write
      made meanwhile is seen.
  server_restarted
      PostgreSQL restarted (a private cluster): a write made right after the restart is seen by
      the first read through pgstash.
  no_replication_privilege, wal_level_replica
      the stream cannot run: one clear log line, and the cache still serves (bounded by
      cache.default_ttl).

Arguments, if any, name the cases to run (all by default).
"""

import os
import subprocess
import sys
import time

import psycopg

from case_harness import CASE_TIMEOUT, SOURCE_DIR, Failure, admin, connect, expect, main, ok

DB = "pgstash_follow"
TRANSACTION = ['pool.mode = "transaction"', "pool.size = 4"]
SESSION = ['pool.mode = "session"', "pool.size = 8"]
# Generous for the sanitizer build on a loaded 2-core machine; bench/run measures the real lag.
SEEN_WITHIN = 5.0


def start_following(case, mode, *extra, cluster_dir=None, follow=True):
    path = os.path.join(case.root, f"{case.name}-cache-{len(case.instances) + 1}")
    lines = [*mode, "cache.enabled = true", f'cache.path = "{path}"', "cache.default_ttl = 0",
             f'invalidation.slot = "t_{case.name[:30]}"']
    if follow:
        lines.append("invalidation.replication = true")
    return case.start(*lines, *extra, cluster_dir=cluster_dir)


def ensure_database():
    with admin() as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (DB,)).fetchone():
            conn.execute(f"create database {DB}")


def server(sql, dbname=DB, cluster=None):
    """Runs `sql` on PostgreSQL directly: a write pgstash does not see pass."""
    if cluster:
        conn = psycopg.connect(host=cluster["PGSTASH_PG_SOCKET_DIR"],
                               port=cluster["PGSTASH_PG_PORT"], user="postgres", dbname=dbname,
                               autocommit=True, connect_timeout=10)
    else:
        conn = admin(dbname)
    with conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


def server_calls(fragment, cluster=None):
    """How often the server ran statements whose text contains `fragment` (every test cluster
    has pg_stat_statements in pgstash_test)."""
    rows = server("select coalesce(sum(calls), 0) from pg_stat_statements "
                  f"where query like '%{fragment}%' and query not like '%pg_stat_statements%'",
                  dbname="pgstash_test", cluster=cluster)
    return int(rows[0][0])


def read(conn, sql):
    return [tuple(r) for r in conn.execute(sql, prepare=False).fetchall()]


def cached(conn, sql, fragment, expected, cluster=None):
    """Warms `sql` and shows it is answered by pgstash: the server's count stays put."""
    for _ in range(6):
        read(conn, sql)
        time.sleep(0.05)
    before = server_calls(fragment, cluster)
    for _ in range(5):
        rows = read(conn, sql)
        expect(rows == expected, f"{sql!r} returned {rows}, expected {expected}")
    moved = server_calls(fragment, cluster) - before
    expect(moved == 0, f"{sql!r} reached the server {moved} times of 5 while warm")


def seen_within(conn, sql, expected, limit=SEEN_WITHIN):
    """Seconds until `sql` through pgstash returns `expected`; fails past `limit`."""
    start = time.monotonic()
    while True:
        rows = read(conn, sql)
        elapsed = time.monotonic() - start
        if rows == expected:
            return elapsed
        expect(elapsed < limit, f"{sql!r} still returned {rows} {limit} s after a direct write; "
                                f"expected {expected}")
        time.sleep(0.005)


def wait_for_walsender(slot_prefix, present=True, limit=10.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        rows = server("select count(*) from pg_replication_slots "
                      f"where slot_name like '{slot_prefix}%' and active", dbname="postgres")
        if (rows[0][0] > 0) == present:
            return
        time.sleep(0.05)
    raise Failure(f"the replication stream (slot {slot_prefix}*) is "
                  f"{'not back' if present else 'still there'} after {limit} s")


def direct_writes(case, mode):
    ensure_database()
    p = f"fw_{case.name}"
    server(f"""
        drop view if exists {p}_view; drop table if exists {p}_t, {p}_src, {p}_dst, {p}_base;
        create table {p}_t (id int primary key, v text);
        insert into {p}_t values (1, 'one'), (2, 'two'), (3, 'three');
        create table {p}_src (id int);
        create table {p}_dst (n int);
        insert into {p}_dst values (0);
        create or replace function {p}_count() returns trigger language plpgsql as
          $$ begin update {p}_dst set n = n + 1; return new; end $$;
        create trigger {p}_trg after insert on {p}_src for each row execute function {p}_count();
        create table {p}_base (id int, v text);
        insert into {p}_base values (1, 'a'), (2, 'b');
        create view {p}_view as select v from {p}_base where id = 1;
    """)
    inst = start_following(case, mode)
    lags = {}
    with connect(inst.port, dbname=DB) as conn:
        steps = [
            ("UPDATE", f"select v from {p}_t where id = 1", [("one",)],
             f"update {p}_t set v = 'uno' where id = 1", [("uno",)]),
            ("INSERT", f"select count(*) from {p}_t", [(3,)],
             f"insert into {p}_t values (4, 'four')", [(4,)]),
            ("DELETE", f"select v from {p}_t where id = 2", [("two",)],
             f"delete from {p}_t where id = 2", []),
            ("a trigger's write", f"select n from {p}_dst", [(0,)],
             f"insert into {p}_src values (1)", [(1,)]),
            ("TRUNCATE", f"select count(*) from {p}_t", None,
             f"truncate {p}_t", [(0,)]),
            ("DDL (CREATE OR REPLACE VIEW)", f"select v from {p}_view", [("a",)],
             f"create or replace view {p}_view as select v from {p}_base where id = 2", [("b",)]),
        ]
        for what, sql, before, write, after in steps:
            if before is None:
                before = read(conn, sql)
            cached(conn, sql, sql.split(" from ")[1].split()[0], before)
            server(write)
            lags[what] = seen_within(conn, sql, after)
            ok(f"{what} made on the server is seen through pgstash after "
               f"{lags[what] * 1000:.0f} ms ({mode[0]})")
        # Nothing left stale: every read agrees with the server.
        for _, sql, _, _, _ in steps:
            expect(read(conn, sql) == [tuple(r) for r in server(sql)],
                   f"{sql!r} disagrees with the server")
    return lags


def case_direct_writes_transaction(case):
    direct_writes(case, TRANSACTION)


def case_direct_writes_session(case):
    direct_writes(case, SESSION)


def case_direct_write_unseen_without_stream(case):
    ensure_database()
    t = f"fw_{case.name}"
    server(f"drop table if exists {t}; create table {t} (id int primary key, v text);"
           f"insert into {t} values (1, 'one')")
    inst = start_following(case, TRANSACTION, follow=False)
    sql = f"select v from {t} where id = 1"
    with connect(inst.port, dbname=DB) as conn:
        cached(conn, sql, t, [("one",)])
        server(f"update {t} set v = 'uno' where id = 1")
        time.sleep(1.0)
        rows = read(conn, sql)
        expect(rows == [("one",)], f"without the stream, the cache saw a direct write: {rows}")
    ok("without the stream a direct write goes unseen (so the cases above can fail)")


def case_no_hits_while_down(case):
    ensure_database()
    t = f"fw_{case.name}"
    server(f"drop table if exists {t}; create table {t} (id int primary key, v text);"
           f"insert into {t} values (1, 'one')")
    slot = f"t_{case.name[:30]}"
    inst = start_following(case, TRANSACTION)
    sql = f"select v from {t} where id = 1"
    with connect(inst.port, dbname=DB) as conn:
        cached(conn, sql, t, [("one",)])
        # A transaction that has written holds up the creation of a new slot until it ends.
        holder = admin(DB)
        holder.autocommit = False
        try:
            holder.execute(f"insert into {t} values (99, 'held')")
            server("select pg_terminate_backend(active_pid) from pg_replication_slots "
                   f"where slot_name like '{slot}%'", dbname="postgres")
            wait_for_walsender(slot, present=False)
            time.sleep(0.3)
            before = server_calls(t)
            for _ in range(5):
                expect(read(conn, sql) == [("one",)], "a read while the stream is down was wrong")
            moved = server_calls(t) - before
            expect(moved == 5, f"while the stream was down {5 - moved} of 5 reads were hits")
            ok("while the stream is down, every read goes to the server")
        finally:
            holder.rollback()
            holder.close()
        wait_for_walsender(slot)
        cached(conn, sql, t, [("one",)])
        ok("once the stream is back, reads are answered from the cache again")


def case_stream_killed(case):
    ensure_database()
    t = f"fw_{case.name}"
    server(f"drop table if exists {t}; create table {t} (id int primary key, v text);"
           f"insert into {t} values (1, 'one')")
    slot = f"t_{case.name[:30]}"
    inst = start_following(case, TRANSACTION)
    sql = f"select v from {t} where id = 1"
    with connect(inst.port, dbname=DB) as conn:
        cached(conn, sql, t, [("one",)])
        wait_for_walsender(slot)
        server("select pg_terminate_backend(active_pid) from pg_replication_slots "
               f"where slot_name like '{slot}%'", dbname="postgres")
        server(f"update {t} set v = 'uno' where id = 1")
        seen_within(conn, sql, [("uno",)])
        wait_for_walsender(slot)
        cached(conn, sql, t, [("uno",)])
        server(f"update {t} set v = 'eins' where id = 1")
        seen_within(conn, sql, [("eins",)])
    expect("is down" in open(os.path.join(inst.work, "pgstash.log")).read(),
           "the stream's outage was not logged")
    ok("a terminated stream comes back on its own; writes made meanwhile and after are seen")


def case_server_restarted(case):
    cluster_dir, cluster = case.private_cluster()
    t = "fw_restart"
    server(f"create database {DB}", dbname="postgres", cluster=cluster)
    server(f"create table {t} (id int primary key, v text); insert into {t} values (1, 'one')",
           cluster=cluster)
    inst = start_following(case, TRANSACTION, cluster_dir=cluster_dir)
    sql = f"select v from {t} where id = 1"
    with connect(inst.port, dbname=DB) as conn:
        for _ in range(8):
            expect(read(conn, sql) == [("one",)], "warm-up read was wrong")
            time.sleep(0.05)
    subprocess.run([os.path.join(SOURCE_DIR, "scripts", "pg_test_cluster.sh"), "restart",
                    cluster_dir], check=True, stdout=subprocess.DEVNULL)
    server(f"update {t} set v = 'uno' where id = 1", cluster=cluster)
    deadline = time.monotonic() + 20
    while True:
        try:
            with connect(inst.port, dbname=DB) as conn:
                rows = read(conn, sql)
            break
        except psycopg.Error:
            # The pool's connections died with the server; a new one may take a moment.
            expect(time.monotonic() < deadline, "pgstash did not serve again after the restart")
            time.sleep(0.1)
    expect(rows == [("uno",)], f"the first read after a restart and a direct write returned {rows}")
    ok("after a PostgreSQL restart, a direct write is seen by the first read")


def unavailable(inst, conn, sql, t, expected, cause, cluster=None):
    cached(conn, sql, t, expected, cluster)
    log = open(os.path.join(inst.work, "pgstash.log")).read()
    expect("cannot be followed" in log and cause in log,
           f"no log line saying why the stream cannot run ({cause!r}): {log[-800:]}")
    ok(f"without the stream ({cause}) the cache serves, bounded by its TTL, and says why")


def case_no_replication_privilege(case):
    ensure_database()
    t = f"fw_{case.name}"
    server("do $$ begin if not exists (select from pg_roles where rolname = 'follow_norepl') then "
           "create role follow_norepl login noreplication; end if; end $$", dbname="postgres")
    server(f"drop table if exists {t}; create table {t} (id int primary key, v text);"
           f"insert into {t} values (1, 'one'); grant select on {t} to follow_norepl")
    inst = start_following(case, TRANSACTION)
    sql = f"select v from {t} where id = 1"
    with connect(inst.port, dbname=DB, user="follow_norepl") as conn:
        unavailable(inst, conn, sql, t, [("one",)], "replication role")


def case_wal_level_replica(case):
    cluster_dir, cluster = case.private_cluster("wal_level = replica")
    t = "fw_replica"
    server(f"create database {DB}", dbname="postgres", cluster=cluster)
    server(f"create table {t} (id int primary key, v text); insert into {t} values (1, 'one')",
           cluster=cluster)
    inst = start_following(case, TRANSACTION, cluster_dir=cluster_dir)
    sql = f"select v from {t} where id = 1"
    with connect(inst.port, dbname=DB) as conn:
        unavailable(inst, conn, sql, t, [("one",)], "wal_level", cluster)


CASES = [
    ("direct_writes_transaction", case_direct_writes_transaction, 60),
    ("direct_writes_session", case_direct_writes_session, 60),
    ("direct_write_unseen_without_stream", case_direct_write_unseen_without_stream, CASE_TIMEOUT),
    ("no_hits_while_down", case_no_hits_while_down, 60),
    ("stream_killed", case_stream_killed, 60),
    ("server_restarted", case_server_restarted, 90),
    ("no_replication_privilege", case_no_replication_privilege, CASE_TIMEOUT),
    ("wal_level_replica", case_wal_level_replica, 60),
]

if __name__ == "__main__":
    sys.exit(main("follow", CASES))
