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
      made while it was gone (in no stream: the reconnection must invalidate the database) is
      seen by the first read after.
  server_restarted
      PostgreSQL restarted (a private cluster): a write made right after the restart is seen by
      the first read through pgstash.
  server_restarted_under_load, server_restarted_under_load_persistent
      the same three times under reads and writes through pgstash and on the server directly,
      with a temporary and with a persistent slot (taken up again, replayed): no read returns a
      row older than a write acknowledged before it was sent (direct writes: more than LAG_BOUND
      before), and the cache answers again after each restart.
  strict_read_your_writes
      cache.consistency = "strict": a read sent right after a direct write's acknowledgement
      returns the new row every time, whether the writer waited for the WAL flush
      (synchronous_commit = on) or not (off, as the test cluster runs); and the cache still
      answers the reads that follow. The same traffic through a pgstash in the default mode gets
      stale rows (so the case can fail). A transaction left open after writing (its WAL out of
      the stream's reach until flushed) does not stop the hits; the admin port counts the polls
      and flushes.
  strict_needs_ddl_trigger
      a stream that cannot install the DDL event trigger (a REPLICATION role, no superuser):
      strict mode serves nothing, and the log says why.
  unlogged_not_cached
      an UNLOGGED table's writes are in no stream: its reads are never answered from the cache.
  persistent_restart
      invalidation.persistent_slot = true: pgstash stopped, a direct write made while it is
      down, pgstash started again on the same cache: the write is seen, and a result it did not
      touch is answered from the cache without reaching the server. DDL made while it is down is
      seen, also with the DDL event trigger dropped meanwhile. With the slot dropped while
      pgstash was down (nothing proves the kept results), the kept result is not served.
  persistent_stream_killed
      the same while pgstash runs: the replication connection terminated, a direct write made
      while it is down; once the slot is taken up again the write is seen and the other result
      is still answered from the cache.
  abandoned_slot
      a test_decoding slot nothing consumes (a gone instance's persistent slot) is reported in
      the log; GET /api/slots lists it and this instance's own; DELETE /api/slots/<name> drops
      it, refuses a slot in use, and says 404 for a missing one.
  persistent_kill9, persistent_kill9_strict
      pgstash killed with SIGKILL at random moments under reads and writes (through pgstash, and
      directly on the server, which go on while it is down), then started again on the same
      cache: no read returns a row older than a write acknowledged before it was sent (direct
      writes in the default mode: more than LAG_BOUND before), and a read-only table's cached
      result is served again after every restart.
  no_replication_privilege, wal_level_replica
      the stream cannot run: one clear log line; the cache still serves, bounded by
      cache.default_ttl, and serves nothing when default_ttl = 0 would not bound it.

Arguments, if any, name the cases to run (all by default).
"""

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import psycopg

from case_harness import CASE_TIMEOUT, SOURCE_DIR, admin, connect, expect, main, ok

DB = "pgstash_follow"
TRANSACTION = ['pool.mode = "transaction"', "pool.size = 4"]
SESSION = ['pool.mode = "session"', "pool.size = 8"]
# Generous for the sanitizer build on a loaded 2-core machine; bench/run measures the real lag.
SEEN_WITHIN = 5.0


def start_following(case, mode, cluster_dir=None, follow=True, ttl=0, user="postgres",
                    extra=(), path=None):
    """A pgstash with the cache on (its cache directory: `path`, or one of its own); its stream
    of DB starts with the first client there (this function's, as `user`: the stream logs in as
    the first client)."""
    path = path or os.path.join(case.root, f"{case.name}-cache-{len(case.instances) + 1}")
    lines = [*mode, "cache.enabled = true", f'cache.path = "{path}"', f"cache.default_ttl = {ttl}",
             f'invalidation.slot = "t_{case.name[:30]}"']
    if follow:
        lines.append("invalidation.replication = true")
    inst = case.start(*lines, *extra, cluster_dir=cluster_dir)
    first_read(inst.port, "select 1", user=user)
    return inst


def log_of(inst):
    with open(os.path.join(inst.work, "pgstash.log")) as f:
        return f.read()


def wait_for_log(inst, text, count=1, limit=20.0):
    """Waits until pgstash's log says `text` `count` times (the stream's state changes are
    logged): the state a case needs before it goes on."""
    deadline = time.monotonic() + limit
    while log_of(inst).count(text) < count:
        expect(time.monotonic() < deadline,
               f"pgstash's log did not say {text!r} {count} time(s) within {limit} s: "
               f"{log_of(inst)[-800:]}")
        time.sleep(0.02)


FOLLOWING = "cache invalidation: following database"


def first_read(port, sql, limit=20.0, user="postgres"):
    """The rows of `sql` from a new connection, retried while pgstash cannot reach the server."""
    deadline = time.monotonic() + limit
    while True:
        try:
            with connect(port, dbname=DB, user=user) as conn:
                return read(conn, sql)
        except psycopg.Error:
            expect(time.monotonic() < deadline, f"pgstash did not answer {sql!r} within {limit} s")
            time.sleep(0.1)


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


def server_reads(conn, sql, fragment, expected, cluster=None, warm=True):
    """Reads `sql` through pgstash 5 times (after a warm-up, unless `warm` is false), each
    expected to return `expected`; how many of them reached the server."""
    if warm:
        for _ in range(6):
            read(conn, sql)
            time.sleep(0.05)
    before = server_calls(fragment, cluster)
    for _ in range(5):
        rows = read(conn, sql)
        expect(rows == expected, f"{sql!r} returned {rows}, expected {expected}")
    return server_calls(fragment, cluster) - before


def cached(conn, sql, fragment, expected, cluster=None, rounds=4):
    """Warms `sql` and shows it is answered by pgstash: the server's count stays put. DDL of
    other tests in the same database invalidates all of it (the stream carries it), so a round
    may miss: the first of `rounds` that does not shows it."""
    for _ in range(rounds):
        moved = server_reads(conn, sql, fragment, expected, cluster)
        if moved == 0:
            return
    expect(moved == 0, f"{sql!r} reached the server {moved} times of 5 while warm, "
                       f"in each of {rounds} rounds")


def one_row_table(t, kind="table", cluster=None):
    """A table `t` (id, v) holding (1, 'one'); the query that reads it."""
    server(f"drop table if exists {t}; create {kind} {t} (id int primary key, v text);"
           f"insert into {t} values (1, 'one')", cluster=cluster)
    return f"select v from {t} where id = 1"


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


def kill_stream(case):
    server("select pg_terminate_backend(active_pid) from pg_replication_slots "
           f"where slot_name like 't\\_{case.name[:30]}%'", dbname="postgres")


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
    wait_for_log(inst, FOLLOWING)
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
    sql = one_row_table(t)
    inst = start_following(case, TRANSACTION, follow=False)
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
    sql = one_row_table(t)
    inst = start_following(case, TRANSACTION)
    wait_for_log(inst, FOLLOWING)
    with connect(inst.port, dbname=DB) as conn:
        cached(conn, sql, t, [("one",)])
        # A transaction that has written holds up the creation of a new slot until it ends.
        holder = admin(DB)
        holder.autocommit = False
        try:
            holder.execute(f"insert into {t} values (99, 'held')")
            kill_stream(case)
            wait_for_log(inst, "is down")
            moved = server_reads(conn, sql, t, [("one",)], warm=False)
            expect(moved == 5, f"while the stream was down {5 - moved} of 5 reads were hits")
            ok("while the stream is down, every read goes to the server")
        finally:
            holder.rollback()
            holder.close()
        wait_for_log(inst, FOLLOWING, 2)
        cached(conn, sql, t, [("one",)])
        ok("once the stream is back, reads are answered from the cache again")


def case_stream_killed(case):
    """What is committed between the stream's end and the new slot is in no stream: the
    reconnection must invalidate the database. No read touches the entry meanwhile."""
    ensure_database()
    t = f"fw_{case.name}"
    sql = one_row_table(t)
    inst = start_following(case, TRANSACTION)
    wait_for_log(inst, FOLLOWING)
    with connect(inst.port, dbname=DB) as conn:
        cached(conn, sql, t, [("one",)])
        kill_stream(case)
        server(f"update {t} set v = 'uno' where id = 1")
        wait_for_log(inst, FOLLOWING, 2)
        rows = read(conn, sql)
        expect(rows == [("uno",)], f"the first read after the stream came back returned {rows}")
        cached(conn, sql, t, [("uno",)])
        server(f"update {t} set v = 'eins' where id = 1")
        seen_within(conn, sql, [("eins",)])
    expect("is down" in log_of(inst), "the stream's outage was not logged")
    ok("a terminated stream comes back on its own; a write made while it was gone and one made "
       "after are seen")


def case_server_restarted(case):
    cluster_dir, cluster = case.private_cluster()
    t = "fw_restart"
    server(f"create database {DB}", dbname="postgres", cluster=cluster)
    sql = one_row_table(t, cluster=cluster)
    inst = start_following(case, TRANSACTION, cluster_dir=cluster_dir)
    wait_for_log(inst, FOLLOWING)
    with connect(inst.port, dbname=DB) as conn:
        cached(conn, sql, t, [("one",)], cluster)
    subprocess.run([os.path.join(SOURCE_DIR, "scripts", "pg_test_cluster.sh"), "restart",
                    cluster_dir], check=True, stdout=subprocess.DEVNULL)
    server(f"update {t} set v = 'uno' where id = 1", cluster=cluster)
    wait_for_log(inst, FOLLOWING, 2)
    rows = first_read(inst.port, sql)
    expect(rows == [("uno",)], f"the first read after a restart and a direct write returned {rows}")
    ok("after a PostgreSQL restart, a direct write is seen by the first read")


def read_after_writes(conn, t, sql, synchronous_commit, writes=15):
    """Each write made directly, then read through pgstash at once; how many of those reads
    were stale. Every value is then read until seen and once more (a hit again)."""
    stale = 0
    with admin(DB) as writer:
        writer.execute(f"set synchronous_commit = {synchronous_commit}")
        for i in range(writes):
            value = f"{synchronous_commit}-{i}"
            writer.execute(f"update {t} set v = %s where id = 1", (value,))
            if read(conn, sql) != [(value,)]:
                stale += 1
            seen_within(conn, sql, [(value,)])
            read(conn, sql)
    return stale


ADMIN_TOKEN = "follow-token"


def admin_port_lines():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port, [f"admin.port = {port}", f'admin.token = "{ADMIN_TOKEN}"']


def cache_stats(admin_port):
    """GET /api/cache from pgstash's admin port."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    conn.request("GET", "/api/cache", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    body = conn.getresponse().read()
    conn.close()
    return json.loads(body)


def stream_stats(admin_port):
    streams = [s for s in cache_stats(admin_port)["streams"] if s["database"] == DB]
    expect(len(streams) == 1, f"the admin port shows no stream of {DB}")
    return streams[0]


def case_strict_read_your_writes(case):
    ensure_database()
    t = f"fw_{case.name}"
    sql = one_row_table(t)
    admin_port, admin_lines = admin_port_lines()
    strict = start_following(case, TRANSACTION,
                             extra=['cache.consistency = "strict"', *admin_lines])
    wait_for_log(strict, FOLLOWING)
    with connect(strict.port, dbname=DB) as conn:
        cached(conn, sql, t, [("one",)])
        ok("in strict mode repeated reads are still answered from the cache")
        for synchronous_commit in ["on", "off"]:
            stale = read_after_writes(conn, t, sql, synchronous_commit)
            expect(stale == 0, f"strict mode returned {stale} stale rows of 15 right after a "
                               f"direct write (synchronous_commit = {synchronous_commit})")
            ok(f"strict: 0 of 15 reads right after a direct write were stale "
               f"(synchronous_commit = {synchronous_commit})")
        cached(conn, sql, t, [("off-14",)])
        # A transaction left open after writing keeps its WAL unflushed, out of the stream's
        # reach: pgstash makes the server flush it, and the reads stay hits.
        holder = admin(DB)
        holder.autocommit = False
        try:
            holder.execute(f"insert into {t} values (2, 'held')")
            cached(conn, sql, t, [("off-14",)])
        finally:
            holder.rollback()
            holder.close()
        ok("strict: with a writing transaction left open, reads are still answered from the cache")
        stream = stream_stats(admin_port)
        expect(stream["strict_polls"] > 0 and stream["strict_flushes"] > 0,
               f"the admin port does not count strict polls and flushes: {stream}")
        ok(f"the admin port counts {stream['strict_polls']} polls and {stream['strict_flushes']} "
           "flushes")
    server(f"update {t} set v = 'one' where id = 1")
    default = start_following(case, TRANSACTION, extra=['invalidation.slot = "t_default_mode"'])
    wait_for_log(default, FOLLOWING)
    with connect(default.port, dbname=DB) as conn:
        cached(conn, sql, t, [("one",)])
        stale = read_after_writes(conn, t, sql, "off")
        expect(stale > 0, "the default mode returned no stale row right after direct writes: "
                          "this case cannot tell strict mode from it")
        ok(f"default mode: {stale} of 15 reads right after a direct write were stale")


def case_strict_needs_ddl_trigger(case):
    """A stream that cannot install the DDL event trigger (no superuser) would miss DDL made
    elsewhere: strict mode then serves nothing, and says why."""
    ensure_database()
    t = f"fw_{case.name}"
    server("do $$ begin if not exists (select from pg_roles where rolname = 'follow_repl') then "
           "create role follow_repl login replication; end if; end $$", dbname="postgres")
    sql = one_row_table(t)
    server(f"grant select on {t} to follow_repl")
    # The superuser streams of the other cases install it again.
    server("drop event trigger if exists pgstash_ddl")
    admin_port, admin_lines = admin_port_lines()
    inst = start_following(case, TRANSACTION, user="follow_repl",
                           extra=['cache.consistency = "strict"', *admin_lines])
    wait_for_log(inst, "strict consistency needs event trigger pgstash_ddl")
    with connect(inst.port, dbname=DB, user="follow_repl") as conn:
        moved = server_reads(conn, sql, t, [("one",)])
        expect(moved == 5, f"strict mode without the DDL trigger served {5 - moved} of 5 reads")
    ok("strict mode without the DDL event trigger serves no hits, and its log says why")


PERSISTENT = ["invalidation.persistent_slot = true"]
REPLAYED = "replayed what was written while it was not followed"


def drop_slots(case):
    """Persistent slots outlive pgstash: the case drops its own, at its start (an earlier run's)
    and end, ending the stream of any pgstash still on one."""
    slots = f"from pg_replication_slots where slot_name like 't\\_{case.name[:30]}%'"
    deadline = time.monotonic() + 10
    while server(f"select count(*) {slots}", dbname="postgres")[0][0]:
        server(f"select pg_terminate_backend(active_pid) {slots} and active", dbname="postgres")
        server(f"select pg_drop_replication_slot(slot_name) {slots} and not active",
               dbname="postgres")
        expect(time.monotonic() < deadline, "the case's replication slots could not be dropped")
        time.sleep(0.1)


def stop(inst):
    expect(inst.stop(show_log=False), f"pgstash (pid {inst.pid}) reported a sanitizer error")


def start_persistent(case, path):
    """A pgstash with a persistent slot on the cache directory `path`, its admin port, and when
    it was started."""
    admin_port, lines = admin_port_lines()
    started = time.monotonic()
    inst = start_following(case, TRANSACTION, extra=[*PERSISTENT, *lines], path=path)
    return inst, admin_port, started


def entry_of(admin_port, sql):
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    conn.request("GET", "/api/cache/entries", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    entries = json.loads(conn.getresponse().read())["entries"]
    conn.close()
    return next((e for e in entries if e["statement"] == sql), None)


def served_entry_kept(conn, admin_port, started, sql, expected):
    """Reads `sql` through pgstash until its cache entry has been served (a new process learns
    the catalog first: until then reads pass through uncached); whether that entry is older than
    the process, i.e. kept from an earlier run."""
    deadline = time.monotonic() + 10
    while True:
        rows = read(conn, sql)
        expect(rows == expected, f"{sql!r} returned {rows}, expected {expected}")
        entry = entry_of(admin_port, sql)
        if entry and entry["hits"] > 0:
            return entry["age_seconds"] > time.monotonic() - started
        expect(time.monotonic() < deadline, f"{sql!r} was not answered from the cache in 10 s")
        time.sleep(0.02)


def case_persistent_restart(case):
    ensure_database()
    drop_slots(case)
    case.cleanups.append(lambda: drop_slots(case))
    kept, changed = f"fw_{case.name}_kept", f"fw_{case.name}_changed"
    view = f"fw_{case.name}_view"
    server(f"drop view if exists {view}")
    kept_sql, changed_sql = one_row_table(kept), one_row_table(changed)
    server(f"create view {view} as select v from {kept} where id = 1")
    view_sql = f"select v from {view}"
    path = os.path.join(case.root, f"{case.name}-cache")
    inst, _, _ = start_persistent(case, path)
    wait_for_log(inst, FOLLOWING)
    with connect(inst.port, dbname=DB) as conn:
        cached(conn, kept_sql, kept, [("one",)])
        cached(conn, changed_sql, changed, [("one",)])
    stop(inst)
    server(f"update {changed} set v = 'uno' where id = 1")

    inst, admin_port, started = start_persistent(case, path)
    wait_for_log(inst, REPLAYED)
    expect("kept 2 entries of the earlier run" in log_of(inst),
           f"pgstash did not keep the two entries: {log_of(inst)[-600:]}")
    with connect(inst.port, dbname=DB) as conn:
        # Until a hit: the entry kept of the row written while pgstash was down must not be one.
        cached(conn, changed_sql, changed, [("uno",)])
        expect(served_entry_kept(conn, admin_port, started, kept_sql, [("one",)]),
               "the result not written to was stored again rather than served from the entry kept")
        cached(conn, kept_sql, kept, [("one",)])
        cached(conn, view_sql, view, [("one",)])
    ok("after a restart, a write made while pgstash was down is seen and the result it did not "
       "touch is served from the entry kept")

    stop(inst)
    server(f"create or replace view {view} as select 'changed'::text as v")
    after_ddl = server("select pg_current_wal_lsn()::text")[0][0]
    inst, _, _ = start_persistent(case, path)
    wait_for_log(inst, REPLAYED)
    with connect(inst.port, dbname=DB) as conn:
        cached(conn, view_sql, view, [("changed",)])
    ok("DDL made while pgstash was down (CREATE OR REPLACE VIEW) is seen after the restart")
    # Once the slot is confirmed past that DDL, the next restart does not replay it (which would
    # invalidate the database, and hide what the next step shows).
    deadline = time.monotonic() + 10
    while not server(f"select bool_and(confirmed_flush_lsn >= '{after_ddl}'::pg_lsn) "
                     f"from pg_replication_slots where slot_name like 't\\_{case.name[:30]}%'",
                     dbname="postgres")[0][0]:
        expect(time.monotonic() < deadline, "the slot was not confirmed past the DDL in 10 s")
        time.sleep(0.1)

    # DDL with the event trigger gone leaves no message. A trigger made again before the restart
    # (as another pgstash on the database would) is not the one that was there: nothing proves
    # the kept results.
    stop(inst)
    server("drop event trigger pgstash_ddl")
    server(f"create or replace view {view} as select 'unseen'::text as v")
    server("create event trigger pgstash_ddl on ddl_command_end "
           "execute function public.pgstash_ddl_message(); "
           "alter event trigger pgstash_ddl enable always")
    inst, _, _ = start_persistent(case, path)
    wait_for_log(inst, REPLAYED)
    with connect(inst.port, dbname=DB) as conn:
        cached(conn, view_sql, view, [("unseen",)])
    ok("DDL made while the event trigger was gone is not taken as seen")

    stop(inst)
    drop_slots(case)
    inst, admin_port, started = start_persistent(case, path)
    wait_for_log(inst, FOLLOWING)
    with connect(inst.port, dbname=DB) as conn:
        expect(not served_entry_kept(conn, admin_port, started, kept_sql, [("one",)]),
               "with the slot gone (nothing proves it), the entry kept was served")
    stop(inst)
    ok("with the slot dropped while pgstash was down, the kept results are not served")


def case_persistent_stream_killed(case):
    """A persistent slot is taken up where it stands after the stream broke: what was written
    meanwhile is invalidated, the rest stays cached."""
    ensure_database()
    drop_slots(case)
    case.cleanups.append(lambda: drop_slots(case))
    kept, changed = f"fw_{case.name[:20]}_kept", f"fw_{case.name[:20]}_changed"
    kept_sql, changed_sql = one_row_table(kept), one_row_table(changed)
    inst, _, _ = start_persistent(case, os.path.join(case.root, f"{case.name}-cache"))
    wait_for_log(inst, FOLLOWING)
    with connect(inst.port, dbname=DB) as conn:
        cached(conn, kept_sql, kept, [("one",)])
        cached(conn, changed_sql, changed, [("one",)])
        kill_stream(case)
        wait_for_log(inst, "is down")
        server(f"update {changed} set v = 'uno' where id = 1")
        wait_for_log(inst, REPLAYED)
        rows = read(conn, changed_sql)
        expect(rows == [("uno",)], f"the first read after the stream came back returned {rows}")
        moved = server_reads(conn, kept_sql, kept, [("one",)], warm=False)
        expect(moved == 0, f"{moved} of 5 reads of a result nothing wrote to reached the server")
    ok("after the stream broke, a persistent slot is taken up where it stands: the write made "
       "meanwhile is seen, the other result stays cached")


def admin_call(admin_port, method, path):
    """(status, JSON body) of a request to pgstash's admin port."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    conn.request(method, path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    response = conn.getresponse()
    status, body = response.status, json.loads(response.read())
    conn.close()
    return status, body


def case_abandoned_slot(case):
    ensure_database()
    drop_slots(case)
    gone = f"x_{case.name}_gone"
    drop_gone = (f"select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                 f"where slot_name = '{gone}'")
    server(drop_gone)
    case.cleanups.append(lambda: server(drop_gone))
    case.cleanups.append(lambda: drop_slots(case))
    server(f"select pg_create_logical_replication_slot('{gone}', 'test_decoding')")
    inst, admin_port, _ = start_persistent(case, os.path.join(case.root, f"{case.name}-cache"))
    wait_for_log(inst, FOLLOWING)
    wait_for_log(inst, f"replication slot {gone} (database \"{DB}\") has no consumer")
    ok("a slot nothing consumes is reported in the log")

    status, body = admin_call(admin_port, "GET", "/api/slots")
    expect(status == 200, f"GET /api/slots: {status} {body}")
    slots = {s["name"]: s for s in body["slots"]}
    own = [s for s in slots.values() if s["this_instance"]]
    expect(gone in slots and not slots[gone]["active"] and not slots[gone]["this_instance"],
           f"GET /api/slots does not show {gone} as another's, unconsumed: {slots}")
    expect(len(own) == 1 and own[0]["active"] and not own[0]["temporary"],
           f"GET /api/slots does not show this instance's persistent slot in use: {own}")
    ok("GET /api/slots lists the abandoned slot and this instance's own")

    status, body = admin_call(admin_port, "DELETE", f"/api/slots/{own[0]['name']}")
    expect(status == 409, f"dropping the slot in use answered {status} {body}")
    status, body = admin_call(admin_port, "DELETE", f"/api/slots/{gone}")
    expect(status == 200 and body == {"dropped": gone}, f"DELETE answered {status} {body}")
    left = server(f"select count(*) from pg_replication_slots where slot_name = '{gone}'")
    expect(left == [(0,)], f"{gone} is still on the server")
    status, body = admin_call(admin_port, "DELETE", f"/api/slots/{gone}")
    expect(status == 404, f"dropping it again answered {status} {body}")
    ok("DELETE /api/slots/<name> drops a slot nothing consumes, refuses one in use (409), "
       "and says 404 for one that is not there")


LAG_BOUND = 2.0
KEYS = 16


class CheckedLoad:
    """Reads through pgstash of two tables, one written only directly on the server (also while
    pgstash is down), one written through pgstash; every read is checked against the writes
    acknowledged before it was sent: one through pgstash must be seen, a direct one once it is
    `direct_lag` s old (0 in strict mode)."""

    def __init__(self, case, direct_lag, cluster=None):
        self.tables = {d: f"fw_{case.name[:20]}_{'direct' if d else 'proxied'}" for d in (True,
                                                                                           False)}
        self.cluster = cluster
        for t in self.tables.values():
            server(f"drop table if exists {t}; create table {t} (id int primary key, v int);"
                   f"insert into {t} select g, 0 from generate_series(0, {KEYS - 1}) g",
                   cluster=cluster)
        self.direct_lag = direct_lag
        self.lock = threading.Lock()
        self.acks = {}
        self.stale, self.reads, self.writes = [], 0, 0
        self.rng = random.Random(int(os.environ.get("PGSTASH_TEST_SEED", "9")))
        self.threads = []
        self.stop_direct = threading.Event()
        self.spawn(self.write_loop, None, True, self.stop_direct)

    def spawn(self, target, *args):
        th = threading.Thread(target=target, args=args, daemon=True)
        th.start()
        self.threads.append(th)

    def direct_connection(self):
        if self.cluster:
            return psycopg.connect(host=self.cluster["PGSTASH_PG_SOCKET_DIR"],
                                   port=self.cluster["PGSTASH_PG_PORT"], user="postgres",
                                   dbname=DB, autocommit=True, connect_timeout=10)
        return admin(DB)

    def floor(self, row, sent):
        with self.lock:
            return max((v for v, at, direct in self.acks.get(row, [])
                        if at <= sent - (self.direct_lag if direct else 0)), default=0)

    def write_loop(self, port, direct, until):
        t, conn = self.tables[direct], None
        while not until.is_set():
            try:
                if conn is None:
                    conn = self.direct_connection() if direct else connect(port, dbname=DB)
                k = self.rng.randrange(KEYS)
                v = conn.execute(f"update {t} set v = v + 1 where id = %s returning v",
                                 (k,)).fetchone()[0]
                with self.lock:
                    self.acks.setdefault((t, k), []).append((v, time.monotonic(), direct))
                    self.writes += 1
            except psycopg.Error:
                conn = None
                time.sleep(0.05)

    def read_loop(self, port, until):
        conn = None
        while not until.is_set():
            try:
                if conn is None:
                    conn = connect(port, dbname=DB)
                t, k = self.rng.choice(list(self.tables.values())), self.rng.randrange(KEYS)
                sent = time.monotonic()
                floor = self.floor((t, k), sent)
                v = conn.execute(f"select v from {t} where id = {k}", prepare=False).fetchone()[0]
                with self.lock:
                    self.reads += 1
                    if v < floor:
                        self.stale.append((t, k, v, floor))
            except psycopg.Error:
                conn = None
                time.sleep(0.05)

    def readers(self, port, until, n=3):
        for _ in range(n):
            self.spawn(self.read_loop, port, until)

    def proxied_writer(self, port, until):
        self.spawn(self.write_loop, port, False, until)

    def finish(self, what):
        self.stop_direct.set()
        for th in self.threads:
            th.join(10)
        print(f"   {self.writes} writes, {self.reads} reads {what}, {len(self.stale)} stale",
              flush=True)
        expect(self.reads > 100 and self.writes > 100,
               f"too little load: {self.reads} reads, {self.writes} writes")
        expect(not self.stale,
               f"stale reads (table, row, value, acknowledged before): {self.stale[:5]}")


def kill9_under_load(case, extra, direct_lag):
    """Rounds of: start pgstash on the same cache (a persistent slot), the checked load (its
    write through pgstash from half a second in), SIGKILL at a random moment."""
    ensure_database()
    drop_slots(case)
    case.cleanups.append(lambda: drop_slots(case))
    ro_sql = one_row_table(f"fw_{case.name[:20]}_ro")
    ro = ro_sql.split(" from ")[1].split()[0]
    path = os.path.join(case.root, f"{case.name}-cache")
    load = CheckedLoad(case, direct_lag)
    rng = random.Random(int(os.environ.get("PGSTASH_TEST_SEED", "9")))
    try:
        for round_ in range(6):
            admin_port, lines = admin_port_lines()
            started = time.monotonic()
            inst = start_following(case, TRANSACTION, extra=[*PERSISTENT, *lines, *extra],
                                   path=path)
            if round_ > 0:
                wait_for_log(inst, REPLAYED)
                with connect(inst.port, dbname=DB) as conn:
                    expect(served_entry_kept(conn, admin_port, started, ro_sql, [("one",)]),
                           f"after kill -9 number {round_}, a result kept from before was stored "
                           "again rather than served")
            else:
                wait_for_log(inst, FOLLOWING)
            until = threading.Event()
            load.readers(inst.port, until)
            # The results kept are read for a while before the first write through this process,
            # which invalidates the whole database (the catalog has not told it yet what the
            # write touches).
            time.sleep(0.5)
            load.proxied_writer(inst.port, until)
            time.sleep(0.5)
            with connect(inst.port, dbname=DB) as conn:
                cached(conn, ro_sql, ro, [("one",)])
            # Past a checkpoint (every second) that holds the result cached just now.
            time.sleep(rng.uniform(1.2, 3.0))
            os.kill(inst.pid, signal.SIGKILL)
            inst.stopped = True
            time.sleep(rng.uniform(0.0, 0.5))  # direct writes go on while it is down
            until.set()
    finally:
        load.finish("through 6 kills")
    ok("kill -9 under load and a restart: no stale read, and kept results are served again")


def restarted_under_load(case, extra):
    """PostgreSQL (a private cluster) restarted three times under the checked load; after each
    restart, once the stream is back, a result nothing writes to is answered from the cache."""
    cluster_dir, cluster = case.private_cluster()
    server(f"create database {DB}", dbname="postgres", cluster=cluster)
    ro_sql = one_row_table(f"fw_{case.name[:20]}_ro", cluster=cluster)
    ro = ro_sql.split(" from ")[1].split()[0]
    inst = start_following(case, TRANSACTION, cluster_dir=cluster_dir, extra=extra,
                           path=os.path.join(case.root, f"{case.name}-cache"))
    wait_for_log(inst, FOLLOWING)
    load = CheckedLoad(case, LAG_BOUND, cluster)
    until = threading.Event()
    load.readers(inst.port, until)
    load.proxied_writer(inst.port, until)
    rng = random.Random(int(os.environ.get("PGSTASH_TEST_SEED", "9")))
    try:
        for restart in range(3):
            time.sleep(rng.uniform(1.0, 2.0))
            subprocess.run([os.path.join(SOURCE_DIR, "scripts", "pg_test_cluster.sh"), "restart",
                            cluster_dir], check=True, stdout=subprocess.DEVNULL)
            wait_for_log(inst, FOLLOWING, restart + 2)
            if extra:
                wait_for_log(inst, REPLAYED, restart + 1)
            # (With a temporary slot the catalog answers are dropped too: until they are back,
            # each write through pgstash invalidates the whole database.)
            deadline = time.monotonic() + 10
            with connect(inst.port, dbname=DB) as conn:
                while server_reads(conn, ro_sql, ro, [("one",)], cluster) > 0:
                    expect(time.monotonic() < deadline,
                           f"after restart {restart + 1} the cache did not answer {ro_sql!r}")
        time.sleep(1.0)
    finally:
        until.set()
        load.finish("through 3 restarts of PostgreSQL")
    ok("PostgreSQL restarted three times under reads and writes: no stale read, and the cache "
       "answers again after each")


def case_server_restarted_under_load(case):
    restarted_under_load(case, [])


def case_server_restarted_under_load_persistent(case):
    restarted_under_load(case, PERSISTENT)


def case_persistent_kill9(case):
    kill9_under_load(case, [], LAG_BOUND)


def case_persistent_kill9_strict(case):
    kill9_under_load(case, ['cache.consistency = "strict"'], 0)


def case_unlogged_not_cached(case):
    ensure_database()
    t = f"fw_{case.name}"
    sql = one_row_table(t, "unlogged table")
    inst = start_following(case, TRANSACTION)
    wait_for_log(inst, FOLLOWING)
    with connect(inst.port, dbname=DB) as conn:
        moved = server_reads(conn, sql, t, [("one",)])
        expect(moved == 5, f"{5 - moved} of 5 reads of an UNLOGGED table were cache hits")
    ok("an UNLOGGED table is not cached while the stream is followed")


def unavailable(case, user, cause, cluster_dir=None, cluster=None):
    """The stream cannot run: with a TTL the cache serves (bounded by it) and the log says why;
    without one (default_ttl = 0) nothing would bound a hit, and none is served."""
    t = f"fw_{case.name}"
    sql = f"select v from {t} where id = 1"
    for ttl in [60, 0]:
        inst = start_following(case, TRANSACTION, cluster_dir=cluster_dir, ttl=ttl, user=user)
        wait_for_log(inst, "cannot be followed")
        expect(cause in log_of(inst), f"the log does not say why ({cause!r}): {log_of(inst)[-800:]}")
        with connect(inst.port, dbname=DB, user=user) as conn:
            if ttl:
                cached(conn, sql, t, [("one",)], cluster)
                ok(f"without the stream ({cause}) the cache serves, bounded by its TTL, and says why")
                continue
            moved = server_reads(conn, sql, t, [("one",)], cluster)
            expect(moved == 5, f"with default_ttl = 0 and no stream, {5 - moved} of 5 reads were hits")
            ok(f"without the stream ({cause}) and without a TTL, nothing is served from the cache")


def case_no_replication_privilege(case):
    ensure_database()
    t = f"fw_{case.name}"
    server("do $$ begin if not exists (select from pg_roles where rolname = 'follow_norepl') then "
           "create role follow_norepl login noreplication; end if; end $$", dbname="postgres")
    one_row_table(t)
    server(f"grant select on {t} to follow_norepl")
    unavailable(case, "follow_norepl", "replication role")


def case_wal_level_replica(case):
    cluster_dir, cluster = case.private_cluster("wal_level = replica")
    server(f"create database {DB}", dbname="postgres", cluster=cluster)
    one_row_table(f"fw_{case.name}", cluster=cluster)
    unavailable(case, "postgres", "wal_level", cluster_dir, cluster)


CASES = [
    ("direct_writes_transaction", case_direct_writes_transaction, 60),
    ("direct_writes_session", case_direct_writes_session, 60),
    ("direct_write_unseen_without_stream", case_direct_write_unseen_without_stream, CASE_TIMEOUT),
    ("no_hits_while_down", case_no_hits_while_down, 60),
    ("stream_killed", case_stream_killed, 60),
    ("server_restarted", case_server_restarted, 90),
    ("server_restarted_under_load", case_server_restarted_under_load, 120),
    ("server_restarted_under_load_persistent", case_server_restarted_under_load_persistent, 120),
    ("strict_read_your_writes", case_strict_read_your_writes, 90),
    ("strict_needs_ddl_trigger", case_strict_needs_ddl_trigger, CASE_TIMEOUT),
    ("persistent_restart", case_persistent_restart, 90),
    ("persistent_stream_killed", case_persistent_stream_killed, 60),
    ("abandoned_slot", case_abandoned_slot, 60),
    ("persistent_kill9", case_persistent_kill9, 150),
    ("persistent_kill9_strict", case_persistent_kill9_strict, 150),
    ("unlogged_not_cached", case_unlogged_not_cached, CASE_TIMEOUT),
    ("no_replication_privilege", case_no_replication_privilege, CASE_TIMEOUT),
    ("wal_level_replica", case_wal_level_replica, 60),
]

if __name__ == "__main__":
    sys.exit(main("follow", CASES))
