#!/usr/bin/python3
"""The result cache, seen from clients (psycopg 3, libpq's simple protocol) in front of the real
PostgreSQL of the test cluster, which counts every statement it runs in pg_stat_statements.

  hits_<mode>
      a repeated cacheable SELECT is answered by pgstash: the server's count of it stops moving.
  extended_hits_<mode>
      the same through the extended protocol, as psycopg sends it: parameters in text and binary,
      unnamed and named (prepared) statements.
  pgbench_hits
      pgbench in each protocol (-M simple, extended, prepared) on a cacheable script.
  writes_<mode>
      every write path invalidates what it makes stale: the next read returns the new data.
  transaction_hits_<mode>
      inside a READ COMMITTED transaction that has not written, reads are hits (simple and
      extended); after SET LOCAL, after a write, and at REPEATABLE READ they reach the server.
  default_isolation_bypass
      a role whose transactions start at REPEATABLE READ (ALTER ROLE ... SET) gets no hits inside
      them, and still gets them outside.
  set_role_user_schema
      after SET ROLE, "$user" in search_path names the role's schema: a read of a view found there
      is invalidated by a write to the table behind it.
  no_stampede
      eight clients missing one slow statement at once make one server query, and all read its
      result; with cache.coalesce_wait_ms = 0 they make several (so the check can fail).
  rules
      [[cache.rules]]: never (by table, also through a view), a ttl by statement pattern, force (a
      volatile user function, now() on a table) still invalidated by writes.
  view_replaced
      CREATE OR REPLACE VIEW through pgstash while the view's result is cached: the next reads,
      in the same second, read the new table and are invalidated by writes to it.
  bad_store
      damaged LMDB files of an earlier run are replaced; an unwritable cache.path turns the cache
      off (one log line, statements pass through); a result bigger than the map fails no query,
      is logged once, and smaller results are still cached.
  row_keys
      an UPDATE or DELETE of one primary key's rows leaves the cached reads of other keys served
      (constants, text and binary parameters, in the read and in the write) and makes the reads of that key, of the whole
      table and by another column miss; setting the key, and a transaction of two keys.
  write_under_set_local_path
      a write after SET LOCAL search_path in its transaction, whose table under that path has a
      trigger writing another table, invalidates that table's cached read.
  rollback_keeps_entry
      a rolled-back write leaves the cached result valid (still served, still right).
  stable_call_keeps_entries
      calls of STABLE functions (now(), current_setting()) write nothing: the cached result is
      still served, to that session and to others.
  commit_visible_to_others
      a second client reads a committed write the moment COMMIT returns.
  not_cached
      statements the cache must never answer (time, volatile, locking, temp tables, sequences,
      catalogs, inside a writing transaction) reach the server every time.
  row_level_security
      two roles and two tenants (app.tenant) reading one table under RLS policies never see each
      other's rows.
  protocol_deallocate_with_cache
      transaction mode answers a DEALLOCATE of a protocol-level statement run through
      Bind/Execute itself; with the cache on it still does.
  stale_read_checker, stale_read_checker_fails_without_invalidation
      writers, one per write path (UPDATE simple, extended and in a transaction, an updatable
      view, a trigger, an FK ON UPDATE CASCADE, MERGE, COPY FROM, TRUNCATE, DO, CALL, a function),
      and readers (simple and extended protocol) race on versioned rows; each read is checked
      against every write acknowledged before it was sent. 0 stale reads; and stale reads are reported when pgstash
      runs with invalidation switched off (so the checker can fail).
  stale_read_checker_two_instances_strict, stale_read_checker_two_instances_default
      the same checker across two pgstash instances following the replication stream, each
      reader on the other instance than its row's writer: 0 stale reads with
      cache.consistency = "strict"; in the default mode, stale reads lag at most the bound.

Arguments, if any, name the cases to run (all by default).
"""

import itertools
import os
import subprocess
import sys
import threading
import time

import psycopg

from case_harness import CASE_TIMEOUT, CLUSTER, DB, Failure, admin, connect, expect, main, ok

TRANSACTION = ['pool.mode = "transaction"', "pool.size = 4"]
SESSION = ['pool.mode = "session"', "pool.size = 8"]


def start_cached(case, mode, *extra):
    path = os.path.join(case.root, f"{case.name}-cache-{len(case.instances) + 1}")
    return case.start(*mode, "cache.enabled = true", f'cache.path = "{path}"', *extra)


def server_calls(fragment):
    """How often the server ran statements whose text contains `fragment`."""
    with admin(DB) as conn:
        row = conn.execute("select coalesce(sum(calls), 0) from pg_stat_statements "
                           "where query like %s and query not like '%%pg_stat_statements%%'",
                           (f"%{fragment}%",)).fetchone()
    return int(row[0])


def simple(conn, sql):
    """Runs `sql` with the simple protocol (PQexec) and returns its rows as text."""
    result = conn.pgconn.exec_(sql.encode())
    status = result.status
    if status == psycopg.pq.ExecStatus.FATAL_ERROR:
        raise Failure(f"{sql!r} failed: {result.error_message.decode()}")
    return [tuple(None if result.get_value(r, c) is None else result.get_value(r, c).decode()
                  for c in range(result.nfields)) for r in range(result.ntuples)]


def setup(sql):
    with admin(DB) as conn:
        conn.execute(sql)


def warm(conn, sql, rounds=6, fragment=None, limit=20.0):
    """Runs `sql` until the cache must hold it (the catalog look-up and the store are
    asynchronous, so the first runs may pass through), and returns its rows. With `fragment`,
    until a run no longer reaches the server (at least `rounds` times, at most `limit` seconds:
    a loaded machine may take longer than the rounds)."""
    rows = None
    deadline = time.monotonic() + limit
    for done in itertools.count(1):
        before = server_calls(fragment) if fragment else 0
        rows = simple(conn, sql)
        served = fragment is None or server_calls(fragment) == before
        if done >= rounds and (served or time.monotonic() > deadline):
            return rows
        time.sleep(0.05)


def expect_served(conn, sql, fragment, expected, times=10):
    """`sql` is answered `expected` `times` times without reaching the server."""
    before = server_calls(fragment)
    for _ in range(times):
        rows = simple(conn, sql)
        expect(rows == expected, f"{sql!r} returned {rows}, expected {expected}")
    moved = server_calls(fragment) - before
    expect(moved == 0, f"{sql!r} reached the server {moved} times of {times}; expected 0")


def hits(case, mode):
    table = f"cache_hits_{case.name}"
    setup(f"drop table if exists {table}; create table {table} (id int primary key, v text);"
          f"insert into {table} values (1, 'one'), (2, 'two')")
    inst = start_cached(case, mode)
    with connect(inst.port) as conn:
        sql = f"select v from {table} where id = 2"
        expect(warm(conn, sql) == [("two",)], "warm-up read returned the wrong rows")
        expect_served(conn, sql, table, [("two",)])
        # Whitespace, case and comments do not matter; constants do.
        expect_served(conn, f"SELECT  v\nFROM {table} /* c */ WHERE id = 2", table, [("two",)])
        expect(warm(conn, f"select v from {table} where id = 1") == [("one",)],
               "a different constant got another's result")
    with connect(inst.port) as other:
        expect_served(other, sql, table, [("two",)])
    ok(f"repeated SELECT answered from the cache ({mode[0]})")


def case_hits_transaction(case):
    hits(case, TRANSACTION)


def case_hits_session(case):
    hits(case, SESSION)


