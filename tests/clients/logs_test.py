#!/usr/bin/python3
"""pgstash's log as an operator reads it: one line per connection event (login, logout, error)
and per slow request (log.slow_query_ms), with named fields, as text or as JSON lines
(log.format); never a password or a parameter value.

  text_events
      with auth.method = md5 and log.slow_query_ms = 100: a login, a slow simple query, a slow
      extended-protocol query with bind parameters, a fast query, a wrong password and a logout
      each give the line expected (session, client, database, user, duration, statement); the
      fast query gives none; the password and the parameter values appear nowhere.
  json_lines
      the same with log.format = "json": every line of the log is a JSON object with time and
      level, events carry their fields as JSON members, other lines a "msg".

Arguments, if any, name the cases to run (all by default).
"""

import json
import os
import re
import sys
import time

import psycopg

from case_harness import CASE_TIMEOUT, connect, expect, main, ok

PASSWORD = "postgres-secret"  # what tests/lib/pgstash_instance.sh's auth file gives postgres
PARAMETER = "sekret-parameter-value"
SETTINGS = ['pool.mode = "transaction"', 'auth.method = "md5"', "log.slow_query_ms = 100"]


def log_of(inst):
    with open(os.path.join(inst.work, "pgstash.log")) as f:
        return f.read()


def wait_for(inst, predicate, what, limit=10.0):
    deadline = time.monotonic() + limit
    while True:
        text = log_of(inst)
        if predicate(text):
            return text
        expect(time.monotonic() < deadline, f"the log never showed {what}: {text[-1500:]}")
        time.sleep(0.05)


def traffic(inst):
    """The traffic every case logs; the backend-independent facts it should show."""
    with connect(inst.port, password=PASSWORD) as conn:
        conn.pgconn.exec_(b"select pg_sleep(0.15)")
        conn.execute("select pg_sleep(%s), %s::text", (0.15, PARAMETER))
        conn.execute("select 1")
    try:
        connect(inst.port, password="wrong-password").close()
        raise AssertionError("a wrong password was accepted")
    except psycopg.OperationalError:
        pass


def case_text_events(case):
    inst = case.start(*SETTINGS)
    traffic(inst)
    text = wait_for(inst, lambda t: t.count("logout ") >= 1 and "sqlstate=28P01" in t,
                    "a logout and the failed login")
    login = re.search(r" info login session=c:\d+ client=127\.0\.0\.1:\d+ database=pgstash_test "
                      r"user=postgres kind=session tls=false$", text, re.M)
    expect(login, "no login line with session, client, database, user, kind and tls")
    slow = re.findall(r" info slow_query session=c:\d+ client=\S+ database=pgstash_test "
                      r"user=postgres duration_ms=(\d+\.\d) statement=\"([^\"]*)\"$", text, re.M)
    statements = sorted(s for _, s in slow)
    expect(statements == ["select pg_sleep($1), $2::text", "select pg_sleep(0.15)"],
           f"slow_query statements {statements}")
    expect(all(150 <= float(ms) < 5000 for ms, _ in slow), f"slow_query durations {slow}")
    expect("select 1" not in text, "a fast query was logged as slow")
    expect(re.search(r" info logout session=c:\d+ .* duration_ms=\d+$", text, re.M), "no logout line")
    expect(re.search(r" info error session=c:\d+ client=\S+ database=pgstash_test user=postgres "
                     r"sqlstate=28P01 message=\"password authentication failed", text, re.M),
           "no error line for the wrong password")
    expect(PASSWORD not in text and "wrong-password" not in text, "a password is in the log")
    expect(PARAMETER not in text, "a parameter value is in the log")
    ok("login, slow_query (simple and extended), error and logout lines; no secrets")


def case_json_lines(case):
    inst = case.start(*SETTINGS, 'log.format = "json"')
    traffic(inst)
    text = wait_for(inst, lambda t: '"event":"logout"' in t and "28P01" in t,
                    "a logout and the failed login")
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    for line in lines:
        expect(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.get("time", "")),
               f"line without a UTC time: {line}")
        expect(line.get("level") in {"trace", "debug", "info", "warning", "error", "critical"},
               f"line without a level: {line}")
        expect(("event" in line) != ("msg" in line), f"line with neither or both: {line}")
    events = [line for line in lines if "event" in line]
    login = next(e for e in events if e["event"] == "login")
    expect(login["database"] == "pgstash_test" and login["user"] == "postgres"
           and login["client"].startswith("127.0.0.1:") and login["tls"] is False,
           f"login event {login}")
    slow = sorted(e["statement"] for e in events if e["event"] == "slow_query")
    expect(slow == ["select pg_sleep($1), $2::text", "select pg_sleep(0.15)"], f"slow {slow}")
    expect(all(isinstance(e["duration_ms"], float) for e in events if e["event"] == "slow_query"),
           "duration_ms is not a number")
    expect(any(e["event"] == "error" and e["sqlstate"] == "28P01" for e in events), "no error")
    expect(any("listening" in line.get("msg", "") for line in lines), "no plain message line")
    expect(PASSWORD not in text and PARAMETER not in text, "a secret is in the log")
    ok("every line is a JSON object; events carry their fields")


CASES = [
    ("text_events", case_text_events, CASE_TIMEOUT),
    ("json_lines", case_json_lines, CASE_TIMEOUT),
]


if __name__ == "__main__":
    sys.exit(main("logs_test", CASES))
