#!/usr/bin/python3
"""How long a write made directly on PostgreSQL stays invisible through pgstash's cache when
pgstash follows the logical replication stream (invalidation.replication = true).

  bench/follow_lag.py [--pgstash BIN] [--probes N] [--clients N] [--json FILE]

Starts a throwaway PostgreSQL (scripts/pg_test_cluster.sh, with synchronous_commit = on as in
production: PostgreSQL sends a commit to the stream once it is flushed) and a pgstash with the
cache and the stream on. Each probe makes sure `select v from probe where id = 1` is answered
from the cache (PostgreSQL's pg_stat_statements count of it stops moving), updates the row on
PostgreSQL's own port, and then reads through pgstash until the new value appears: the lag is the
time from the UPDATE's acknowledgement to the first read that sees it. Probes run twice: on an
idle server, and under write load (pgbench's TPC-B-like script, --clients clients, straight to
PostgreSQL, so every one of its commits goes through the stream too). Prints p50/p90/p99/max.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "scripts", "pg_test_cluster.sh")
INSTANCE = os.path.join(ROOT, "tests", "lib", "pgstash_instance.sh")
PROBE = "select v from probe where id = 1"


def env_of(cluster_dir):
    env = {}
    with open(os.path.join(cluster_dir, "env")) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            env[key] = value
    return env


def calls(stats):
    row = stats.execute("select coalesce(sum(calls), 0) from pg_stat_statements "
                        "where query = 'select v from probe where id = $1'").fetchone()
    return int(row[0])


def read(conn):
    return conn.execute(PROBE, prepare=False).fetchone()[0]


def ensure_cached(conn, stats):
    """Reads until three reads in a row leave PostgreSQL's count unmoved."""
    for _ in range(200):
        before = calls(stats)
        for _ in range(3):
            read(conn)
        if calls(stats) == before:
            return
        time.sleep(0.01)
    raise RuntimeError("the probe never became a cache hit")


def probe_lags(conn, direct, stats, probes, start_value):
    lags = []
    for i in range(probes):
        value = start_value + i
        ensure_cached(conn, stats)
        direct.execute("update probe set v = %s where id = 1", (value,))
        acked = time.monotonic()
        while read(conn) != value:
            if time.monotonic() - acked > 10:
                raise RuntimeError(f"probe {i}: the write was not seen within 10 s")
        lags.append((time.monotonic() - acked) * 1000)
    return lags


def summary(lags):
    q = statistics.quantiles(lags, n=100, method="inclusive")
    return {"probes": len(lags), "p50_ms": round(q[49], 2), "p90_ms": round(q[89], 2),
            "p99_ms": round(q[98], 2), "max_ms": round(max(lags), 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pgstash", default=os.path.join(ROOT, "build", "pgstash"))
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="pgstash-follow-lag.")
    cluster_dir = os.path.join(work, "cluster")
    inst_dir = os.path.join(work, "pgstash")
    env = dict(os.environ, PGSTASH_PG_EXTRA_CONF="synchronous_commit = on")
    subprocess.run([CLUSTER, "start", cluster_dir], env=env, check=True, stdout=subprocess.DEVNULL)
    load = None
    try:
        pg = env_of(cluster_dir)
        bin_dir = pg["PGSTASH_PG_BIN"]
        direct_params = dict(host="127.0.0.1", port=pg["PGSTASH_PG_PORT"], user="postgres",
                             autocommit=True)
        with psycopg.connect(dbname="postgres", **direct_params) as c:
            c.execute("create database bench")
        subprocess.run([os.path.join(bin_dir, "pgbench"), "-i", "-q", "-s", "10", "-h", "127.0.0.1",
                        "-p", pg["PGSTASH_PG_PORT"], "-U", "postgres", "bench"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        direct = psycopg.connect(dbname="bench", **direct_params)
        direct.execute("create table probe (id int primary key, v bigint); "
                       "insert into probe values (1, 0)")
        stats = psycopg.connect(dbname="pgstash_test", **direct_params)
        out = subprocess.run(
            [INSTANCE, "start", inst_dir, 'pool.mode = "transaction"', "cache.enabled = true",
             f'cache.path = "{work}/cache"', "cache.default_ttl = 0",
             "invalidation.replication = true", 'log.level = "warn"', 'server.tls = "disable"'],
            env=dict(os.environ, PGSTASH_TEST_CLUSTER_DIR=cluster_dir, PGSTASH_BIN=args.pgstash),
            check=True, stdout=subprocess.PIPE, text=True).stdout
        port = int(out.split()[0])
        conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="bench",
                               autocommit=True)

        results = {"idle": summary(probe_lags(conn, direct, stats, args.probes, 1))}
        load = subprocess.Popen(
            [os.path.join(bin_dir, "pgbench"), "-n", "-c", str(args.clients), "-j", "2", "-T",
             "3600", "-h", "127.0.0.1", "-p", pg["PGSTASH_PG_PORT"], "-U", "postgres", "bench"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        before = direct.execute("select xact_commit from pg_stat_database "
                                "where datname = 'bench'").fetchone()[0]
        started = time.monotonic()
        lags = probe_lags(conn, direct, stats, args.probes, 1_000_000)
        elapsed = time.monotonic() - started
        after = direct.execute("select xact_commit from pg_stat_database "
                               "where datname = 'bench'").fetchone()[0]
        results["under_write_load"] = summary(lags)
        results["under_write_load"]["server_commits_per_s"] = round((after - before) / elapsed)
        results["under_write_load"]["pgbench_clients"] = args.clients

        print(f"{'':20} {'probes':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, r in results.items():
            print(f"{name:20} {r['probes']:>7} {r['p50_ms']:>8} {r['p90_ms']:>8} {r['p99_ms']:>8} "
                  f"{r['max_ms']:>8}")
        print(f"write load: {results['under_write_load']['server_commits_per_s']} commits/s on "
              f"the server ({args.clients} pgbench clients, TPC-B-like, direct)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        conn.close()
        direct.close()
        stats.close()
    finally:
        if load:
            load.terminate()
            load.wait()
        subprocess.run([INSTANCE, "stop", inst_dir], stdout=subprocess.DEVNULL)
        subprocess.run([CLUSTER, "stop", cluster_dir], stdout=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