def extended_hits(case, mode):
    table = f"cache_ext_{case.name}"
    setup(f"drop table if exists {table}; create table {table} (id int primary key, v text);"
          f"insert into {table} values (1, 'one'), (2, 'two')")
    inst = start_cached(case, mode)
    sql = f"select v from {table} where id = %s"
    with connect(inst.port) as conn:
        runs = [("unnamed, text", dict()), ("unnamed, binary", dict(binary=True)),
                ("prepared", dict(prepare=True)), ("prepared, binary", dict(prepare=True, binary=True))]
        for _ in range(4):
            for _, kw in runs:
                conn.execute(sql, (2,), **kw).fetchall()
            time.sleep(0.05)
        for what, kw in runs:
            before = server_calls(table)
            for _ in range(10):
                rows = conn.execute(sql, (2,), **kw).fetchall()
                expect(rows == [("two",)], f"{what}: returned {rows}")
            moved = server_calls(table) - before
            expect(moved == 0, f"{what}: reached the server {moved} times of 10")
            ok(f"extended protocol, {what}: answered from the cache ({mode[0]})")
        rows = conn.execute(sql, (1,)).fetchall()
        expect(rows == [("one",)], f"another parameter got {rows}")
        conn.execute(f"update {table} set v = 'deux' where id = %s", (2,))
        for what, kw in runs:
            rows = conn.execute(sql, (2,), **kw).fetchall()
            expect(rows == [("deux",)], f"{what}: after the UPDATE read {rows}")
        ok(f"extended protocol: an UPDATE is seen by the next read in every form ({mode[0]})")


def case_extended_hits_transaction(case):
    extended_hits(case, TRANSACTION)


def case_extended_hits_session(case):
    extended_hits(case, SESSION)


def case_pgbench_hits(case):
    table = "cache_pgbench"
    setup(f"drop table if exists {table}; create table {table} (id int primary key, v int);"
          f"insert into {table} select g, g * 10 from generate_series(1, 5) g")
    script = os.path.join(case.root, "cache_pgbench.sql")
    with open(script, "w") as f:
        f.write(f"\\set id random(1, 5)\nselect v from {table} where id = :id;\n")
    inst = start_cached(case, TRANSACTION)
    pgbench = os.path.join(CLUSTER["PGSTASH_PG_BIN"], "pgbench")
    for protocol in ["simple", "extended", "prepared"]:
        def run(transactions):
            r = subprocess.run([pgbench, "-n", "-M", protocol, "-f", script, "-c", "2",
                                "-t", str(transactions), "-h", "127.0.0.1", "-p", str(inst.port),
                                "-U", "postgres", DB], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=60)
            expect(r.returncode == 0 and "failed transactions: 0 " in r.stdout,
                   f"pgbench -M {protocol} failed: {r.stdout[-500:]}")
        # The first run sets off the catalog look-up (it may outlast the run), the second stores
        # every key.
        for _ in range(2):
            run(100)
            time.sleep(0.2)
        before = server_calls(table)
        run(500)
        moved = server_calls(table) - before
        expect(moved == 0, f"pgbench -M {protocol}: {moved} of 1000 reads reached the server")
        ok(f"pgbench -M {protocol}: 1000 cached reads, none reached the server")


def case_protocol_deallocate_with_cache(case):
    """A protocol-level statement deallocated by an unnamed statement `DEALLOCATE s1` run through
    Bind/Execute: transaction mode answers that itself, and must go on doing so with the cache on
    (its Execute is not a cached portal's)."""
    inst = start_cached(case, TRANSACTION)
    with connect(inst.port) as conn:
        pg = conn.pgconn
        for round_ in range(3):
            r = pg.prepare(b"s1", b"select 1")
            expect(r.status == psycopg.pq.ExecStatus.COMMAND_OK, f"round {round_}: prepare failed")
            r = pg.prepare(b"", b"DEALLOCATE s1")
            expect(r.status == psycopg.pq.ExecStatus.COMMAND_OK, f"round {round_}: Parse failed")
            r = pg.exec_prepared(b"", [])
            expect(r.status == psycopg.pq.ExecStatus.COMMAND_OK and r.command_status == b"DEALLOCATE",
                   f"round {round_}: Execute of DEALLOCATE gave {r.status} "
                   f"{r.error_message.decode()}")
        expect(simple(conn, "select 2") == [("2",)], "the session did not survive")
    ok("DEALLOCATE of a protocol-level statement through Bind/Execute, cache on")


# Each write path: setup SQL, the read whose result it changes, the write, and what the read
# must return after it. {t} prefixes the path's objects with a schema of the case's; {n} is the
# same prefix unqualified, for names that take no schema (triggers).
WRITE_PATHS = [
    ("insert", "create table {t}a (id int, v int); insert into {t}a values (1, 1)",
     "select count(*) from {t}a", "insert into {t}a values (2, 2)", [("2",)]),
    ("update", "create table {t}b (id int, v int); insert into {t}b values (1, 1)",
     "select v from {t}b", "update {t}b set v = 5", [("5",)]),
    ("delete", "create table {t}c (id int); insert into {t}c values (1), (2)",
     "select count(*) from {t}c", "delete from {t}c where id = 1", [("1",)]),
    ("update_extended", "create table {t}d (id int, v int); insert into {t}d values (1, 1)",
     "select v from {t}d", ("update {t}d set v = %s where id = %s", (7, 1)), [("7",)]),
    ("truncate", "create table {t}e (id int); insert into {t}e values (1)",
     "select count(*) from {t}e", "truncate {t}e", [("0",)]),
    ("truncate_cascade",
     "create table {t}f (id int primary key); create table {t}g (f int references {t}f);"
     "insert into {t}f values (1); insert into {t}g values (1)",
     "select count(*) from {t}g", "truncate {t}f cascade", [("0",)]),
    ("copy_from", "create table {t}h (id int)", "select count(*) from {t}h", "copy", [("3",)]),
    ("merge", "create table {t}i (id int, v int); insert into {t}i values (1, 1)",
     "select v from {t}i",
     "merge into {t}i as m using (select 1 as id) s on m.id = s.id "
     "when matched then update set v = 9", [("9",)]),
    ("view", "create table {t}j (id int); create view {t}jv as select * from {t}j;"
     "create view {t}jvv as select count(*) as n from {t}jv",
     "select n from {t}jvv", "insert into {t}j values (1)", [("1",)]),
    ("updatable_view", "create table {t}k (id int); create view {t}kv as select * from {t}k",
     "select count(*) from {t}k", "insert into {t}kv values (1)", [("1",)]),
    ("partition",
     "create table {t}l (id int) partition by range (id);"
     "create table {t}l1 partition of {t}l for values from (0) to (100)",
     "select count(*) from {t}l", "insert into {t}l1 values (5)", [("1",)]),
    ("partition_parent",
     "create table {t}m (id int) partition by range (id);"
     "create table {t}m1 partition of {t}m for values from (0) to (100)",
     "select count(*) from {t}m1", "insert into {t}m values (5)", [("1",)]),
    ("fk_cascade",
     "create table {t}n (id int primary key);"
     "create table {t}o (n int references {t}n on delete cascade);"
     "insert into {t}n values (1); insert into {t}o values (1)",
     "select count(*) from {t}o", "delete from {t}n", [("0",)]),
    ("trigger",
     "create table {t}p (id int); create table {t}q (n int); insert into {t}q values (0);"
     "create function {t}pf() returns trigger language plpgsql as "
     "$$begin update {t}q set n = n + 1; return new; end$$;"
     "create trigger {n}pt after insert on {t}p for each row execute function {t}pf()",
     "select n from {t}q", "insert into {t}p values (1)", [("1",)]),
    ("function",
     "create table {t}r (n int); insert into {t}r values (0);"
     "create function {t}rf() returns int language sql as "
     "$$update {t}r set n = n + 1 returning n$$",
     "select n from {t}r", "select {t}rf()", [("1",)]),
    ("do_block", "create table {t}s (n int); insert into {t}s values (0)",
     "select n from {t}s", "do $$begin update {t}s set n = 3; end$$", [("3",)]),
    ("procedure",
     "create table {t}u (n int); insert into {t}u values (0);"
     "create procedure {t}up() language sql as $$update {t}u set n = 4$$",
     "select n from {t}u", "call {t}up()", [("4",)]),
    ("refresh_matview",
     "create table {t}w (id int); create materialized view {t}wm as select count(*) as n from {t}w;"
     "insert into {t}w values (1)",
     "select n from {t}wm", "refresh materialized view {t}wm", [("1",)]),
    ("alter_table", "create table {t}x (id int); insert into {t}x values (1)",
     "select * from {t}x", "alter table {t}x add column w int default 8", [("1", "8")]),
    ("drop_recreate", "create table {t}y (id int); insert into {t}y values (1)",
     "select * from {t}y",
     "drop table {t}y; create table {t}y (id int); insert into {t}y values (2)", [("2",)]),
    ("explicit_transaction", "create table {t}z (id int); insert into {t}z values (1)",
     "select count(*) from {t}z",
     "begin; insert into {t}z values (2); insert into {t}z values (3); commit", [("3",)]),
]


