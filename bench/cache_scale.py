#!/usr/bin/python3
"""The result cache over time and at scale, through pgbench.

  bench/cache_scale.py [--pgstash BIN] [--seconds 60] [--entries 1000000] [--json FILE]

Starts a throwaway PostgreSQL (scripts/pg_test_cluster.sh) with a pgbench database at scale 10
(1,000,000 accounts), then measures two things, each side by side in one run:

  over time     `pgbench -S -M prepared` (16 clients, --seconds) through pgstash with the cache
                off and then on: TPS every 5 s from pgbench's --progress, and with the cache on
                the hit rate of each 5 s (pgstash's /metrics counters). Every -S read is one of
                a million keys, so the hit rate climbs as the cache fills.
  cost growth   hits of a hot set of 1,000 keys (pgbench, 16 clients, prepared protocol) with
                only those 1,000 entries in the cache, and again once --entries other entries
                have been stored (each a distinct account read by simple Query): the hit
                throughput should not depend on how many entries the cache holds. The pooler's
                CPU per hit (its user + system time over the run) is given beside it.

Prints the tables; --json writes them too.
"""

import argparse
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import psycopg

from follow_lag import CLUSTER, INSTANCE, ROOT, env_of

TOKEN = "cache-scale"
HOT_SCRIPT = "\\set aid random(1, 1000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pgstash:
    def __init__(self, args, work, name, cluster_dir, cache):
        self.dir = os.path.join(work, name)
        self.admin = free_port()
        config = ['pool.mode = "transaction"', "pool.size = 20", 'log.level = "warn"',
                  'server.tls = "disable"', f"admin.port = {self.admin}", f'admin.token = "{TOKEN}"']
        if cache:
            config += ["cache.enabled = true", f'cache.path = "{work}/{name}-cache"',
                       "cache.max_size = 4294967296", "cache.default_ttl = 0"]
        out = subprocess.run([INSTANCE, "start", self.dir, *config],
                             env=dict(os.environ, PGSTASH_TEST_CLUSTER_DIR=cluster_dir,
                                      PGSTASH_BIN=args.pgstash),
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        self.port, self.pid = (int(x) for x in out.split())

    def metric(self, name):
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin}/metrics",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        text = urllib.request.urlopen(request, timeout=30).read().decode()
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        subprocess.run([INSTANCE, "stop", self.dir], stdout=subprocess.DEVNULL)


def pgbench(pg, port, seconds, *extra, progress=None):
    cmd = [os.path.join(pg["PGSTASH_PG_BIN"], "pgbench"), "-n", "-c", "16", "-j", "2", "-T",
           str(seconds), "-M", "prepared", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
           *extra, "bench"]
    if progress:
        cmd[1:1] = ["--progress", str(progress)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PGSSLMODE="disable"))


def tps_of(output):
    m = re.search(r"^tps = ([\d.]+)", output, re.M)
    if not m:
        raise RuntimeError("pgbench failed:\n" + output)
    return float(m.group(1))


def over_time(args, pg, work, cluster_dir):
    """TPS per 5 s with the cache off and on; the hit rate per 5 s with it on."""
    rows = {}
    for cache in (False, True):
        inst = Pgstash(args, work, f"over-time-{'on' if cache else 'off'}", cluster_dir, cache)
        try:
            run = pgbench(pg, inst.port, args.seconds, "-S", progress=5)
            rates, last = [], (0.0, 0.0)
            started = time.monotonic()
            while run.poll() is None:
                time.sleep(max(0.0, 5 * (len(rates) + 1) - (time.monotonic() - started)))
                if cache and run.poll() is None:
                    now = (inst.metric("pgstash_cache_hits_total"),
                           inst.metric("pgstash_cache_misses_total"))
                    hits, misses = now[0] - last[0], now[1] - last[1]
                    rates.append(hits / (hits + misses) if hits + misses else 0.0)
                    last = now
                elif not cache:
                    rates.append(None)
            out, err = run.communicate()
            progress = [float(m.group(1)) for m in
                        re.finditer(r"^progress: [\d.]+ s, ([\d.]+) tps", err, re.M)]
            rows["on" if cache else "off"] = {"tps_total": tps_of(out), "tps_every_5s": progress,
                                               "hit_rate_every_5s": rates[:len(progress)]}
        finally:
            inst.stop()
    return rows


