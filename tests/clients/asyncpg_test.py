#!/usr/bin/python3
"""asyncpg through pgstash, with asyncpg's default settings, in session and transaction pooling.

Run with Debian's /usr/bin/python3 (python3-asyncpg, python3-psycopg for the harness). asyncpg
prepares every query as a named statement (__asyncpg_stmt_N__, counted from 1 on every
connection, so two clients use the same names for different queries) and keeps them in a cache
of 100; this is the traffic PgBouncer needs statement_cache_size=0 for, and pgstash must carry it
as is. Each scenario runs once against PostgreSQL directly and once through a pgstash in each
mode (a pool of 3 server connections in transaction mode, so that clients meet each other's
connections); the two runs must give the same results.

  queries      fetch/fetchrow/fetchval with typed parameters, execute, executemany, more distinct
               queries than the statement cache holds, explicit prepared statements
  transactions rollback on an exception, a nested transaction (savepoint), isolation options
  cursors      cursors inside a transaction: iteration with prefetch, fetch/forward, two at once
  copy         copy_records_to_table (binary COPY), copy_to_table, copy_from_query, copy_from_table
  errors       failing statements of several kinds, each followed by work on the same connection
  types        introspection of a custom enum, composite and domain; a custom json codec
  pool         an asyncpg Pool with 40 concurrent tasks, prepared statements and transactions
  many_clients 8 connections at once whose statement names mean different queries

Arguments, if any, name the cases to run (e.g. queries_transaction; all by default).
"""

import asyncio
import datetime
import decimal
import hashlib
import io
import json
import os

import asyncpg

from case_harness import CLUSTER, DB, admin, expect, main, ok

MODES = {
    "session": ['pool.mode = "session"', "pool.size = 10"],
    "transaction": ['pool.mode = "transaction"', "pool.size = 3"],
}
TIMEOUT = 60


async def connect(port, **kw):
    return await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database=DB,
                                 timeout=10, server_settings={"application_name": "asyncpg_test"},
                                 **kw)


def records(rows):
    return [tuple(r) for r in rows]