def writes(case, mode, schema):
    setup(f"drop schema if exists {schema} cascade; create schema {schema}")
    inst = start_cached(case, mode)
    failures = []
    with connect(inst.port) as reader, connect(inst.port) as writer:
        for name, create, read, write, after in WRITE_PATHS:
            names = {"t": f"{schema}.{name}_", "n": f"{name}_"}
            setup(create.format(**names))
            read_sql = read.format(**names)
            table = read_sql.split(" from ")[-1]
            warm(reader, read_sql, fragment=table)
            before = server_calls(table)
            for _ in range(3):
                simple(reader, read_sql)
            if server_calls(table) != before:
                failures.append(f"{name}: the read was not cached before the write")
                continue
            if write == "copy":
                with writer.cursor().copy(f"copy {names['t']}h (id) from stdin") as copy:
                    for i in range(3):
                        copy.write_row((i,))
            elif isinstance(write, tuple):
                writer.execute(write[0].format(**names), write[1], prepare=True)
            else:
                simple(writer, write.format(**names))
            got = simple(reader, read_sql)
            if got != after:
                failures.append(f"{name}: after the write the read returned {got}, expected {after}")
            else:
                ok(f"{name}: the next read sees the write ({schema})")
    expect(not failures, "; ".join(failures))


def case_writes_transaction(case):
    writes(case, TRANSACTION, "cache_writes_t")


def case_writes_session(case):
    writes(case, SESSION, "cache_writes_s")


def transaction_hits(case, mode):
    table = f"cache_in_tx_{case.name}"
    setup(f"drop table if exists {table}; create table {table} (id int, v text);"
          f"insert into {table} values (1, 'one')")
    inst = start_cached(case, mode)
    sql = f"select v from {table} where id = 1"
    with connect(inst.port) as conn:
        warm(conn, sql, fragment=table)
        simple(conn, "begin")
        expect_served(conn, sql, table, [("one",)])
        status = conn.pgconn.transaction_status
        expect(status == psycopg.pq.TransactionStatus.INTRANS,
               f"after a hit in a transaction the client's status is {status}")
        # SET LOCAL holds a setting the key does not have yet.
        simple(conn, "set local app.tenant = 'x'")
        before = server_calls(table)
        simple(conn, sql)
        expect(server_calls(table) == before + 1, "a read after SET LOCAL was answered from the cache")
        simple(conn, "commit")
        simple(conn, "begin")
        expect_served(conn, sql, table, [("one",)])
        # Its own write is in no cached result.
        simple(conn, f"update {table} set v = 'mine' where id = 1")
        got = simple(conn, sql)
        expect(got == [("mine",)], f"a transaction that wrote read {got}, not its own write")
        simple(conn, "rollback")
        simple(conn, "begin isolation level repeatable read")
        before = server_calls(table)
        simple(conn, sql)
        simple(conn, "commit")
        expect(server_calls(table) == before + 1, "a read at REPEATABLE READ was answered from the cache")
    with connect(inst.port) as conn:
        conn.execute("begin")
        for _ in range(2):
            conn.execute(f"select v from {table} where id = %s", (1,)).fetchall()
        before = server_calls(table)
        for _ in range(5):
            got = conn.execute(f"select v from {table} where id = %s", (1,)).fetchall()
            expect(got == [("one",)], f"an extended read in a transaction returned {got}")
        expect(server_calls(table) == before, "extended reads in a transaction reached the server")
        conn.execute("commit")
    ok(f"reads in a READ COMMITTED transaction that has not written are hits ({mode[0]})")


def case_transaction_hits_transaction(case):
    transaction_hits(case, TRANSACTION)


def case_transaction_hits_session(case):
    transaction_hits(case, SESSION)


def case_default_isolation_bypass(case):
    table = "cache_default_isolation"
    setup(f"drop table if exists {table}; drop role if exists cache_rr;"
          f"create table {table} (v int); insert into {table} values (1);"
          "create role cache_rr login;"
          "alter role cache_rr set default_transaction_isolation = 'repeatable read';"
          f"grant select on {table} to cache_rr")
    inst = start_cached(case, TRANSACTION)
    sql = f"select v from {table}"
    with connect(inst.port, user="cache_rr") as conn:
        warm(conn, sql, fragment=table)
        for _ in range(3):
            simple(conn, "begin")
            before = server_calls(table)
            simple(conn, sql)
            simple(conn, "commit")
            expect(server_calls(table) == before + 1,
                   "a transaction at the role's REPEATABLE READ got a hit")
        expect_served(conn, sql, table, [("1",)])
    ok("a role whose transactions start at REPEATABLE READ gets no hits inside them")


def case_set_role_user_schema(case):
    setup("drop schema if exists cache_role_a cascade; drop table if exists cache_role_t;"
          "drop role if exists cache_role_a; create role cache_role_a;"
          "create schema cache_role_a authorization cache_role_a;"
          "create table cache_role_t (v text); insert into cache_role_t values ('public');"
          "create table cache_role_a.src (v text); insert into cache_role_a.src values ('a1');"
          "create view cache_role_a.cache_role_t as select v from cache_role_a.src;"
          "grant select on cache_role_t, cache_role_a.cache_role_t to cache_role_a")
    inst = start_cached(case, TRANSACTION)
    sql = "select v from cache_role_t"
    with connect(inst.port) as reader, connect(inst.port) as writer:
        simple(reader, "set role cache_role_a")
        # "$user" is the role set: the view in its schema, over src.
        expect(warm(reader, sql, fragment="cache_role_t") == [("a1",)], "SET ROLE read the wrong table")
        expect_served(reader, sql, "cache_role_t", [("a1",)])
        # The first write, before the catalog knows its table, invalidates everything.
        for i in range(2, 5):
            simple(writer, f"update cache_role_a.src set v = 'a{i}'")
            got = simple(reader, sql)
            expect(got == [(f"a{i}",)], f"after a write to the view's table the role read {got}")
            warm(reader, sql, fragment="cache_role_t")
    ok('"$user" in search_path follows SET ROLE: a write behind the view it finds invalidates')