def fill(port, first, count):
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="bench",
                         autocommit=True, sslmode="disable") as conn:
        for aid in range(first, first + count):
            conn.pgconn.exec_(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid}".encode())


def hot_hits(args, pg, inst, script):
    """Hit throughput and pooler CPU per hit on the hot set, after a warm-up."""
    pgbench(pg, inst.port, 5, "-f", script).communicate()
    cpu, hits = inst.cpu_seconds(), inst.metric("pgstash_cache_hits_total")
    out, _ = pgbench(pg, inst.port, args.hot_seconds, "-f", script).communicate()
    cpu, hits = inst.cpu_seconds() - cpu, inst.metric("pgstash_cache_hits_total") - hits
    return {"tps": tps_of(out), "cpu_us_per_hit": round(cpu * 1e6 / max(hits, 1), 1),
            "entries": int(inst.metric("pgstash_cache_entries"))}


def cost_growth(args, pg, work, cluster_dir):
    script = os.path.join(work, "hot.sql")
    with open(script, "w") as f:
        f.write(HOT_SCRIPT)
    out = {}
    inst = Pgstash(args, work, "growth-small", cluster_dir, True)
    try:
        out["small"] = hot_hits(args, pg, inst, script)
    finally:
        inst.stop()
    inst = Pgstash(args, work, "growth-large", cluster_dir, True)
    try:
        started = time.monotonic()
        workers = 8
        share = args.entries // workers
        with multiprocessing.Pool(workers) as p:
            p.starmap(fill, [(inst.port, 1 + i * share, share) for i in range(workers)])
        out["fill_seconds"] = round(time.monotonic() - started, 1)
        out["large"] = hot_hits(args, pg, inst, script)
    finally:
        inst.stop()
    out["ratio"] = round(out["large"]["tps"] / out["small"]["tps"], 3)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pgstash", default=os.path.join(ROOT, "build", "pgstash"))
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--hot-seconds", type=int, default=15)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--only", choices=("over_time", "cost_growth"))
    ap.add_argument("--json")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="pgstash-cache-scale.")
    cluster_dir = os.path.join(work, "cluster")
    subprocess.run([CLUSTER, "start", cluster_dir], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, PGSTASH_PG_EXTRA_CONF="shared_buffers = 512MB"))
    results = {}
    try:
        pg = env_of(cluster_dir)
        with psycopg.connect(host="127.0.0.1", port=pg["PGSTASH_PG_PORT"], user="postgres",
                             dbname="postgres", autocommit=True) as c:
            c.execute("create database bench")
        subprocess.run([os.path.join(pg["PGSTASH_PG_BIN"], "pgbench"), "-i", "-q", "-s", "10",
                        "-h", "127.0.0.1", "-p", pg["PGSTASH_PG_PORT"], "-U", "postgres", "bench"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.only in (None, "over_time"):
            rows = over_time(args, pg, work, cluster_dir)
            results["over_time"] = rows
            print(f"pgbench -S -M prepared, 16 clients, {args.seconds} s (TPS every 5 s)")
            print(f"{'t (s)':>6} {'cache off':>10} {'cache on':>10} {'hit rate':>9}")
            for i, on in enumerate(rows["on"]["tps_every_5s"]):
                off = rows["off"]["tps_every_5s"]
                rate = rows["on"]["hit_rate_every_5s"]
                print(f"{5 * (i + 1):>6} {off[i] if i < len(off) else 0:>10.0f} {on:>10.0f} "
                      f"{rate[i] * 100 if i < len(rate) else 0:>8.1f}%")
            print(f"{'total':>6} {rows['off']['tps_total']:>10.0f} {rows['on']['tps_total']:>10.0f}")
        if args.only in (None, "cost_growth"):
            g = cost_growth(args, pg, work, cluster_dir)
            results["cost_growth"] = g
            print(f"\nhits of 1,000 hot keys (pgbench, 16 clients, prepared, {args.hot_seconds} s); "
                  f"{args.entries:,} entries stored in {g['fill_seconds']} s")
            print(f"{'entries':>10} {'hits/s':>10} {'CPU µs/hit':>11}")
            for name in ("small", "large"):
                r = g[name]
                print(f"{r['entries']:>10,} {r['tps']:>10.0f} {r['cpu_us_per_hit']:>11}")
            print(f"ratio (large / small): {g['ratio']:.3f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
    finally:
        subprocess.run([CLUSTER, "stop", cluster_dir], stdout=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
