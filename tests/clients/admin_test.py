#!/usr/bin/python3
"""The admin port (admin.port): its HTTP API against a live pgstash, with psycopg clients making
the traffic it reports.

  token
      /health answers without a token; every other endpoint answers 401 (with WWW-Authenticate)
      without one or with a wrong one, and 200 with the right one, from admin.token or from
      PGSTASH_ADMIN_TOKEN; pgstash refuses to start with an admin port and no token.
  metrics
      /metrics passes `promtool check metrics`, and its counters move with traffic: requests,
      transactions, bytes, cache hits and misses, uncacheable reasons, the latency histogram.
  pools_clients_servers
      two clients in transaction mode, one inside a transaction: /api/clients shows it active on
      the server connection /api/servers lists with the backend pid the client sees; /api/pools
      counts cl_active, cl_idle and sv_active as PgBouncer names them; the client that leaves is
      gone from the list.
  cache_and_invalidation
      /api/cache shows hits, the table's entries and hits; POST /api/cache/invalidate by table,
      by statement pattern (LIKE; one matching nothing keeps the entry), by database and for
      everything each makes the next read go to the server; bad bodies get 400.
  entries_paged
      /api/cache/entries lists entries most hit first, paged by limit and offset.
  config_masked
      /api/config shows every setting with its value, the token masked.
  ready
      /ready is 200 while PostgreSQL answers and 503 (naming the server check) once it is
      stopped; with the replication stream on, it reports the stream's state.
  console
      psql on database `pgstash` as a user of admin.users: SHOW POOLS, CLIENTS, SERVERS, STATS,
      CONFIG, VERSION, CACHE, CACHE TABLES and CACHE ENTRIES answer with PgBouncer's column names
      and the same facts the HTTP API gives; INVALIDATE TABLE, STATEMENT and ALL send the next
      read to the server; an unknown command is an error that leaves the session usable.
  console_refused
      a password is asked for even under auth.method = trust (none or a wrong one: 28P01); a
      user not in admin.users, and any user when it is empty, gets 28000; the extended protocol
      gets 0A000.
  bad_requests
      a body over 64 KiB gets 413, garbage gets 400, connections over admin.max_connections get
      503, unknown paths 404 and wrong methods 405; pgstash keeps serving clients throughout.
  warming
      cache.warm_statements run at start (a failing one is logged), so that the first read of a
      client is a hit; after POST /api/cache/invalidate {"all": true} they run again, and the
      next read is a hit with the data as it is now.
  pause_resume
      POST /api/pause of a database while a client holds a transaction answers 202 after
      timeout_ms, /api/pools lists it as paused, another client's query waits; once the
      transaction commits the pause completes (200) with no server connection left in
      pg_stat_activity; POST /api/resume lets the waiting query run; the clients kept their
      connections; the console's PAUSE db and RESUME do the same; after a pause of everything
      one database cannot be resumed alone (409), all can; bad bodies get 400.

Arguments, if any, name the cases to run (all by default).
"""

import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import psycopg

from cache_test import server_calls, setup, simple
from case_harness import CASE_TIMEOUT, CLUSTER, SOURCE_DIR, connect, expect, main, ok
from case_harness import admin as admin_connection