async def sc_queries(conn, t):
    out = {}
    out["fetchval"] = await conn.fetchval("select $1::int + $2", 40, 2)
    stamp = datetime.datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=datetime.timezone.utc)
    out["fetchrow"] = tuple(await conn.fetchrow(
        "select $1::text, $2::bytea, $3::numeric, $4::int[], $5::timestamptz, $6::jsonb, $7::int,"
        " $8::float8, $9::bool, $10::uuid::text",
        "héllo ✓", b"\x00\xff" * 50, decimal.Decimal("12345.678901"), [1, None, 3], stamp,
        '{"a": [1, 2, "x"]}', None, 1.5, True, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
    out["fetch"] = hashlib.md5(repr(records(await conn.fetch(
        "select g, md5(g::text), repeat('x', g % 50) from generate_series(1, $1) g", 5000))
    ).encode()).hexdigest()
    await conn.execute(f"create table {t} (id int primary key, name text, data bytea)")
    await conn.executemany(f"insert into {t} values ($1, $2, $3)",
                           [(i, f"n{i}", bytes([i % 256]) * i) for i in range(500)])
    out["update"] = await conn.execute(f"update {t} set name = name || $1 where id < $2", "!", 100)
    out["table"] = tuple(await conn.fetchrow(
        f"select count(*), sum(length(data)), count(*) filter (where name like '%!') from {t}"))
    # More distinct queries than the default statement cache (100): asyncpg closes the
    # statements it evicts, then prepares the first ones again.
    out["distinct"] = [await conn.fetchval(f"select {i}::int + $1", 1) for i in range(150)]
    out["again"] = [await conn.fetchval(f"select {i}::int + $1", 2) for i in range(10)]
    stmt = await conn.prepare(f"select id, name from {t} where id = $1")
    out["prepared"] = [tuple(await stmt.fetchrow(i)) for i in (1, 150, 499)]
    out["prepared_types"] = [a.name for a in stmt.get_attributes()]
    out["prepared_explain"] = "Index Scan" in json.dumps(await stmt.explain(7))
    return out


async def sc_transactions(conn, t):
    out = {}
    await conn.execute(f"create table {t} (id int primary key, v text)")
    try:
        async with conn.transaction():
            await conn.execute(f"insert into {t} values (1, 'rolled back')")
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    out["after_rollback"] = conn.is_in_transaction()
    async with conn.transaction():
        await conn.execute(f"insert into {t} values (2, 'outer')")
        try:
            async with conn.transaction():  # a savepoint
                await conn.execute(f"insert into {t} values (3, 'inner')")
                await conn.execute(f"insert into {t} values (2, 'duplicate')")
        except asyncpg.UniqueViolationError as e:
            out["inner_error"] = e.sqlstate
        await conn.execute(f"insert into {t} values (4, 'after savepoint')")
    async with conn.transaction(isolation="serializable", readonly=True):
        out["isolation"] = await conn.fetchval("show transaction_isolation")
        out["readonly"] = await conn.fetchval("show transaction_read_only")
    tr = conn.transaction()
    await tr.start()
    await conn.execute(f"insert into {t} values (5, 'manual')")
    await tr.rollback()
    out["rows"] = records(await conn.fetch(f"select * from {t} order by id"))
    return out


async def sc_cursors(conn, t):
    out = {}
    async with conn.transaction():
        out["iterated"] = [r[0] async for r in
                           conn.cursor("select g from generate_series(1, $1) g", 1000, prefetch=100)]
        cur = await conn.cursor("select g, md5(g::text) from generate_series(1, 100) g")
        out["fetch10"] = records(await cur.fetch(10))
        out["forward"] = await cur.forward(20)
        out["fetchrow"] = tuple(await cur.fetchrow())
        a = await conn.cursor("select g from generate_series(1, 50) g")
        b = await conn.cursor("select -g from generate_series(1, 50) g")
        both = []
        for _ in range(5):
            both += [r[0] for r in await a.fetch(7)] + [r[0] for r in await b.fetch(3)]
        out["interleaved"] = both
        out["rest"] = records(await cur.fetch(100))
    out["after"] = await conn.fetchval("select 'after cursors'")
    return out


async def sc_copy(conn, t):
    out = {}
    await conn.execute(f"create table {t} (id int primary key, name text, data bytea, j jsonb,"
                       " ts timestamptz, arr int[])")
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    rows = [(i, f"name {i} ✓\ttab", bytes(range(i % 256)), json.dumps({"i": i}),
             base + datetime.timedelta(seconds=i), [i, None, -i]) for i in range(3000)]
    out["records"] = await conn.copy_records_to_table(t, records=rows)
    buf = io.BytesIO()
    out["from_query"] = await conn.copy_from_query(f"select * from {t} order by id", output=buf,
                                                   format="csv", header=True)
    out["csv_md5"] = hashlib.md5(buf.getvalue()).hexdigest()
    text = io.BytesIO()
    await conn.copy_from_query(f"select * from {t} order by id", output=text)
    await conn.execute(f"create table {t}_b (like {t})")
    text.seek(0)
    out["to_table"] = await conn.copy_to_table(f"{t}_b", source=text)
    again = io.BytesIO()
    out["from_table"] = await conn.copy_from_table(f"{t}_b", output=again, format="binary")
    out["binary_len"] = len(again.getvalue())
    out["same"] = await conn.fetchval(f"select count(*) from {t} a join {t}_b b using (id)"
                                      " where a is not distinct from b")
    return out


async def sc_errors(conn, t):
    out = {}
    await conn.execute(f"create table {t} (id int primary key)")
    errors = []

    async def expect_error(coro, exc):
        try:
            await coro
        except exc as e:
            errors.append((type(e).__name__, e.sqlstate if hasattr(e, "sqlstate") else None))
        else:
            errors.append(("no error", None))
        errors.append(await conn.fetchval("select $1::text", f"ok after {exc.__name__}"))

    await expect_error(conn.fetchval("select 1 / $1::int", 0), asyncpg.DivisionByZeroError)
    await expect_error(conn.execute("select * from no_such_table_xyz"), asyncpg.UndefinedTableError)
    await expect_error(conn.prepare("selec 1"), asyncpg.PostgresSyntaxError)
    await expect_error(conn.executemany(f"insert into {t} values ($1)", [(1,), (2,), (1,)]),
                       asyncpg.UniqueViolationError)
    await expect_error(conn.fetch("select 1 / (g - 500) from generate_series(1, 1000) g"),
                       asyncpg.DivisionByZeroError)
    await expect_error(conn.fetchval("select $1::int", "not an int"), asyncpg.DataError)

    async def in_transaction():
        async with conn.transaction():
            await conn.execute(f"insert into {t} values (10)")
            await conn.execute(f"insert into {t} values (10)")

    await expect_error(in_transaction(), asyncpg.UniqueViolationError)

    async def in_cursor():
        async with conn.transaction():
            async for _ in conn.cursor("select 1 / (g - 500) from generate_series(1, 1000) g",
                                       prefetch=100):
                pass

    await expect_error(in_cursor(), asyncpg.DivisionByZeroError)
    out["errors"] = errors
    out["in_transaction"] = conn.is_in_transaction()
    out["rows"] = records(await conn.fetch(f"select * from {t} order by id"))
    return out


async def sc_types(conn, t):
    out = {}
    await conn.execute(f"""
        create type {t}_mood as enum ('sad', 'ok', 'happy');
        create type {t}_pair as (a int, b text, m {t}_mood);
        create domain {t}_posint as int check (value > 0);
        create table {t} (id int primary key, m {t}_mood, p {t}_pair, ms {t}_mood[], n {t}_posint,
                          j json)""")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.executemany(f"insert into {t} values ($1, $2, $3, $4, $5, $6)", [
        (1, "happy", (1, "one", "sad"), ["ok", "sad"], 5, {"k": [1, 2]}),
        (2, "sad", (2, None, None), [], 7, None),
    ])
    rows = await conn.fetch(f"select * from {t} order by id")
    out["rows"] = [(r["id"], r["m"], tuple(r["p"]), r["ms"], r["n"], r["j"]) for r in rows]
    out["composite_param"] = tuple(await conn.fetchval(f"select $1::{t}_pair", (9, "nine", "ok")))
    out["enum_array"] = await conn.fetchval(f"select $1::{t}_mood[]", ["happy", "happy"])
    try:
        await conn.execute(f"insert into {t} (id, n) values (3, $1)", -1)
    except asyncpg.CheckViolationError as e:
        out["domain"] = e.sqlstate
    return out


async def sc_pool(port, t):
    out = {}
    pool = await asyncpg.create_pool(host="127.0.0.1", port=port, user="postgres", database=DB,
                                     min_size=2, max_size=6, timeout=10)
    try:
        await pool.execute(f"create table {t} (id int primary key, v text)")

        async def task(i):
            async with pool.acquire() as c:
                async with c.transaction():
                    await c.execute(f"insert into {t} values ($1, $2)", i, f"task {i}")
                    mine = await c.fetchval(f"select v from {t} where id = $1", i)
                stmt = await c.prepare("select $1::int * $2::int")
                return mine, await stmt.fetchval(i, 3), await c.fetchval("select $1::text", str(i))

        out["tasks"] = await asyncio.gather(*(task(i) for i in range(40)))
        out["pool_fetch"] = records(await pool.fetch(f"select * from {t} order by id"))
    finally:
        await asyncio.wait_for(pool.close(), 20)
    return out


async def sc_many_clients(port, t):
    conns = [await connect(port) for _ in range(8)]
    try:
        async def client(k, conn):
            got = []
            queries = [f"select {k} * 100 + {q} + $1::int" for q in range(6)]
            for rnd in range(15):
                for q in (queries[k % 6:] + queries[:k % 6]):  # a different order per client
                    got.append(await conn.fetchval(q, rnd))
            return got

        return {"clients": await asyncio.gather(*(client(k, c) for k, c in enumerate(conns)))}
    finally:
        for c in conns:
            await c.close(timeout=10)


def with_connection(scenario):
    async def run(port, t):
        conn = await connect(port)
        try:
            return await scenario(conn, t)
        finally:
            await conn.close(timeout=10)
    return run


SCENARIOS = {
    "queries": with_connection(sc_queries),
    "transactions": with_connection(sc_transactions),
    "cursors": with_connection(sc_cursors),
    "copy": with_connection(sc_copy),
    "errors": with_connection(sc_errors),
    "types": with_connection(sc_types),
    "pool": sc_pool,
    "many_clients": sc_many_clients,
}


def first_difference(want, got):
    for key in want:
        if want[key] != got.get(key):
            return f"{key}: PostgreSQL gave {str(want[key])[:300]!r}, pgstash {str(got.get(key))[:300]!r}"
    return f"keys differ: {sorted(want)} vs {sorted(got)}"


def make_case(name, mode):
    def case(c):
        tag = f"asyncpg_{name}_{os.getpid()}"

        def drop():
            with admin(DB) as a:
                for suffix in ("direct", mode):
                    a.execute(f"drop table if exists {tag}_{suffix}, {tag}_{suffix}_b")
                    a.execute(f"drop table if exists {tag}_{suffix} cascade")
                    for typ in ("_pair", "_mood", "_posint"):
                        a.execute(f"drop type if exists {tag}_{suffix}{typ} cascade")
        c.cleanups.append(drop)
        drop()
        want = asyncio.run(SCENARIOS[name](int(CLUSTER["PGSTASH_PG_PORT"]), f"{tag}_direct"))
        inst = c.start(*MODES[mode])
        got = asyncio.run(SCENARIOS[name](inst.port, f"{tag}_{mode}"))
        c.expect_alive(inst, f"during {name}")
        expect(got == want, first_difference(want, got))
        ok(f"{name}, {mode} pooling: same results as PostgreSQL directly")
    return case


CASES = [(f"{name}_{mode}", make_case(name, mode), TIMEOUT)
         for name in SCENARIOS for mode in MODES]

if __name__ == "__main__":
    print(f"asyncpg {asyncpg.__version__}", flush=True)
    raise SystemExit(main("asyncpg_test", CASES))