def stampede(case, *extra):
    """Eight clients miss one slow statement at once; returns how often the server ran it."""
    table = "cache_stampede"
    inst = start_cached(case, TRANSACTION, *extra)
    clients = [connect(inst.port) for _ in range(8)]
    try:
        template = f"select count(*) from {table} a, {table} b where a.v < b.v + {{}}"
        # The catalog's look-ups first (the statement's constant is another).
        warm(clients[0], template.format(0), fragment=table)
        sql = template.format(len(case.instances))
        with admin(DB) as direct:
            want = simple(direct, sql)
        barrier = threading.Barrier(len(clients))
        results = [None] * len(clients)

        def read(i):
            barrier.wait()
            results[i] = simple(clients[i], sql)

        before = server_calls(table)
        threads = [threading.Thread(target=read, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expect(all(r == want for r in results), f"the clients read {results}, not {want}")
        return server_calls(table) - before
    finally:
        for c in clients:
            c.close()


def case_no_stampede(case):
    setup("drop table if exists cache_stampede; create table cache_stampede (v int);"
          "insert into cache_stampede select g from generate_series(1, 2500) g")
    calls = stampede(case)
    expect(calls == 1, f"8 concurrent misses of one statement ran {calls} times on the server")
    uncoalesced = stampede(case, "cache.coalesce_wait_ms = 0")
    expect(uncoalesced > 1, f"with cache.coalesce_wait_ms = 0 the server still ran it {uncoalesced} times")
    ok(f"8 concurrent misses make 1 server query ({uncoalesced} with cache.coalesce_wait_ms = 0)")


def reaches_server(conn, sql, fragment, times=3):
    """How many of `times` runs of `sql` reached the server."""
    before = server_calls(fragment)
    for _ in range(times):
        simple(conn, sql)
    return server_calls(fragment) - before


def case_rules(case):
    setup("drop table if exists cache_rule_secret cascade; drop table if exists cache_rule_plain;"
          "drop table if exists cache_rule_short;"
          "create table cache_rule_secret (v text); insert into cache_rule_secret values ('s');"
          "create view cache_rule_secret_v as select v from cache_rule_secret;"
          "create table cache_rule_plain (v int); insert into cache_rule_plain values (1);"
          "create table cache_rule_short (v int); insert into cache_rule_short values (1);"
          "drop table if exists cache_rule_other; create table cache_rule_other (v int);"
          "insert into cache_rule_other values (100);"
          "create or replace function cache_rule_f(int) returns int language sql volatile "
          "as $$select $1 + max(v) from cache_rule_other$$")
    rules = ('cache.rules = [{table = "public.cache_rule_secret", action = "never"}, '
             '{statement = "select v from cache_rule_short%", ttl = 2}, '
             '{statement = "% cache_rule_f(%", action = "force"}, '
             '{table = "cache_rule_plain", statement = "%now()%", action = "force", ttl = 30}]')
    inst = start_cached(case, TRANSACTION, rules)
    with connect(inst.port) as conn:
        for sql, fragment in [("select v from cache_rule_secret", "from cache_rule_secret"),
                              ("select v from cache_rule_secret_v", "from cache_rule_secret_v")]:
            warm(conn, sql, rounds=3)
            moved = reaches_server(conn, sql, fragment)
            expect(moved == 3, f"{sql!r} under a never rule reached the server {moved} of 3 times")
        ok("a never rule on a table keeps its results, also through a view, out of the cache")

        short = "select v from cache_rule_short"
        # Served from the first run that is a hit, so the entry is fresh: the 2 s are not
        # used up by warming on a loaded machine.
        warm(conn, short, rounds=1, fragment="from cache_rule_short")
        expect_served(conn, short, "from cache_rule_short", [("1",)], times=3)
        time.sleep(2.5)
        expect(reaches_server(conn, short, "from cache_rule_short", times=1) == 1,
               "a result of a rule with ttl = 2 was served after 2.5 s")
        ok("a rule's ttl bounds how long its results are served")

        forced = "select cache_rule_f(v) from cache_rule_plain"
        expect(warm(conn, forced, fragment="cache_rule_f(") == [("101",)], "the forced read is wrong")
        expect_served(conn, forced, "cache_rule_f(", [("101",)])
        # The function reads a table the statement does not name: a write to it invalidates.
        # (The first write to a table the catalog has not looked up invalidates everything.)
        simple(conn, "update cache_rule_other set v = 150")
        expect(simple(conn, forced) == [("151",)], "a forced result outlived a write its function reads")
        warm(conn, forced, fragment="cache_rule_f(")
        simple(conn, "update cache_rule_other set v = 200")
        expect(simple(conn, forced) == [("201",)], "a forced result outlived a write its function reads")
        warm(conn, forced, fragment="cache_rule_f(")
        timed = "select v, now() > '2000-01-01' from cache_rule_plain"
        warm(conn, timed, fragment="now() >")
        expect_served(conn, timed, "now() >", [("1", "t")])
        simple(conn, "update cache_rule_plain set v = 5")
        expect(simple(conn, forced) == [("205",)], "a forced result outlived a write to its table")
        ok("force rules cache reads of volatile and time functions, still invalidated by writes")
        # Without a rule (the one forcing now() names another table) it passes through.
        plain = "select now() > '2000-01-01', v from cache_rule_short"
        warm(conn, plain, rounds=3)
        expect(reaches_server(conn, plain, "select now() >") == 3, "an unforced now() was cached")


def log_lines(inst, text):
    with open(os.path.join(inst.work, "pgstash.log"), errors="replace") as f:
        return [line for line in f if text in line]


def case_bad_store(case):
    setup("drop table if exists cache_bad_store; create table cache_bad_store (v int);"
          "insert into cache_bad_store select generate_series(1, 182)")
    sql = "select v from cache_bad_store where v = 1"

    # What an earlier run left, damaged: replaced at start.
    damaged = os.path.join(case.root, "damaged-cache")
    os.makedirs(damaged)
    for name in ("data.mdb", "lock.mdb"):
        with open(os.path.join(damaged, name), "wb") as f:
            f.write(os.urandom(65536))
    inst = case.start(*TRANSACTION, "cache.enabled = true", f'cache.path = "{damaged}"')
    with connect(inst.port) as conn:
        warm(conn, sql, fragment="from cache_bad_store")
        expect_served(conn, sql, "from cache_bad_store", [("1",)])
    ok("damaged LMDB files of an earlier run are replaced, and the cache works")

    # A file where the directory must be: the cache is off, statements pass through.
    blocker = os.path.join(case.root, "a-file")
    with open(blocker, "w") as f:
        f.write("not a directory")
    inst = case.start(*TRANSACTION, "cache.enabled = true", f'cache.path = "{blocker}/cache"')
    with connect(inst.port) as conn:
        for _ in range(3):
            expect(simple(conn, sql) == [("1",)], "a statement failed with the cache unopenable")
        expect(reaches_server(conn, sql, "from cache_bad_store") == 3,
               "statements were answered from a cache that could not be opened")
    lines = log_lines(inst, "error result cache off")
    expect(len(lines) == 1 and blocker in lines[0], f"expected one log line naming the path: {lines}")
    ok("an unwritable cache.path turns the cache off with one log line; statements pass through")

    # A result bigger than the LMDB map (1 MiB budget: a 67 MiB map).
    inst = start_cached(case, TRANSACTION, "cache.max_size = 1048576",
                        "cache.max_entry_size = 134217728", "cache.compress_min_size = 1073741824")
    big = ("select a.v, b.v, repeat(md5((a.v * 1000 + b.v)::text), 70)"
           " from cache_bad_store a, cache_bad_store b")
    with connect(inst.port) as conn:
        for _ in range(4):
            rows = simple(conn, big)
            expect(len(rows) == 182 * 182 and rows[-1][2] == rows[-1][2][:32] * 70,
                   "a result too big for the map came back wrong")
        warm(conn, sql, fragment="from cache_bad_store")
        expect_served(conn, sql, "from cache_bad_store", [("1",)])
        # Past the 1 MiB budget in small entries: evictions, never an error.
        for i in range(3000):
            rows = simple(conn, f"select {i} as k, repeat('y', 600) from cache_bad_store where v = 1")
            expect(rows == [(str(i), "y" * 600)], f"read {i} past the budget came back wrong")
        last = "select 2999 as k, repeat('y', 600) from cache_bad_store where v = 1"
        warm(conn, last, fragment="as k, repeat(")
        before = server_calls("as k, repeat(")
        simple(conn, last)
        expect(server_calls("as k, repeat(") == before, "the cache stopped storing past its budget")
    full = log_lines(inst, "is full")
    expect(len(full) == 1, f"expected one log line for the full map, got {full}")
    ok("a full LMDB map fails no query, is logged once; past the budget entries are evicted")


def case_row_keys(case):
    """A write of one key's rows (UPDATE or DELETE ... WHERE id = constant) makes the reads of
    that key and of the whole table miss, and leaves the reads of other keys served."""
    t = "cache_rowkeys"
    setup(f"drop table if exists {t}; create table {t} (id int primary key, v text, k int);"
          f"insert into {t} select g, 'v' || g, g from generate_series(1, 4) g")
    inst = start_cached(case, TRANSACTION)
    by_key = f"select v from {t} where id"
    read = lambda i: f"{by_key} = {i}"  # noqa: E731
    with connect(inst.port) as conn:
        by_param = f"{by_key} = %s"
        # The catalog's answer for the table's writes, asked at the first one, is there for the
        # next (until it is, a write invalidates the whole database).
        for _ in range(2):
            simple(conn, f"update {t} set v = v where id = 4")
            time.sleep(0.3)
        # First, as the first call of a function (string_agg) invalidates the whole database
        # until the catalog has said it writes nothing.
        whole = f"select string_agg(v, ',' order by id) from {t}"
        by_other = f"select v from {t} where k = 2"
        warm(conn, whole, fragment="string_agg")
        warm(conn, by_other, fragment="where k =")
        for i in (1, 2, 3, 5):
            warm(conn, read(i), fragment=by_key)
        for binary in (False, True):
            for _ in range(4):
                conn.execute(by_param, (2,), binary=binary).fetchall()

        simple(conn, f"update {t} set v = 'one' where id = 1")
        expect_served(conn, read(2), by_key, [("v2",)])
        expect_served(conn, read(3), by_key, [("v3",)])
        before = server_calls(by_key)
        for binary in (False, True):
            rows = conn.execute(by_param, (2,), binary=binary).fetchall()
            expect(rows == [("v2",)], f"a parameter read of key 2 returned {rows}")
        expect(server_calls(by_key) == before, "a parameter read of key 2 reached the server")
        ok("an UPDATE of key 1 leaves the reads of keys 2 and 3 served, parameters included")
        expect(simple(conn, read(1)) == [("one",)], "key 1 read stale after its UPDATE")
        expect(simple(conn, whole) == [("one,v2,v3,v4",)], "the whole-table read was stale")
        ok("...and the reads of key 1 and of the whole table see it")

        for binary, value in ((False, "eins"), (True, "un")):
            conn.execute(f"update {t} set v = %s where id = %s", (value, 1), binary=binary)
            expect_served(conn, read(2), by_key, [("v2",)], times=3)
            expect(simple(conn, read(1)) == [(value,)], "key 1 read stale after a bound UPDATE")
        ok("an UPDATE whose key is a parameter (text and binary) is of that key alone")

        simple(conn, f"update {t} set v = 'two' where id = '2'")
        expect(simple(conn, by_other) == [("two",)], "a read by another column was stale")
        rows = conn.execute(by_param, (2,), binary=True).fetchall()
        expect(rows == [("two",)], f"a binary parameter read of key 2 returned {rows}")
        conn.execute(f"delete from {t} where id = 3")
        expect(simple(conn, read(3)) == [], "key 3 read stale after its DELETE")
        ok("a quoted key, a read by another column, a binary parameter, a DELETE")

        # Setting the key moves a row to another key: the whole table's reads miss.
        simple(conn, f"update {t} set id = 5 where id = 4")
        expect(simple(conn, read(5)) == [("v4",)], "key 5 read stale after a row moved to it")
        with conn.transaction():
            conn.execute(f"update {t} set v = 'uno' where id = 1")
            conn.execute(f"update {t} set v = 'dos' where id = 2")
        expect(simple(conn, read(1)) == [("uno",)] and simple(conn, read(2)) == [("dos",)],
               "a transaction's writes of two keys were not both seen")
        ok("an UPDATE of the key, and a transaction writing two keys")
        warm(conn, read(2), fragment=by_key)
        with conn.transaction():
            conn.execute("set local app.tenant = 'x'")
            conn.execute(f"update {t} set v = 'un' where id = 1")
        expect_served(conn, read(2), by_key, [("dos",)], times=3)
        expect(simple(conn, read(1)) == [("un",)], "key 1 read stale after a tenant's UPDATE")
        ok("a setting that changes no name (SET LOCAL app.tenant) keeps a write by key")

    # Under a search_path that lists pg_catalog after a schema with an `=` of its own, `id = 1`
    # is whatever that operator says (here: every row), and is no read of one key.
    ops = "cache_rowkeys_ops"
    setup(f"drop schema if exists {ops} cascade; create schema {ops};"
          f"create function {ops}.always(int, int) returns bool language sql immutable "
          "as 'select true';"
          f"create operator {ops}.= (leftarg = int, rightarg = int, function = {ops}.always)")
    with connect(inst.port) as conn, connect(inst.port) as writer:
        simple(conn, f"set search_path = {ops}, public, pg_catalog")
        counted = f"select count(*) from {t} where id = 1"
        before = int(warm(conn, counted, fragment=f"select count(*) from {t}")[0][0])
        simple(writer, f"delete from {t} where id = 2")
        after = int(simple(conn, counted)[0][0])
        expect(after == before - 1, f"count {after} after a DELETE, {before} before")
        ok("`=` of a schema before pg_catalog: a read by it is of the whole table")
        # ...and a write under such a path set in its own transaction, which the settings
        # committed so far do not show, is of the whole table (here: deletes every row).
        expect(warm(writer, read(1), fragment=by_key) == [("un",)], "key 1 read wrong")
        simple(writer, "begin")
        simple(writer, f"set local search_path = {ops}, public, pg_catalog")
        simple(writer, f"delete from {t} where id = 5")
        simple(writer, "commit")
        rows = simple(writer, read(1))
        expect(rows == [], f"key 1 read {rows} after a DELETE of every row")
    setup(f"drop schema {ops} cascade")
    ok("...and so is a write under such a path set by SET LOCAL")


def case_write_under_set_local_path(case):
    """A write sent after SET LOCAL search_path in its transaction is judged as the whole
    database's: under that path its table is another one, with a trigger that writes a third."""
    t, log, s2 = "cache_setlocal_t", "cache_setlocal_log", "cache_setlocal_s2"
    setup(f"drop schema if exists {s2} cascade; drop table if exists {t}, {log};"
          f"create table {t} (id int primary key, v int); insert into {t} values (1, 0);"
          f"create table {log} (n int); insert into {log} values (0);"
          f"create schema {s2}; create table {s2}.{t} (id int primary key, v int);"
          f"insert into {s2}.{t} values (1, 0);"
          f"create function {s2}.count_it() returns trigger language plpgsql as "
          f"$$begin update public.{log} set n = n + 1; return new; end$$;"
          f"create trigger count_it after update on {s2}.{t} "
          f"for each row execute function {s2}.count_it()")
    inst = start_cached(case, TRANSACTION)
    with connect(inst.port) as conn:
        # The catalog's answer for writes of the table under the default path is there.
        for _ in range(2):
            simple(conn, f"update {t} set v = v + 1 where id = 1")
            time.sleep(0.3)
        read = f"select n from {log}"
        before = int(warm(conn, read, fragment=f"from {log}")[0][0])
        simple(conn, "begin")
        simple(conn, f"set local search_path = {s2}, public")
        simple(conn, f"update {t} set v = v + 1 where id = 1")
        simple(conn, "commit")
        after = int(simple(conn, read)[0][0])
        expect(after == before + 1, f"{log} read {after} after its trigger ran, {before} before")
    setup(f"drop schema {s2} cascade")
    ok("a write after SET LOCAL search_path invalidates what its trigger under that path wrote")


def case_rollback_keeps_entry(case):
    table = "cache_rollback"
    setup(f"drop table if exists {table}; create table {table} (v int); insert into {table} values (1)")
    inst = start_cached(case, TRANSACTION)
    sql = f"select v from {table}"
    with connect(inst.port) as conn:
        warm(conn, sql)
        simple(conn, f"begin; update {table} set v = 2; rollback")
        expect_served(conn, sql, table, [("1",)])
    ok("ROLLBACK leaves the cached result valid")


def case_stable_call_keeps_entries(case):
    table = "cache_stable_call"
    setup(f"drop table if exists {table}; create table {table} (v int); insert into {table} values (1)")
    inst = start_cached(case, TRANSACTION)
    sql = f"select v from {table}"
    with connect(inst.port) as conn:
        stable_calls = "select now(), current_setting('application_name')"
        # Until the catalog has judged a function, a call counts as a possible write; once.
        simple(conn, stable_calls)
        warm(conn, sql)
        for _ in range(3):
            simple(conn, stable_calls)
        expect_served(conn, sql, table, [("1",)])
    with connect(inst.port) as other:
        expect_served(other, sql, table, [("1",)])
    ok("calls of STABLE functions (now()) keep the cached results, and the session's hits")


def case_view_replaced(case):
    t = "cache_view_replaced"
    setup(f"drop view if exists {t}_v; drop table if exists {t}_a; drop table if exists {t}_b;"
          f"create table {t}_a (id int); insert into {t}_a values (1);"
          f"create table {t}_b (id int); insert into {t}_b values (1), (2);"
          f"create view {t}_v as select count(*) as n from {t}_a")
    inst = start_cached(case, TRANSACTION)
    sql = f"select n from {t}_v"
    with connect(inst.port) as reader, connect(inst.port) as writer:
        warm(reader, sql, rounds=1, fragment=f"from {t}_v")
        # A session keeps what a statement reads for a second: the DDL must end that too.
        simple(writer, f"create or replace view {t}_v as select count(*) as n from {t}_b")
        expect(simple(reader, sql) == [("2",)], "the replaced view read the old table")
        # The first write to a table the catalog has yet to look up invalidates everything,
        # which would hide a read stored with the old view's tables.
        simple(writer, f"update {t}_b set id = id")
        time.sleep(0.2)
        simple(reader, sql)
        simple(reader, sql)
        simple(writer, f"insert into {t}_b values (3)")
        got = simple(reader, sql)
        expect(got == [("3",)], f"after a write to the table the replaced view reads, it read {got}")
    ok("a view replaced while its result is cached reads, and is invalidated by, its new table")


def case_commit_visible_to_others(case):
    table = "cache_commit"
    setup(f"drop table if exists {table}; create table {table} (v int); insert into {table} values (0)")
    inst = start_cached(case, TRANSACTION)
    sql = f"select v from {table}"
    with connect(inst.port) as reader, connect(inst.port) as writer:
        warm(reader, sql)
        for i in range(1, 30):
            writer.execute("begin")
            writer.execute(f"update {table} set v = %s", (i,))
            writer.execute("commit")
            got = simple(reader, sql)
            expect(got == [(str(i),)], f"after COMMIT of {i} another client read {got}")
            simple(reader, sql)  # stores it again, for the next round
    ok("a committed write is seen by a second client as soon as COMMIT returns")


# (name, statement, a fragment of its text as pg_stat_statements shows it)
NOT_CACHED = [
    ("now", "select now() from cache_nc", "select now()"),
    ("random", "select random() from cache_nc", "select random()"),
    ("for_update", "select id from cache_nc for update", "for update"),
    ("sequence", "select nextval('cache_nc_seq') from cache_nc", "select nextval("),
    ("catalog", "select count(*) from pg_class where relname = 'cache_nc'", "from pg_class"),
    ("volatile_user_function", "select cache_nc_f() from cache_nc", "select cache_nc_f()"),
    ("current_timestamp", "select current_timestamp from cache_nc", "select current_timestamp"),
    ("too_large", "select id, repeat('x', 1100000) from cache_nc", "repeat($1, $2) from cache_nc"),
    ("notice", "select cache_nc_loud(id) from cache_nc", "select cache_nc_loud("),
]


def case_not_cached(case):
    setup("drop table if exists cache_nc cascade; drop sequence if exists cache_nc_seq;"
          "create table cache_nc (id int); insert into cache_nc values (1);"
          "create sequence cache_nc_seq;"
          "create or replace function cache_nc_f() returns int language sql volatile as $$select 1$$;"
          "create or replace function cache_nc_loud(int) returns int language plpgsql immutable as "
          "$$begin raise notice 'loud'; return $1; end$$")
    inst = start_cached(case, TRANSACTION)
    failures = []
    with connect(inst.port) as conn:
        for name, sql, fragment in NOT_CACHED:
            warm(conn, sql, rounds=3)
            before = server_calls(fragment)
            for _ in range(5):
                simple(conn, sql)
            moved = server_calls(fragment) - before
            if moved != 5:
                failures.append(f"{name}: reached the server {moved} of 5 times")
            else:
                ok(f"{name}: never answered from the cache")
        # A temporary table (which pins the client to its server connection: last).
        with connect(inst.port) as pinned:
            simple(pinned, "create temp table cache_nc_tmp as select 1 as a")
            sql = "select a from cache_nc_tmp"
            warm(pinned, sql, rounds=3)
            moved = reaches_server(pinned, sql, "from cache_nc_tmp", times=5)
            if moved != 5:
                failures.append(f"temp table: reached the server {moved} of 5 times")
            else:
                ok("temp table: never answered from the cache")
        # In a transaction that has written, reads bypass the cache.
        sql = "select count(*) from cache_nc"
        warm(conn, sql)
        simple(conn, "begin")
        simple(conn, "insert into cache_nc values (2)")
        got = simple(conn, sql)
        simple(conn, "rollback")
        if got != [("2",)]:
            failures.append(f"a read in a writing transaction returned {got}, not its own write")
        else:
            ok("a writing transaction reads its own write, not the cache")
    expect(not failures, "; ".join(failures))


def case_row_level_security(case):
    setup("drop table if exists cache_rls; drop role if exists cache_alice; "
          "drop role if exists cache_bob;"
          "create role cache_alice login; create role cache_bob login;"
          "create table cache_rls (owner text, tenant text, v text);"
          "insert into cache_rls values ('cache_alice', 't1', 'a1'), ('cache_alice', 't2', 'a2'),"
          " ('cache_bob', 't1', 'b1'), ('cache_bob', 't2', 'b2');"
          "alter table cache_rls enable row level security;"
          "create policy mine on cache_rls using (owner = current_user and "
          " tenant = coalesce(nullif(current_setting('app.tenant', true), ''), tenant));"
          "grant select on cache_rls to cache_alice, cache_bob")
    inst = start_cached(case, TRANSACTION)
    sql = "select v from cache_rls order by v"
    want = {("cache_alice", None): [("a1",), ("a2",)], ("cache_bob", None): [("b1",), ("b2",)],
            ("cache_alice", "t1"): [("a1",)], ("cache_alice", "t2"): [("a2",)],
            ("cache_bob", "t1"): [("b1",)], ("cache_bob", "t2"): [("b2",)]}
    for _ in range(4):
        for (user, tenant), expected in want.items():
            with connect(inst.port, user=user) as conn:
                if tenant:
                    simple(conn, f"set app.tenant = '{tenant}'")
                for _ in range(3):
                    got = simple(conn, sql)
                    expect(got == expected, f"{user} with tenant {tenant} read {got}, "
                                            f"expected {expected}")
    ok("under RLS each role and tenant reads only its own rows, hits included")


CHECKER_SECONDS = 6


# Each row of the checker is written through one write path of its own (what the statement
# writes through, and how): (name, setup SQL with {r} for the row, the write with {r} and {v},
# the read with {r} that returns the row's version).
CHECKER_PATHS = [
    ("update, simple", "", "update cache_checker set version = {v} where id = {r}",
     "select version from cache_checker where id = {r}"),
    ("update, extended", "", "EXTENDED update cache_checker set version = {v} where id = {r}",
     "select version from cache_checker where id = {r}"),
    ("update in a transaction", "", "TRANSACTION update cache_checker set version = {v} where id = {r}",
     "select version from cache_checker where id = {r}"),
    ("updatable view", "", "update cache_checker_v set version = {v} where id = {r}",
     "select version from cache_checker where id = {r}"),
    ("trigger", "insert into cache_checker_src values ({r}, 0)",
     "update cache_checker_src set version = {v} where id = {r}",
     "select version from cache_checker where id = {r}"),
    ("FK ON UPDATE CASCADE", "insert into cache_checker_parent values ({r} * 1000000);"
     "insert into cache_checker_child values ({r}, {r} * 1000000)",
     "update cache_checker_parent set k = {r} * 1000000 + {v} where k / 1000000 = {r}",
     "select k - {r} * 1000000 from cache_checker_child where id = {r}"),
    ("MERGE", "", "merge into cache_checker t using (select {r} as id, {v} as v) s on t.id = s.id "
     "when matched then update set version = s.v",
     "select version from cache_checker where id = {r}"),
    ("COPY FROM", "insert into cache_checker_log values ({r}, 0)", "COPY {r}\t{v}",
     "select max(version) from cache_checker_log where id = {r}"),
    ("TRUNCATE and INSERT", "create table if not exists cache_checker_t{r} (version int);"
     "insert into cache_checker_t{r} values (0)",
     "begin; truncate cache_checker_t{r}; insert into cache_checker_t{r} values ({v}); commit",
     "select version from cache_checker_t{r}"),
    ("DO", "", "do $$begin update cache_checker set version = {v} where id = {r}; end$$",
     "select version from cache_checker where id = {r}"),
    ("CALL", "", "call cache_checker_set({r}, {v})",
     "select version from cache_checker where id = {r}"),
    ("a function", "", "select cache_checker_fn({r}, {v})",
     "select version from cache_checker where id = {r}"),
    # Writes of one key's rows, and reads of one key or of the whole table.
    ("update by key, parameters", "",
     "PARAMS update cache_checker set version = {v} where id = {r}",
     "PARAMS select version from cache_checker where id = {r}"),
    ("update by key, quoted", "", "update cache_checker set version = {v} where id = '{r}'",
     "select version from cache_checker c where c.id = {r} and {r} = id"),
    ("update by key, whole table read", "",
     "update cache_checker set version = {v} where id = {r}",
     "select max(version) filter (where id = {r}) from cache_checker"),
    ("delete and insert by key", "insert into cache_checker_k values ({r}, 0)",
     "begin; delete from cache_checker_k where id = {r}; "
     "insert into cache_checker_k values ({r}, {v}); commit",
     "select version from cache_checker_k where id = {r}"),
]


def stale_reads(case, *extra, instances=1):
    """Runs writers (one row per write path) and readers (simple and extended protocol) through
    `instances` pgstash instances, each reader on another instance than its row's writer;
    returns (reads, the staleness in seconds of each stale read: how long before the read was
    sent a newer version had been acknowledged)."""
    rows = len(CHECKER_PATHS)
    setup("drop table if exists cache_checker cascade; drop table if exists cache_checker_src;"
          "drop table if exists cache_checker_child; drop table if exists cache_checker_parent;"
          "drop table if exists cache_checker_log; drop table if exists cache_checker_k;"
          + "".join(f"drop table if exists cache_checker_t{r};" for r in range(1, rows + 1)) +
          "create table cache_checker (id int primary key, version int);"
          f"insert into cache_checker select g, 0 from generate_series(1, {rows}) g;"
          "create view cache_checker_v as select id, version from cache_checker;"
          "create table cache_checker_src (id int primary key, version int);"
          "create or replace function cache_checker_copy() returns trigger language plpgsql as "
          "$$begin update cache_checker set version = new.version where id = new.id; "
          "return new; end$$;"
          "create trigger cache_checker_copy after update on cache_checker_src "
          "for each row execute function cache_checker_copy();"
          "create table cache_checker_parent (k int primary key);"
          "create table cache_checker_child (id int primary key, "
          "k int references cache_checker_parent (k) on update cascade);"
          "create table cache_checker_log (id int, version int);"
          "create table cache_checker_k (id int primary key, version int);"
          "create or replace procedure cache_checker_set(r int, v int) language sql as "
          "$$update cache_checker set version = v where id = r$$;"
          "create or replace function cache_checker_fn(r int, v int) returns int language sql as "
          "$$update cache_checker set version = v where id = r returning v$$")
    for r, (_, row_setup, _, _) in enumerate(CHECKER_PATHS, start=1):
        if row_setup:
            setup(row_setup.format(r=r))
    insts = [start_cached(case, TRANSACTION, *extra,
                          *([f'invalidation.slot = "checker_{i}"'] if instances > 1 else []))
             for i in range(instances)]
    acknowledged = [0] * (rows + 1)  # per row: the last version whose commit returned
    acked_at = [{} for _ in range(rows + 1)]  # per row: version -> when its commit returned
    lock = threading.Lock()
    stop = time.monotonic() + CHECKER_SECONDS
    counts = {"reads": 0, "writes": 0}
    staleness = []
    errors = []

    def write(conn, sql, row, version):
        if sql.startswith("PARAMS "):
            conn.execute(sql.removeprefix("PARAMS ").replace("{v}", "%(v)s").replace("{r}", "%(r)s"),
                         {"v": version, "r": row})
        elif sql.startswith("EXTENDED "):
            conn.execute(sql.removeprefix("EXTENDED "))
        elif sql.startswith("TRANSACTION "):
            with conn.transaction():
                conn.execute(sql.removeprefix("TRANSACTION "))
        elif sql.startswith("COPY "):
            with conn.cursor().copy("copy cache_checker_log from stdin") as copy:
                copy.write(sql.removeprefix("COPY ") + "\n")
        else:
            simple(conn, sql)

    def writer(row):
        _, _, template, _ = CHECKER_PATHS[row - 1]
        try:
            with connect(insts[row % instances].port) as conn:
                version = 0
                while time.monotonic() < stop:
                    version += 1
                    if template.startswith("PARAMS "):
                        write(conn, template, row, version)
                    else:
                        write(conn, template.format(r=row, v=version), row, version)
                    with lock:
                        acknowledged[row] = version
                        acked_at[row][version] = time.monotonic()
                        counts["writes"] += 1
                    time.sleep(0.01)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    def reader(row, extended):
        template = CHECKER_PATHS[row - 1][3]
        params = None
        if template.startswith("PARAMS "):
            template = template.removeprefix("PARAMS ")
            if extended:
                template, params = template.replace("{r}", "%s"), (row,)
        sql = template.format(r=row)
        try:
            with connect(insts[(row + 1) % instances].port) as conn:
                while time.monotonic() < stop:
                    with lock:
                        floor = acknowledged[row]
                    sent = time.monotonic()
                    if extended:
                        got = conn.execute(sql, params).fetchone()[0]
                    else:
                        got = simple(conn, sql)[0][0]
                    with lock:
                        counts["reads"] += 1
                        if int(got) < floor:
                            staleness.append(sent - acked_at[row][int(got) + 1])
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(row,), daemon=True)
               for row in range(1, rows + 1)]
    threads += [threading.Thread(target=reader, args=(1 + i % rows, i % 2 == 1), daemon=True)
                for i in range(2 * rows)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CHECKER_SECONDS + 20)
    expect(not errors, f"a checker client failed: {errors[:1]}")
    print(f"   {counts['writes']} writes, {counts['reads']} reads, {len(staleness)} stale"
          + (f", stale by up to {max(staleness) * 1000:.0f} ms" if staleness else ""), flush=True)
    return counts["reads"], staleness