TOKEN = "test-admin-token-0123456789"
# The auth file tests/lib/pgstash_instance.sh writes gives postgres this password.
PASSWORD = "postgres-secret"
TRANSACTION = ['pool.mode = "transaction"', "pool.size = 4"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Admin:
    """An HTTP client of one pgstash's admin port."""

    def __init__(self, port, token=TOKEN):
        self.port = port
        self.token = token

    def request(self, method, path, body=None, token=True, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {self.token if token is True else token}"
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, dict(resp.getheaders()), data

    def get(self, path, **kw):
        status, _, data = self.request("GET", path, **kw)
        expect(status == 200, f"GET {path}: {status} {data[:300]!r}")
        return json.loads(data) if not path.startswith("/metrics") else data.decode()

    def post(self, path, body):
        return self.request("POST", path, body=json.dumps(body) if not isinstance(body, str)
                            else body)


def start_admin(case, *extra):
    """A pgstash in transaction mode with its admin port on a free port and TOKEN."""
    port = free_port()
    inst = case.start(*TRANSACTION, f"admin.port = {port}", f'admin.token = "{TOKEN}"', *extra)
    return inst, Admin(port)


def eventually(what, fetch, accept, limit=10.0):
    """fetch() until accept(value); the state the admin port reports follows the sessions by
    a moment (a lease is given back after the answer is written)."""
    deadline = time.monotonic() + limit
    while True:
        value = fetch()
        if accept(value):
            return value
        expect(time.monotonic() < deadline, f"{what}: last seen {value}")
        time.sleep(0.05)


def metric(text, name, **labels):
    """The value of sample `name` with exactly `labels` in Prometheus text."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    line_start = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line[len(line_start):])
    raise AssertionError(f"no sample {line_start.strip()} in /metrics")


def one_row_table(table):
    """A table (id, v) holding (1, 'one'), made on PostgreSQL directly; the query that reads it."""
    setup(f"drop table if exists {table}; create table {table} (id int primary key, v text);"
          f"insert into {table} values (1, 'one')")
    return f"select v from {table} where id = 1"


def served_from_cache(conn, sql, table):
    """Reads `sql` until a read no longer reaches the server (the catalog look-up and the store
    are asynchronous)."""
    def reaches_server():
        before = server_calls(table)
        simple(conn, sql)
        return server_calls(table) - before
    eventually(f"{sql!r} served from the cache", reaches_server, lambda n: n == 0, limit=20)


# --- cases


def case_token(case):
    inst, admin = start_admin(case)
    status, _, body = admin.request("GET", "/health", token=False)
    expect(status == 200 and json.loads(body)["status"] == "ok", f"/health: {status} {body!r}")
    for path in ["/ready", "/metrics", "/api/pools", "/api/clients", "/api/servers", "/api/stats",
                 "/api/config", "/api/cache", "/api/cache/entries"]:
        for token in [False, "wrong-token", TOKEN[:-1]]:
            status, headers, _ = admin.request("GET", path, token=token)
            expect(status == 401, f"GET {path} with token {token!r}: {status}, expected 401")
            expect(headers.get("WWW-Authenticate") == "Bearer", f"401 without WWW-Authenticate")
        status, _, body = admin.request("GET", path)
        expect(status == 200, f"GET {path} with the token: {status} {body[:200]!r}")
    status, _, _ = admin.request("POST", "/api/cache/invalidate", body='{"all": true}', token=False)
    expect(status == 401, f"POST invalidate without a token: {status}")
    ok("every endpoint but /health needs the bearer token")

    port = free_port()
    from_env = case.start(*TRANSACTION, f"admin.port = {port}",
                          env={"PGSTASH_ADMIN_TOKEN": "from-the-environment"})
    env_admin = Admin(port, "from-the-environment")
    expect(env_admin.request("GET", "/api/pools")[0] == 200, "token from PGSTASH_ADMIN_TOKEN refused")
    expect(env_admin.request("GET", "/api/pools", token=TOKEN)[0] == 401, "another token accepted")
    ok("the token can come from PGSTASH_ADMIN_TOKEN")
    from_env.stop(show_log=False)

    config = os.path.join(case.root, "no-token.toml")
    with open(config, "w") as f:
        f.write(f"[admin]\nport = {free_port()}\n[listen]\nport = {free_port()}\n"
                f"unix_socket_dir = \"\"\n")
    refused = subprocess.run([os.environ["PGSTASH_BIN"], "--config", config], capture_output=True,
                             text=True, timeout=20, env=dict(os.environ, PGSTASH_ADMIN_TOKEN=""))
    expect(refused.returncode == 1 and "no admin token" in refused.stderr,
           f"pgstash with an admin port and no token: {refused.returncode} {refused.stderr!r}")
    ok("no token, no start")


def case_metrics(case):
    inst, admin = start_admin(case, "cache.enabled = true",
                              f'cache.path = "{os.path.join(case.root, "metrics-cache")}"')
    table = "admin_metrics"
    sql = one_row_table(table)
    with connect(inst.port) as conn:
        served_from_cache(conn, sql, table)
        before = admin.get("/metrics")
        for _ in range(20):
            simple(conn, sql)
        simple(conn, "select now()")
        with conn.transaction():
            conn.execute("select 1")
            conn.execute("select 2")
    after = admin.get("/metrics")
    check = subprocess.run(["promtool", "check", "metrics"], input=after, text=True,
                           capture_output=True)
    expect(check.returncode == 0, f"promtool check metrics failed: {check.stdout}{check.stderr}")
    ok("promtool check metrics passes")

    pool = {"database": "pgstash_test", "user": "postgres"}

    def moved(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    # 20 hits + now() + BEGIN, two selects, COMMIT (psycopg's transaction block).
    expect(moved("pgstash_requests_total", **pool) == 25,
           f"requests moved {moved('pgstash_requests_total', **pool)}, expected 25")
    expect(moved("pgstash_transactions_total", **pool) == 22,
           f"transactions moved {moved('pgstash_transactions_total', **pool)}, expected 22")
    expect(moved("pgstash_request_duration_seconds_count", **pool) == 25, "histogram count")
    expect(moved("pgstash_client_received_bytes_total", **pool) > 20 * len(sql), "bytes received")
    expect(moved("pgstash_client_sent_bytes_total", **pool) > 20 * 30, "bytes sent")
    expect(moved("pgstash_cache_hits_total") == 20, f"hits moved {moved('pgstash_cache_hits_total')}")
    expect(moved("pgstash_cache_uncacheable_total", reason="time_function") == 1,
           "now() not counted as time_function")
    expect(metric(after, "pgstash_cache_entries") >= 1, "no cache entry")
    expect(metric(after, "pgstash_cache_lmdb_map_used_bytes") > 0, "LMDB map use")
    eventually("an idle server connection in /metrics", lambda: admin.get("/metrics"),
               lambda m: metric(m, "pgstash_server_connections", **pool, state="idle") >= 1)
    ok("requests, transactions, bytes, latency, cache hits and reasons move with traffic")


def case_pools_clients_servers(case):
    inst, admin = start_admin(case)
    busy = connect(inst.port, autocommit=False)
    busy_pid = busy.execute("select pg_backend_pid()").fetchone()[0]  # opens a transaction
    idle = connect(inst.port)
    idle.execute("select 1")
    clients = eventually("two clients, one active and one idle",
                         lambda: admin.get("/api/clients")["clients"],
                         lambda cs: sorted(c["state"] for c in cs) == ["active", "idle"])
    active = next(c for c in clients if c["state"] == "active")
    expect(active["application_name"] == "admin_test" and active["database"] == "pgstash_test"
           and active["user"] == "postgres" and active["addr"].startswith("127.0.0.1:"),
           f"active client: {active}")
    servers = admin.get("/api/servers")["servers"]
    held = [s for s in servers if s["id"] == active["server_id"]]
    expect(len(held) == 1, f"the active client's server_id {active['server_id']} not in {servers}")
    expect(held[0]["pid"] == busy_pid and held[0]["state"] == "active"
           and held[0]["client_id"] == active["id"],
           f"server {held[0]} does not match backend pid {busy_pid}")
    ok("/api/clients and /api/servers agree with the backend the client is on")
    pools = eventually("one pool with one active and one idle client",
                       lambda: admin.get("/api/pools")["pools"],
                       lambda ps: len(ps) == 1 and ps[0]["cl_active"] == 2
                       and ps[0]["cl_linked"] == 1 and ps[0]["sv_active"] == 1)
    p = pools[0]
    expect(p["cl_waiting"] == 0 and p["pool_mode"] == "transaction" and p["pool_size"] == 4,
           f"pool row {p}")
    ok("/api/pools counts clients and servers by state, cl_active as PgBouncer counts it")
    busy.rollback()
    busy.close()
    eventually("the client that left gone from /api/clients",
               lambda: admin.get("/api/clients")["clients"], lambda cs: len(cs) == 1)
    idle.close()
    # A client's bytes are its own: a name that is not UTF-8 must not break the listing.
    with socket.create_connection(("127.0.0.1", inst.port), timeout=10) as odd:
        params = b"user\0postgres\0database\0pgstash_test\0application_name\0caf\xe9\0\0"
        odd.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        greeting = b""
        while not greeting.endswith(b"Z\0\0\0\x05I"):
            chunk = odd.recv(4096)
            expect(chunk, f"pgstash closed a login with a Latin-1 application_name: {greeting!r}")
            greeting += chunk
        listed = eventually("the client with a Latin-1 name",
                            lambda: admin.get("/api/clients")["clients"], lambda cs: len(cs) == 1)
        expect(listed[0]["application_name"] == "caf\ufffd", f"listed {listed}")
        expect(admin.request("GET", "/metrics")[0] == 200, "/metrics failed")
    stats = admin.get("/api/stats")["stats"]
    expect(stats and stats[0]["total_query_count"] >= 3, f"stats {stats}")
    ok("a client that leaves is gone from the list")


def cached_instance(case, *extra):
    path = os.path.join(case.root, f"{case.name}-cache")
    return start_admin(case, "cache.enabled = true", f'cache.path = "{path}"', *extra)


def case_cache_and_invalidation(case):
    inst, admin = cached_instance(case)
    table = "admin_invalidate"
    sql = one_row_table(table)
    with connect(inst.port) as conn:
        served_from_cache(conn, sql, table)
        for _ in range(5):
            simple(conn, sql)
        cache = admin.get("/api/cache")
        rows = [t for t in cache["tables"] if t["table"] == table]
        expect(rows and rows[0]["entries"] == 1 and rows[0]["hits"] >= 5
               and rows[0]["database"] == "pgstash_test", f"table rows {cache['tables']}")
        expect(cache["hits"] >= 5 and 0 < cache["hit_rate"] <= 1, f"cache {cache}")
        ok("/api/cache shows the table's entry and its hits")

        def next_read_reaches_server(body, what):
            status, _, answer = admin.post("/api/cache/invalidate", body)
            expect(status == 200, f"invalidate {body}: {status} {answer!r}")
            before = server_calls(table)
            expect(simple(conn, sql) == [("one",)], "wrong rows")
            expect(server_calls(table) - before == 1, f"after invalidating {what}, the read "
                   "did not reach the server")
            served_from_cache(conn, sql, table)
            ok(f"invalidating {what} sends the next read to the server")

        status, _, answer = admin.post("/api/cache/invalidate", {"statement": "%from nothing_here%"})
        expect(status == 200 and json.loads(answer)["invalidated"]["entries"] == 0,
               f"a pattern matching nothing: {status} {answer!r}")
        served_from_cache(conn, sql, table)
        next_read_reaches_server({"statement": f"select v from {table} where%"},
                                 "the statements LIKE a pattern")
        next_read_reaches_server({"database": "pgstash_test", "statement": f"%{table}%"},
                                 "the statements LIKE a pattern in one database")
        next_read_reaches_server({"database": "pgstash_test", "table": f"public.{table}"}, "the table")
        next_read_reaches_server({"table": table}, "the table in every database")
        next_read_reaches_server({"database": "pgstash_test"}, "the database")
        next_read_reaches_server({"all": True}, "everything")
        for bad in ["not json", "[1]", {}, {"database": ""}, {"all": 1}, {"all": False}]:
            status, _, _ = admin.post("/api/cache/invalidate", bad)
            expect(status == 400, f"invalidate {bad!r}: {status}, expected 400")
        ok("bad invalidation bodies get 400")


def case_entries_paged(case):
    inst, admin = cached_instance(case)
    table = "admin_entries"
    setup(f"drop table if exists {table}; create table {table} (id int primary key, v text);"
          f"insert into {table} select g, 'v' || g from generate_series(1, 3) g")
    with connect(inst.port) as conn:
        for i in (1, 2, 3):
            served_from_cache(conn, f"select v from {table} where id = {i}", table)
        for _ in range(10):
            simple(conn, f"select v from {table} where id = 2")
    first = admin.get("/api/cache/entries?limit=2")
    expect(first["total"] == 3 and len(first["entries"]) == 2, f"first page {first}")
    top = first["entries"][0]
    expect(top["statement"] == f"select v from {table} where id = 2" and top["tables"] == [table]
           and top["hits"] >= 10 and top["size"] > 0 and top["ttl_seconds_left"] > 0,
           f"most hit entry {top}")
    second = admin.get("/api/cache/entries?limit=2&offset=2")
    expect(len(second["entries"]) == 1, f"second page {second}")
    keys = {e["key"] for e in first["entries"] + second["entries"]}
    expect(len(keys) == 3, "pages overlap")
    for bad in ["limit=0", "limit=1001", "limit=x", "offset=-1"]:
        status, _, _ = admin.request("GET", f"/api/cache/entries?{bad}")
        expect(status == 400, f"entries?{bad}: {status}")
    ok("entries are listed most hit first, paged")


def case_config_masked(case):
    inst, admin = start_admin(case, "pool.size = 7")
    status, _, body = admin.request("GET", "/api/config")
    expect(status == 200 and TOKEN.encode() not in body, "the token shows in /api/config")
    settings = json.loads(body)["settings"]
    expect(settings["admin.token"] == "********", f"token shown as {settings['admin.token']!r}")
    expect(settings["pool.size"] == 7 and settings["pool.mode"] == "transaction"
           and settings["cache.enabled"] is False, "settings values")
    expect(len(settings) >= 50, f"only {len(settings)} settings")
    ok("/api/config lists the settings, the token masked")


def case_ready(case):
    cluster_dir, cluster = case.private_cluster()
    port = free_port()
    case.start(*TRANSACTION, f"admin.port = {port}", f'admin.token = "{TOKEN}"',
               cluster_dir=cluster_dir)
    admin = Admin(port)
    ready = admin.get("/ready")
    expect(ready["ready"] is True and ready["checks"]["server"]["ok"] is True, f"/ready {ready}")
    ok("/ready is 200 while PostgreSQL answers")
    subprocess.run([os.path.join(SOURCE_DIR, "scripts", "pg_test_cluster.sh"), "stop", cluster_dir],
                   check=True, stdout=subprocess.DEVNULL)
    status, _, body = admin.request("GET", "/ready")
    answer = json.loads(body)
    expect(status == 503 and answer["ready"] is False and answer["checks"]["server"]["ok"] is False
           and "connect" in answer["checks"]["server"]["error"], f"/ready: {status} {answer}")
    ok("/ready is 503 once PostgreSQL is gone, naming the check")


def case_ready_with_stream(case):
    port = free_port()
    path = os.path.join(case.root, f"{case.name}-cache")
    inst = case.start(*TRANSACTION, f"admin.port = {port}", f'admin.token = "{TOKEN}"',
                      "cache.enabled = true", f'cache.path = "{path}"',
                      "invalidation.replication = true", 'invalidation.slot = "t_admin_ready"')
    admin = Admin(port)
    with connect(inst.port) as conn:
        conn.execute("select 1")
    deadline = time.monotonic() + 20
    while True:
        status, _, body = admin.request("GET", "/ready")
        answer = json.loads(body)
        stream = answer["checks"].get("replication", {}).get("pgstash_test")
        if status == 200 and stream and stream["state"] == "following":
            break
        expect(time.monotonic() < deadline, f"/ready never reported the stream following: {answer}")
        time.sleep(0.1)
    metrics = admin.get("/metrics")
    expect(metric(metrics, "pgstash_replication_stream_state", database="pgstash_test",
                  state="following") == 1, "stream state metric")
    expect(metric(metrics, "pgstash_replication_last_message_age_seconds",
                  database="pgstash_test") < 10, "stream last message age")
    ok("/ready and /metrics report the replication stream following")


def raw(port, data):
    """Sends `data` on a new connection and returns what comes back before the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # closed while sending: the answer may still be there
        answer = b""
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except OSError:
            pass
        return answer


def console(port, *commands, user="postgres", password=PASSWORD):
    """Runs `commands` in one psql session on the console; (exit status, [(header, rows)] per
    result, stderr). Results are told apart by the blank line psql prints after an error or
    between results; callers that need several results run one command per call."""
    args = [os.path.join(CLUSTER["PGSTASH_PG_BIN"], "psql"), "-X", "-A", "-F", "|", "-P",
            "footer=off", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", "pgstash"]
    for c in commands:
        args += ["-c", c]
    args.append("-w")  # never prompt
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    env.pop("PGPASSWORD", None)
    if password is not None:
        env["PGPASSWORD"] = password
    done = subprocess.run(args, capture_output=True, text=True, timeout=20, env=env)
    results = []
    lines = done.stdout.splitlines()
    i = 0
    while i < len(lines):
        header = lines[i].split("|")
        rows = []
        i += 1
        while i < len(lines) and lines[i] != "":
            rows.append(dict(zip(header, lines[i].split("|"))))
            i += 1
        results.append((header, rows))
        i += 1
    return done.returncode, results, done.stderr


def one_result(port, command):
    status, results, stderr = console(port, command)
    expect(status == 0 and len(results) == 1, f"{command}: {status} {results} {stderr}")
    return results[0]


PGBOUNCER_POOLS = ["database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle",
                   "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode"]


def case_console(case):
    path = os.path.join(case.root, f"{case.name}-cache")
    inst, admin = start_admin(case, 'admin.users = ["postgres"]', "cache.enabled = true",
                              f'cache.path = "{path}"')
    table = "admin_console"
    sql = one_row_table(table)
    busy = connect(inst.port, autocommit=False)
    busy_pid = busy.execute("select pg_backend_pid()").fetchone()[0]
    header, pools = eventually("SHOW POOLS with the busy client's pool",
                               lambda: one_result(inst.port, "SHOW POOLS;"),
                               lambda r: len(r[1]) == 1 and r[1][0]["sv_active"] == "1")
    expect(header == PGBOUNCER_POOLS, f"SHOW POOLS columns {header}")
    expect(pools[0]["database"] == "pgstash_test" and pools[0]["cl_active"] == "1"
           and pools[0]["pool_mode"] == "transaction", f"SHOW POOLS {pools}")
    ok("SHOW POOLS has PgBouncer's columns and the busy pool")
    header, clients = one_result(inst.port, "show clients")
    wanted = ["type", "user", "database", "state", "addr", "port", "ptr", "link",
              "application_name"]
    expect(wanted == [h for h in header if h in set(wanted)], f"SHOW CLIENTS columns {header}")
    linked = [c for c in clients if c["link"]]
    expect(len(linked) == 1 and linked[0]["state"] == "active"
           and linked[0]["application_name"] == "admin_test", f"SHOW CLIENTS {clients}")
    _, servers = one_result(inst.port, "SHOW SERVERS")
    expect(len(servers) == 1 and servers[0]["remote_pid"] == str(busy_pid)
           and servers[0]["link"] == linked[0]["ptr"] and servers[0]["ptr"] == linked[0]["link"]
           and servers[0]["state"] == "active", f"SHOW SERVERS {servers}")
    ok("SHOW CLIENTS and SHOW SERVERS link the busy client to its backend")
    busy.rollback()
    busy.close()
    with connect(inst.port) as conn:
        served_from_cache(conn, sql, table)
        for _ in range(3):
            simple(conn, sql)
        _, stats = one_result(inst.port, "SHOW STATS")
        # At least: the busy client's select and rollback, one cached read and three more.
        expect(len(stats) == 1 and int(stats[0]["total_query_count"]) >= 6
               and int(stats[0]["total_xact_count"]) >= 5, f"SHOW STATS {stats}")
        _, config = one_result(inst.port, "SHOW CONFIG")
        settings = {r["key"]: r for r in config}
        expect(settings["admin.token"]["value"] == '"********"' and settings["pool.size"]["value"]
               == "4" and settings["pool.size"]["default"] == "20", "SHOW CONFIG")
        _, version = one_result(inst.port, "SHOW VERSION")
        expect(version[0]["version"].startswith("pgstash "), f"SHOW VERSION {version}")
        _, cache = one_result(inst.port, "SHOW CACHE")
        expect(int(cache[0]["hits"]) >= 3 and int(cache[0]["entries"]) >= 1, f"SHOW CACHE {cache}")
        _, tables = one_result(inst.port, "SHOW CACHE TABLES")
        expect(any(t["table"] == table and int(t["hits"]) >= 3 for t in tables),
               f"SHOW CACHE TABLES {tables}")
        _, entries = one_result(inst.port, "SHOW CACHE ENTRIES")
        expect(any(e["statement"] == sql and e["tables"] == table for e in entries),
               f"SHOW CACHE ENTRIES {entries}")
        ok("SHOW STATS, CONFIG, VERSION, CACHE, CACHE TABLES and CACHE ENTRIES")
        for command, what in [(f"INVALIDATE TABLE public.{table}", "a table"),
                              (f"INVALIDATE STATEMENT '%from  {table}%'", "no statement"),
                              (f"INVALIDATE STATEMENT '%from {table}%'", "a statement pattern"),
                              ("invalidate all;", "everything")]:
            served_from_cache(conn, sql, table)
            status, _, stderr = console(inst.port, command)
            expect(status == 0, f"{command}: {stderr}")
            before = server_calls(table)
            simple(conn, sql)
            if what == "no statement":
                expect("0 cached statement(s) invalidated" in stderr and
                       server_calls(table) == before, f"{command} invalidated: {stderr}")
                ok("INVALIDATE STATEMENT with a pattern matching nothing keeps the entry")
                continue
            expect(server_calls(table) - before == 1, f"after {command} the read did not reach "
                   "the server")
            ok(f"INVALIDATE {what} sends the next read to the server")
    status, results, stderr = console(inst.port, "SELECT 1", "SHOW VERSION")
    expect(status == 0 and "unknown admin console command" in stderr
           and "HINT:  the console takes: SHOW POOLS" in stderr and len(results) == 1
           and results[0][0] == ["version"], f"unknown command: {status} {results} {stderr!r}")
    ok("an unknown command is an error; the session goes on")
    case.expect_alive(inst, "after the console")


def case_console_refused(case):
    trusting, _ = start_admin(case, 'admin.users = ["postgres"]', 'auth.method = "trust"')
    for password in [None, "wrong"]:
        status, _, stderr = console(trusting.port, "SHOW POOLS", password=password)
        expect(status != 0 and ("password" in stderr), f"password {password!r}: {stderr!r}")
    status, _, stderr = console(trusting.port, "SHOW VERSION")
    expect(status == 0, f"the right password under trust refused: {stderr!r}")
    ok("the console asks for a password even under trust")
    inst, _ = start_admin(case, 'admin.users = ["someone_else"]')
    status, _, stderr = console(inst.port, "SHOW POOLS")
    expect(status != 0 and "may not use the admin console" in stderr, f"not listed: {stderr!r}")
    plain, _ = start_admin(case)
    status, _, stderr = console(plain.port, "SHOW POOLS")
    expect(status != 0 and "may not use the admin console" in stderr, f"no admin.users: {stderr!r}")
    ok("users not in admin.users are refused")
    listed, _ = start_admin(case, 'admin.users = ["postgres"]')
    try:
        with psycopg.connect(host="127.0.0.1", port=listed.port, dbname="pgstash", user="postgres",
                             password=PASSWORD, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SHOW POOLS", prepare=True)
        raise AssertionError("the extended protocol was answered")
    except psycopg.Error as e:
        expect(e.sqlstate == "0A000" or "simple queries only" in str(e), f"extended protocol: {e!r}")
    ok("the extended protocol gets 0A000")


def case_bad_requests(case):
    inst, admin = start_admin(case, "admin.max_connections = 2")
    big = (f"POST /api/cache/invalidate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
           f"Content-Length: {65 * 1024}\r\n\r\n").encode()
    answer = raw(admin.port, big)
    expect(answer.startswith(b"HTTP/1.1 413"), f"a 65 KiB body got {answer[:60]!r}, expected 413")
    status, _, _ = admin.post("/api/cache/invalidate", {"all": 1})
    expect(status in (400, 409), f'{{"all": 1}}: {status}, expected 400 or 409 (no cache)')
    for _ in range(5):  # more than admin.max_connections: each failure gives its slot back
        answer = raw(admin.port, b"NOT HTTP AT ALL\r\n\r\n")
        expect(answer.startswith(b"HTTP/1.1 400"), f"garbage got {answer[:60]!r}")
    expect(admin.request("GET", "/nope")[0] == 404, "unknown path not 404")
    expect(admin.request("DELETE", "/api/pools")[0] == 405, "wrong method not 405")
    expect(admin.request("GET", "/api/cache/invalidate")[0] == 405, "GET invalidate not 405")
    held = [socket.create_connection(("127.0.0.1", admin.port)) for _ in range(2)]
    eventually("a third connection refused with 503 while two are held",
               lambda: raw(admin.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")[:12],
               lambda a: a == b"HTTP/1.1 503")
    for s in held:
        s.close()
    eventually("the admin port serving again once they are closed",
               lambda: admin.request("GET", "/health", token=False)[0], lambda s: s == 200)
    with connect(inst.port) as conn:
        expect(conn.execute("select 41 + 1").fetchone()[0] == 42, "clients not served")
    case.expect_alive(inst, "after bad admin requests")
    ok("bad requests get 400/404/405/413, extra connections 503; clients unaffected")


def case_pause_resume(case):
    database = "pgstash_pause"
    with admin_connection() as conn:
        conn.execute(f"drop database if exists {database}")
        conn.execute(f"create database {database}")
    case.cleanups.append(
        lambda: admin_connection().execute(f"drop database if exists {database} with (force)"))

    def backends():
        with admin_connection() as conn:
            return conn.execute("select count(*) from pg_stat_activity where datname = %s "
                                "and backend_type = 'client backend'", (database,)).fetchone()[0]

    inst, admin = start_admin(case, 'admin.users = ["postgres"]')
    with connect(inst.port, dbname=database) as holder, connect(inst.port, dbname=database) as waiter:
        holder.execute("begin")
        holder.execute("select 1")
        status, _, body = admin.post("/api/pause", {"database": database, "timeout_ms": 300})
        answer = json.loads(body)
        expect(status == 202 and not answer["drained"] and answer["server_connections"] >= 1,
               f"pause while a transaction runs: {status} {answer}")
        expect(admin.get("/api/pools")["paused"] == [database], "/api/pools does not say paused")
        done = threading.Event()
        threading.Thread(target=lambda: (simple(waiter, "select 'after resume'"), done.set()),
                         daemon=True).start()
        expect(not done.wait(0.5), "a query ran on a paused database")
        holder.execute("commit")
        status, _, body = admin.post("/api/pause", {"database": database})
        expect(status == 200 and json.loads(body)["drained"], f"pause after commit: {status} {body!r}")
        expect(backends() == 0, f"{backends()} server connections open while paused")
        ok("POST /api/pause waits for the transaction, then every server connection is closed")
        status, _, body = admin.post("/api/resume", {"database": database})
        expect(status == 200, f"resume: {status} {body!r}")
        expect(done.wait(10), "the waiting query did not run after RESUME")
        expect(simple(holder, "select 'still connected'") == [("still connected",)], "holder lost")
        ok("POST /api/resume lets the waiting client through; clients kept their connections")
        status, results, stderr = console(inst.port, f"PAUSE {database}")
        expect(status == 0 and backends() == 0, f"console PAUSE: {status} {stderr} {backends()}")
        status, results, stderr = console(inst.port, "RESUME")
        expect(status == 0, f"console RESUME: {stderr}")
        expect(simple(waiter, "select 2") == [("2",)], "no query after the console's RESUME")
        ok("PAUSE and RESUME in the console")
        status, _, body = admin.post("/api/pause", {"timeout_ms": 5000})
        expect(status == 200 and json.loads(body)["paused"] == "*", f"pause all: {status} {body!r}")
        status, _, _ = admin.post("/api/resume", {"database": database})
        expect(status == 409, f"resuming one database while all are paused: {status}, expected 409")
        status, _, _ = admin.post("/api/resume", {})
        expect(status == 200 and simple(waiter, "select 3") == [("3",)], "resume all")
        ok("pausing everything; one database cannot be resumed alone, all can")
    for bad in ["[1]", {"database": ""}, {"timeout_ms": -1}, {"timeout_ms": "1"}]:
        status, _, _ = admin.post("/api/pause", bad)
        expect(status == 400, f"pause {bad!r}: {status}, expected 400")


def case_warming(case):
    table = "admin_warm"
    sql = one_row_table(table)
    inst, admin = cached_instance(case, f'cache.warm_statements = ["{sql}", "select no_such_column"]',
                                  'cache.warm_database = "pgstash_test"',
                                  'cache.warm_user = "postgres"')
    log = os.path.join(inst.work, "pgstash.log")

    def warmings():
        with open(log) as f:
            return f.read().count("cache warming: 1 of 2 statements answered from the cache")

    eventually("the first warming", warmings, lambda n: n == 1)
    with open(log) as f:
        expect("cache warming: statement 2 failed" in f.read(), "the failing statement not logged")
    # Warming connects as libpq does by default: no application_name, which is part of the key.
    with connect(inst.port, application_name=None) as conn:
        before = server_calls(table)
        expect(simple(conn, sql) == [("one",)], "wrong rows")
        expect(server_calls(table) == before, "the first read after start reached the server")
        ok("warmed at start: the first client's first read is a hit")
        setup(f"update {table} set v = 'two'")
        status, _, body = admin.post("/api/cache/invalidate", {"all": True})
        expect(status == 200, f"invalidate all: {status} {body!r}")
        eventually("the warming after invalidating everything", warmings, lambda n: n == 2)
        before = server_calls(table)
        expect(simple(conn, sql) == [("two",)], "a warmed entry older than the invalidation")
        expect(server_calls(table) == before, "the first read after the invalidation missed")
        ok("warmed again after invalidating everything, with the data as it is now")


def case_version_and_help(case):
    binary = os.environ["PGSTASH_BIN"]
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    expect(version.stdout.startswith("pgstash "), f"--version: {version.stdout!r}")
    helptext = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    for option in ["--config", "--check-config", "--version", "--help", "PGSTASH_ADMIN_TOKEN"]:
        expect(option in helptext, f"--help does not explain {option}")
    ok("--version and --help")


CASES = [
    ("token", case_token, CASE_TIMEOUT),
    ("metrics", case_metrics, CASE_TIMEOUT),
    ("pools_clients_servers", case_pools_clients_servers, CASE_TIMEOUT),
    ("cache_and_invalidation", case_cache_and_invalidation, CASE_TIMEOUT),
    ("entries_paged", case_entries_paged, CASE_TIMEOUT),
    ("config_masked", case_config_masked, CASE_TIMEOUT),
    ("ready", case_ready, 60),
    ("ready_with_stream", case_ready_with_stream, 60),
    ("console", case_console, 60),
    ("console_refused", case_console_refused, CASE_TIMEOUT),
    ("bad_requests", case_bad_requests, CASE_TIMEOUT),
    ("pause_resume", case_pause_resume, CASE_TIMEOUT),
    ("warming", case_warming, CASE_TIMEOUT),
    ("version_and_help", case_version_and_help, CASE_TIMEOUT),
]


if __name__ == "__main__":
    sys.exit(main("admin_test", CASES))
