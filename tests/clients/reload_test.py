#!/usr/bin/python3
"""Live reload (SIGHUP, POST /api/reload, the console's RELOAD): what the README marks
"applied" takes effect without dropping a client; what needs a restart is reported; a broken
file changes nothing.

  pool_size_under_load
      pgbench through pgstash (transaction pooling, pool.size = 8) while pool.size is reloaded
      to 3 by SIGHUP, then to 6 by POST /api/reload: no transaction fails, and PostgreSQL's
      pg_stat_activity shows at most 3, then more than 3 and at most 6 server connections.
  broken_file
      a file with an unknown key and a bad duration: POST /api/reload answers 422 naming both
      lines, SIGHUP logs them, and the running config (pool.size) and the clients are untouched;
      once fixed, the reload applies.
  restart_required
      changing listen.port and pool.mode is reported as needing a restart (API and log), and
      pgstash keeps listening where it was; settings written with units ("30s") apply.
  console_reload
      RELOAD in the psql console reads the auth file again and applies admin.users: a user
      added to both can then use the console; each applied change comes as a notice.
  idle_timeout
      a client connected before limits.client_idle_timeout_ms is reloaded to 1s is disconnected
      once it has been idle that long.

Arguments, if any, name the cases to run (all by default).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import psycopg

from admin_test import TOKEN, Admin, console, eventually, free_port
from case_harness import CASE_TIMEOUT, CLUSTER, admin, connect, expect, main, ok

PASSWORD = "postgres-secret"


def config_path(inst):
    return os.path.join(inst.work, "pgstash.toml")


def set_keys(inst, **changes):
    """Rewrites `section.key` lines of the instance's config: changes["pool__size"] = "3"."""
    path = config_path(inst)
    with open(path) as f:
        lines = f.read().splitlines()
    for name, value in changes.items():
        section, key = name.split("__")
        start = lines.index(f"[{section}]") if f"[{section}]" in lines else None
        if start is None:
            lines += ["", f"[{section}]", f"{key} = {value}"]
            continue
        end = start + 1
        while end < len(lines) and not lines[end].startswith("["):
            end += 1
        for i in range(start + 1, end):
            if lines[i].split("=")[0].strip() == key:
                lines[i] = f"{key} = {value}"
                break
        else:
            lines.insert(start + 1, f"{key} = {value}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def start(case, *extra):
    port = free_port()
    inst = case.start(f"admin.port = {port}", f'admin.token = "{TOKEN}"', *extra)
    return inst, Admin(port)


def log_of(inst):
    with open(os.path.join(inst.work, "pgstash.log")) as f:
        return f.read()


def setting(api, key):
    return api.get("/api/config")["settings"][key]


def reload(api):
    status, _, body = api.request("POST", "/api/reload")
    return status, json.loads(body)


def server_connections(database):
    with admin() as conn:
        return conn.execute("select count(*) from pg_stat_activity where datname = %s "
                            "and backend_type = 'client backend'", (database,)).fetchone()[0]


def case_pool_size_under_load(case):
    database = "pgstash_reload"
    with admin() as conn:
        conn.execute(f"drop database if exists {database}")
        conn.execute(f"create database {database}")
    case.cleanups.append(lambda: admin().execute(f"drop database if exists {database} with (force)"))
    with admin(database) as conn:
        conn.execute("create table counters (id int primary key, n int not null default 0)")
        conn.execute("insert into counters select g from generate_series(1, 50) g")
    inst, api = start(case, 'pool.mode = "transaction"', "pool.size = 8",
                      "pool.query_wait_timeout_ms = 60000")
    script = os.path.join(case.root, "reload.sql")
    with open(script, "w") as f:
        f.write("\\set id random(1, 50)\nBEGIN;\nUPDATE counters SET n = n + 1 WHERE id = :id;\n"
                "SELECT pg_sleep(0.003);\nEND;\n")
    pgbench = subprocess.Popen(
        [os.path.join(CLUSTER["PGSTASH_PG_BIN"], "pgbench"), "-n", "-c", "16", "-j", "2", "-T",
         "14", "-f", script, "-h", "127.0.0.1", "-p", str(inst.port), "-U", "postgres", database],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        eventually("pool.size 8 in use", lambda: server_connections(database), lambda n: n >= 6)
        set_keys(inst, pool__size="3")
        os.kill(inst.pid, signal.SIGHUP)
        eventually("at most 3 server connections after the SIGHUP",
                   lambda: server_connections(database), lambda n: n <= 3)
        ok("a SIGHUP to pool.size = 3 closed the connections beyond it under load")
        seen = [server_connections(database) for _ in range(20) if not time.sleep(0.05)]
        expect(max(seen) <= 3, f"more than 3 server connections after the reload: {seen}")
        set_keys(inst, pool__size="6")
        status, body = reload(api)
        expect(status == 200 and body["applied"] == [{"key": "pool.size", "from": "3", "to": "6"}],
               f"POST /api/reload: {status} {body}")
        eventually("more than 3 server connections after pool.size = 6",
                   lambda: server_connections(database), lambda n: n > 3)
        seen = [server_connections(database) for _ in range(20) if not time.sleep(0.05)]
        expect(max(seen) <= 6, f"more than 6 server connections: {seen}")
        ok("POST /api/reload to pool.size = 6 let the waiting clients use 6")
    finally:
        out, _ = pgbench.communicate(timeout=60)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    expect(pgbench.returncode == 0 and "aborted" not in out and (not failed or failed.group(1) == "0"),
           f"pgbench failed across the reloads:\n{out}")
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    expect(done and int(done.group(1)) > 100, f"pgbench did little: {out}")
    ok(f"pgbench: {done.group(1)} transactions, none failed, across both reloads")


def case_broken_file(case):
    inst, api = start(case, "pool.size = 7")
    with open(config_path(inst)) as f:
        good = f.read()
    with connect(inst.port) as conn:
        set_keys(inst, pool__size="2", pool__sise="3",
                 limits__client_idle_timeout_ms='"5 fortnights"')
        status, body = reload(api)
        expect(status == 422 and not body["reloaded"], f"a broken file reloaded: {status} {body}")
        errors = body["errors"]
        expect(len(errors) == 2 and all(e["file"] == config_path(inst) and e["line"] > 0
                                        for e in errors), f"errors: {errors}")
        expect(any("sise" in e["message"] and "pool.size" in e["hint"] for e in errors),
               f"no hint toward pool.size: {errors}")
        expect(any("fortnights" in e["message"] for e in errors), f"the unit is not named: {errors}")
        expect(setting(api, "pool.size") == 7, "pool.size changed by a refused reload")
        os.kill(inst.pid, signal.SIGHUP)
        eventually("the refused SIGHUP reload in the log",
                   lambda: log_of(inst).count("reload refused, the running config is kept"),
                   lambda n: n >= 4)
        expect(conn.execute("select 'still here'").fetchone()[0] == "still here",
               "a client was lost by a refused reload")
        ok("a broken file is refused with file and line, and nothing changes")
        with open(config_path(inst), "w") as f:
            f.write(good)
        set_keys(inst, pool__size="2")
        status, body = reload(api)
        expect(status == 200 and setting(api, "pool.size") == 2, f"fixed file: {status} {body}")
        expect(conn.execute("select 'and here'").fetchone()[0] == "and here", "client lost")
        ok("once fixed, the reload applies")


def case_restart_required(case):
    inst, api = start(case, 'pool.mode = "transaction"')
    other_port = free_port()
    set_keys(inst, listen__port=str(other_port), pool__mode='"session"',
             pool__query_wait_timeout_ms='"45s"', cache__max_size='"64MiB"')
    status, body = reload(api)
    expect(status == 200, f"reload: {status} {body}")
    expect(body["applied"] == [{"key": "pool.query_wait_timeout_ms", "from": "120000", "to": "45000"}],
           f"applied: {body['applied']}")
    restart = {c["key"]: c for c in body["restart_required"]}
    expect(set(restart) == {"listen.port", "pool.mode", "cache.max_size"}, f"restart: {restart}")
    expect(restart["pool.mode"]["from"] == '"transaction"' and restart["pool.mode"]["to"] == '"session"',
           f"pool.mode: {restart['pool.mode']}")
    expect(setting(api, "pool.mode") == "transaction" and setting(api, "listen.port") == inst.port,
           "a restart-only key was applied")
    expect(setting(api, "pool.query_wait_timeout_ms") == 45000, "45s not applied")
    with connect(inst.port) as conn:
        expect(conn.execute("select 1").fetchone()[0] == 1, "no longer serving on its port")
    log = log_of(inst)
    expect("in force only after a restart: " in log and "listen.port" in log,
           f"the log does not say what needs a restart: {log[-1500:]}")
    ok("keys that need a restart are reported (API and log), not applied")


def case_console_reload(case):
    inst, api = start(case, 'admin.users = ["postgres"]')
    status, _, err = console(inst.port, "show version", user="ops2", password="ops2-secret")
    expect(status != 0, "ops2 used the console before being added")
    with open(os.path.join(inst.work, "userlist.txt"), "a") as f:
        f.write('"ops2" "ops2-secret"\n')
    set_keys(inst, admin__users='["postgres", "ops2"]', log__level='"debug"')
    done = subprocess.run(
        [os.path.join(CLUSTER["PGSTASH_PG_BIN"], "psql"), "-X", "-h", "127.0.0.1", "-p",
         str(inst.port), "-U", "postgres", "-d", "pgstash", "-w", "-c", "RELOAD"],
        capture_output=True, text=True, timeout=20, env=dict(os.environ, PGPASSWORD=PASSWORD))
    expect(done.returncode == 0 and "RELOAD" in done.stdout, f"RELOAD: {done.stdout} {done.stderr}")
    expect("applied admin.users" in done.stderr and "applied log.level" in done.stderr,
           f"RELOAD's notices: {done.stderr!r}")
    status, results, err = console(inst.port, "show version", user="ops2", password="ops2-secret")
    expect(status == 0 and results[0][1][0]["version"].startswith("pgstash"),
           f"ops2 after RELOAD: {status} {results} {err}")
    ok("RELOAD read the auth file again and applied admin.users and log.level")


def case_idle_timeout(case):
    inst, api = start(case)
    with connect(inst.port) as conn:
        conn.execute("select 1")
        set_keys(inst, limits__client_idle_timeout_ms='"1s"')
        status, body = reload(api)
        expect(status == 200, f"reload: {status} {body}")
        conn.execute("select 1")  # arms the idle clock under the new limit
        time.sleep(2.5)
        try:
            conn.execute("select 1")
            raise AssertionError("the client was not disconnected after the reloaded idle timeout")
        except psycopg.OperationalError:
            pass
    ok("a reloaded client_idle_timeout_ms applies to clients already connected")


CASES = [
    ("pool_size_under_load", case_pool_size_under_load, 120),
    ("broken_file", case_broken_file, CASE_TIMEOUT),
    ("restart_required", case_restart_required, CASE_TIMEOUT),
    ("console_reload", case_console_reload, CASE_TIMEOUT),
    ("idle_timeout", case_idle_timeout, CASE_TIMEOUT),
]


if __name__ == "__main__":
    sys.exit(main("reload_test", CASES))