def case_stale_read_checker(case):
    reads, stale = stale_reads(case)
    expect(reads > 100, f"only {reads} reads")
    expect(not stale, f"{len(stale)} stale reads of {reads}")
    ok(f"0 stale reads in {reads}")


def case_stale_read_checker_fails_without_invalidation(case):
    os.environ["PGSTASH_TEST_DISABLE_INVALIDATION"] = "1"
    try:
        reads, stale = stale_reads(case)
    finally:
        del os.environ["PGSTASH_TEST_DISABLE_INVALIDATION"]
    expect(stale, f"the checker saw no stale read in {reads} with invalidation off")
    ok(f"with invalidation off the checker reports {len(stale)} stale reads of {reads}")


# Two instances following the replication stream: a reader of a row is on the other instance
# than its writer, so only the stream tells it of the write.
FOLLOWING = ["invalidation.replication = true", "cache.default_ttl = 0"]
# The stream's lag as the default mode may show it: the test cluster commits without waiting
# for the WAL flush (the WAL writer sends it to the stream within 3 x 200 ms), and the sanitizer
# build is slow. bench/run measures the real lag.
LAG_BOUND = 2.0


def case_stale_read_checker_two_instances_strict(case):
    reads, stale = stale_reads(case, *FOLLOWING, 'cache.consistency = "strict"', instances=2)
    expect(reads > 100, f"only {reads} reads")
    expect(not stale, f"strict mode: {len(stale)} stale reads of {reads} across two instances")
    ok(f"strict mode, two instances: 0 stale reads in {reads}")


def case_stale_read_checker_two_instances_default(case):
    reads, stale = stale_reads(case, *FOLLOWING, instances=2)
    expect(reads > 100, f"only {reads} reads")
    worst = max(stale, default=0.0)
    expect(worst <= LAG_BOUND, f"default mode: a read {worst:.3f} s stale across two instances")
    ok(f"default mode, two instances: {len(stale)} stale reads of {reads}, the stalest "
       f"{worst * 1000:.0f} ms behind (bound {LAG_BOUND * 1000:.0f} ms)")


CASES = [
    ("hits_transaction", case_hits_transaction, CASE_TIMEOUT),
    ("hits_session", case_hits_session, CASE_TIMEOUT),
    ("extended_hits_transaction", case_extended_hits_transaction, CASE_TIMEOUT),
    ("extended_hits_session", case_extended_hits_session, CASE_TIMEOUT),
    ("pgbench_hits", case_pgbench_hits, 2 * CASE_TIMEOUT),
    ("protocol_deallocate_with_cache", case_protocol_deallocate_with_cache, CASE_TIMEOUT),
    ("writes_transaction", case_writes_transaction, 4 * CASE_TIMEOUT),
    ("writes_session", case_writes_session, 4 * CASE_TIMEOUT),
    ("transaction_hits_transaction", case_transaction_hits_transaction, CASE_TIMEOUT),
    ("transaction_hits_session", case_transaction_hits_session, CASE_TIMEOUT),
    ("default_isolation_bypass", case_default_isolation_bypass, CASE_TIMEOUT),
    ("set_role_user_schema", case_set_role_user_schema, CASE_TIMEOUT),
    ("no_stampede", case_no_stampede, CASE_TIMEOUT),
    ("rules", case_rules, CASE_TIMEOUT),
    ("view_replaced", case_view_replaced, CASE_TIMEOUT),
    ("bad_store", case_bad_store, 2 * CASE_TIMEOUT),
    ("row_keys", case_row_keys, 2 * CASE_TIMEOUT),
    ("write_under_set_local_path", case_write_under_set_local_path, CASE_TIMEOUT),
    ("rollback_keeps_entry", case_rollback_keeps_entry, CASE_TIMEOUT),
    ("stable_call_keeps_entries", case_stable_call_keeps_entries, CASE_TIMEOUT),
    ("commit_visible_to_others", case_commit_visible_to_others, CASE_TIMEOUT),
    ("not_cached", case_not_cached, 2 * CASE_TIMEOUT),
    ("row_level_security", case_row_level_security, 2 * CASE_TIMEOUT),
    ("stale_read_checker", case_stale_read_checker, CASE_TIMEOUT),
    ("stale_read_checker_fails_without_invalidation",
     case_stale_read_checker_fails_without_invalidation, CASE_TIMEOUT),
    ("stale_read_checker_two_instances_strict", case_stale_read_checker_two_instances_strict,
     CASE_TIMEOUT),
    ("stale_read_checker_two_instances_default", case_stale_read_checker_two_instances_default,
     CASE_TIMEOUT),
]


if __name__ == "__main__":
    sys.exit(main("cache_test", CASES))
