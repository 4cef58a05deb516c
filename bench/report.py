#!/usr/bin/python3
"""Results of bench/run: one record per run, then tables, a JSON summary and a chart.

    report.py pgbench-record --results FILE --raw FILE --log-prefix PREFIX --exit-code N
                             --workload ID --target ID --clients N --seconds N [--note TEXT]
                             [--keep-logs-in DIR]
        Reads one pgbench run (its output and its per-transaction logs PREFIX.*), appends one
        JSON line to the results file and deletes the logs (or moves them to DIR).
    report.py idle-record --results FILE --json FILE --exit-code N --workload ID --target ID
                          --clients N [--note TEXT]
        Appends the result of bench/idle_clients.py.
    report.py render DIR
        From DIR/meta.json and DIR/results.jsonl writes DIR/summary.json, DIR/tables.md (the
        tables, also bench/latest.md after a full run), DIR/report.md (tables and chart) and
        DIR/chart.png; prints tables.md.

Latency average and p99 come from pgbench's per-transaction log (--log), the same way for every
target; TPS is pgbench's own figure (without initial connection time).
"""

import argparse
import glob
import json
import math
import os
import re
import shutil
import sys

TARGETS = ["direct", "pgbouncer", "pgpool", "pgstash"]
LABELS = {"direct": "PostgreSQL", "pgbouncer": "PgBouncer", "pgpool": "pgpool-II",
          "pgstash": "pgstash"}
COLORS = {"direct": "#7f7f7f", "pgbouncer": "#1f77b4", "pgpool": "#ff7f0e", "pgstash": "#2ca02c"}

# id -> (title, short title for the chart)
WORKLOADS = {
    "select1_simple": ("`SELECT 1`, simple protocol: the floor of a server round trip",
                       "SELECT 1, simple"),
    "select1_prepared": ("`SELECT 1`, prepared protocol", "SELECT 1, prepared"),
    "select_simple": ("select-only (`-S`), simple protocol", "-S simple"),
    "select_extended": ("select-only (`-S`), extended protocol", "-S extended"),
    "select_prepared": ("select-only (`-S`), prepared protocol", "-S prepared"),
    "select_many": ("select-only (`-S`), {clients} clients on a pool of {pool}: multiplexing",
                    "-S {clients} clients"),
    "churn": ("connection churn: select-only with a new connection per transaction (`-C`)",
              "churn (-C)"),
    "cacheable_simple": ("cacheable reads (`cacheable.sql`), simple protocol", "cacheable, simple"),
    "cacheable_extended": ("cacheable reads (`cacheable.sql`), extended protocol",
                           "cacheable, extended"),
    "cacheable_prepared": ("cacheable reads (`cacheable.sql`), prepared protocol",
                           "cacheable, prepared"),
    "readmostly": ("read-mostly: 95% `cacheable.sql`, 5% `UPDATE pgbench_branches`, simple "
                   "protocol", "read-mostly"),
    "cacheable_followed": ("cacheable reads, prepared protocol, pgstash alone following the "
                           "replication stream (default consistency)", "cacheable, followed"),
    "cacheable_strict": ("cacheable reads, prepared protocol, pgstash alone following the "
                         "replication stream, `cache.consistency = \"strict\"`",
                         "cacheable, strict"),
    "tpcb": ("TPC-B (pgbench's default read-write transaction)", "TPC-B"),
}

# What a reader needs to know to read a number right, by (workload, target).
_PGPOOL_SELECT1 = ("served from pgpool-II's query cache: `SELECT 1` reads no table, so it is "
                   "cacheable (checked with SHOW pool_cache)")
_PGPOOL_S = "query cache on: a million different `aid` results, nearly all misses"
STATIC_NOTES = {
    ("select1_simple", "pgpool"): _PGPOOL_SELECT1,
    ("select1_prepared", "pgpool"): _PGPOOL_SELECT1,
    ("select_simple", "pgpool"): _PGPOOL_S,
    ("select_extended", "pgpool"): _PGPOOL_S,
    ("select_prepared", "pgpool"): _PGPOOL_S,
    ("select_many", "pgpool"): "num_init_children = 20: client 21 on waits for a free process; "
                               "pgbench connects every client before it starts",
    ("cacheable_simple", "pgpool"): "query cache on",
    ("cacheable_extended", "pgpool"): "query cache on",
    ("cacheable_prepared", "pgpool"): "query cache on",
    ("readmostly", "pgpool"): "query cache on (invalidated by the UPDATEs)",
}


# ---- records -----------------------------------------------------------------------------------

def append(results, record):
    with open(results, "a") as f:
        f.write(json.dumps(record) + "\n")


def number(pattern, text, cast=float):
    m = re.search(pattern, text, re.M)
    return cast(m.group(1)) if m else None


def clip(text, n):
    return text if len(text) <= n else text[:n - 1].rstrip() + "…"


def first_error(text):
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if "error" in line.lower() and "Run was aborted" not in line:
            line = re.sub(r"^pgbench: error: ", "", line.strip())
            return clip(re.sub(r"\s+", " ", line), 300)
    return None


def display_command(text):
    """pgbench's command line from the raw file, without the connection and log options."""
    line = text.splitlines()[0].lstrip("# ").split()
    out, skip = [], False
    for i, word in enumerate(line):
        if skip:
            skip = False
            continue
        if word in ("-h", "-p", "-U"):
            skip = True
            continue
        if word == "--log" or word.startswith("--log-prefix=") or (i == len(line) - 1 and word == "bench"):
            continue
        if "/" in word:
            word = os.path.basename(word)
        out.append(word)
    return " ".join(out)


# Latencies are kept as a histogram with 1%-wide logarithmic buckets (bucket b holds latencies
# in [1.01^b, 1.01^(b+1)) microseconds), so that the rounds of a workload can be merged and their
# percentiles taken to within 1%.
BUCKET = math.log(1.01)


def bucket_of(us):
    return int(math.log(us) / BUCKET) if us >= 1 else -1


def bucket_value_us(b):
    return 0.0 if b < 0 else math.exp((b + 0.5) * BUCKET)


def hist_percentile(hist, q):
    """hist: {bucket: count}; the q-quantile in ms, or None."""
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return round(bucket_value_us(b) / 1000, 3)
    return None


def pgbench_record(a):
    text = open(a.raw, errors="replace").read()
    hist = {}
    logs = sorted(glob.glob(glob.escape(a.log_prefix) + ".*"))
    for path in logs:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    b = bucket_of(int(fields[2]))
                    hist[b] = hist.get(b, 0) + 1
    tps = number(r"^tps = ([0-9.]+)", text)
    txns = number(r"^number of transactions actually processed: (\d+)", text, int)
    error = first_error(text)
    if a.exit_code == 124 or a.exit_code == 137:
        status, error = "failed", f"timed out (pgbench killed after {a.seconds} s + grace)"
    elif a.exit_code != 0 or tps is None or not txns:
        status = "failed"
        error = error or f"pgbench exit status {a.exit_code}"
    else:
        status = "ok"
    record = {
        "kind": "pgbench",
        "workload": a.workload,
        "target": a.target,
        "round": a.round,
        "clients": a.clients,
        "seconds": a.seconds,
        "status": status,
        "tps": tps,
        "transactions": txns,
        "failed_transactions": number(r"^number of failed transactions: (\d+)", text, int),
        "lat_avg_ms": number(r"^latency average = ([0-9.]+) ms", text),
        "lat_p50_ms": hist_percentile(hist, 0.50),
        "lat_p99_ms": hist_percentile(hist, 0.99),
        "pooler_cpu_us_per_txn": (a.cpu_ticks * 1e6 / os.sysconf("SC_CLK_TCK") / txns
                                  if a.target != "direct" and status == "ok" else None),
        "initial_connection_ms": number(r"^initial connection time = ([0-9.]+) ms", text),
        "average_connection_ms": number(r"^average connection time = ([0-9.]+) ms", text),
        "error": error if status != "ok" else None,
        "note": a.note or None,
        "exit_code": a.exit_code,
        "command": display_command(text),
        "raw": os.path.join("raw", os.path.basename(a.raw)),
        "latency_histogram": {str(b): n for b, n in sorted(hist.items())},
    }
    append(a.results, record)
    for path in logs:
        if a.keep_logs_in:
            os.makedirs(a.keep_logs_in, exist_ok=True)
            shutil.move(path, os.path.join(a.keep_logs_in, os.path.basename(path)))
        else:
            os.unlink(path)
    tps_s = f"{tps:,.0f} TPS" if tps is not None else "no TPS"
    p99 = record["lat_p99_ms"]
    print(f"  {a.target:9s} {status:6s} {tps_s:>14s}"
          + (f"  p99 {p99:.2f} ms" if p99 is not None else "")
          + (f"  ({error})" if status != "ok" else ""), file=sys.stderr)


def idle_record(a):
    try:
        data = json.load(open(a.json))
    except (OSError, ValueError):
        data = {}
    connected = data.get("connected") or 0
    status = "ok" if a.exit_code == 0 and connected == a.clients else "failed"
    error = None
    if status != "ok":
        error = (f"{connected} of {a.clients} connected"
                 + (f"; first error: {data['first_error']}" if data.get("first_error") else "")
                 if data else f"idle_clients.py exit status {a.exit_code}")
    record = {"kind": "idle", "workload": a.workload, "target": a.target, "clients": a.clients,
              "status": status, "error": error, "note": a.note or None, **data}
    append(a.results, record)
    kb = data.get("kb_per_client")
    print(f"  {a.target:9s} {status:6s} {connected}/{a.clients} connected"
          + (f", {kb:.2f} kB/client" if kb is not None else "")
          + (f"  ({error})" if error else ""), file=sys.stderr)


# ---- rendering ---------------------------------------------------------------------------------

def fmt_tps(r):
    if r is None:
        return "n/a"
    if r["status"] != "ok":
        return "failed"
    return f"{r['tps']:,.0f}"


def fmt_ms(v):
    if v is None:
        return "–"
    return f"{v:.2f}" if v < 100 else f"{v:,.0f}"


def fmt_cpu(us):
    return f"{us:,.1f}" if us is not None else "–"


def ratio(a, b):
    if not a or not b or a["status"] != "ok" or b["status"] != "ok" or not b["tps"]:
        return None
    return a["tps"] / b["tps"]


def fmt_ratio(v):
    return "–" if v is None else f"{v:.2f}×"


def vs_text(r, other):
    return "–" if r is None else f"{r:.2f}× {other}"


def workload_title(wid, meta, short=False):
    if wid.startswith("idle_"):
        n = int(wid.split("_")[1])
        return f"idle, {n:,} clients (kB/client)" if short else f"{n:,} idle clients"
    title = WORKLOADS[wid][1 if short else 0]
    return title.format(clients=f"{meta['many_clients']:,}", pool=meta["pool_size"])


def evaluate(meta, get, outdir):
    """The project's targets, beside what was measured. Nothing here is asserted."""
    rows = []
    mode = meta["pgstash_mode"]
    cache_built = meta.get("pgstash_cache") != "not built yet"

    def vs(wid, other):
        return ratio(get(wid, "pgstash"), get(wid, other))

    def verdict(ok, why_not=None):
        if ok is None:
            return "n/a" + (f" ({why_not})" if why_not else "")
        return "met" if ok else "**not met**" + (f" ({why_not})" if why_not else "")

    r = vs("select_simple", "pgbouncer")
    rows.append(("pass-through `-S`, 16 clients", "≥ 1.0× PgBouncer",
                 vs_text(r, "PgBouncer"), verdict(None if r is None else r >= 1.0)))

    st, bo = get("select_many", "pgstash"), get("select_many", "pgbouncer")
    r = ratio(st, bo)
    if st and st["status"] != "ok":
        measured = "pgstash failed: " + clip(st.get("error") or "?", 110)
        ok, why = False, ("session pooling" if mode != "transaction" else None)
    elif r is None:
        measured, ok, why = "–", None, None
    else:
        lower = (st["lat_p99_ms"] or 0) < (bo["lat_p99_ms"] or 0)
        measured = (f"{r:.2f}× PgBouncer; p99 {fmt_ms(st['lat_p99_ms'])} vs "
                    f"{fmt_ms(bo['lat_p99_ms'])} ms")
        ok, why = r >= 1.2 and lower, None
    rows.append((f"{meta['many_clients']:,} clients on pool {meta['pool_size']}",
                 "≥ 1.2× PgBouncer, lower p99", measured, verdict(ok, why)))

    r = vs("churn", "pgbouncer")
    rows.append(("connection churn (`-C`)", "≥ 1.0× PgBouncer", vs_text(r, "PgBouncer"),
                 verdict(None if r is None else r >= 1.0)))

    idle = [w for w in sorted({k[0] for k in get.keys if k[0].startswith("idle_")},
                              key=lambda w: int(w.split("_")[1]))]
    for wid in idle:
        rec = get(wid, "pgstash")
        if not rec:
            continue
        kb = rec.get("kb_per_client")
        measured = (f"{kb:.1f} kB/client" if kb is not None else "–") + \
            f" ({rec.get('connected', 0):,}/{rec['clients']:,} connected)"
        ok = None if kb is None else (kb <= 4.0 and rec["status"] == "ok")
        rows.append((f"idle memory, {rec['clients']:,} clients", "≤ 4 kB per client", measured,
                     verdict(ok, "session pooling" if mode != "transaction" and ok is False else None)))

    st, bo = get("select_prepared", "pgstash"), get("select_prepared", "pgbouncer")
    measured = f"pgstash ({mode} pooling): {st['status'] if st else 'n/a'}"
    if bo:
        measured += "; PgBouncer (transaction): " + (
            "ok" if bo["status"] == "ok" else "failed: " + clip(bo.get("error") or "?", 110))
    ok = None if not st else (st["status"] == "ok" and mode == "transaction")
    rows.append(("`-M prepared` with transaction pooling", "works", measured,
                 verdict(ok, "transaction pooling not built yet" if mode != "transaction" else None)))

    for proto in ("simple", "extended", "prepared"):
        r = vs(f"cacheable_{proto}", "pgpool")
        rows.append((f"cacheable reads, {proto}", "≥ 1.5× pgpool-II (with the cache)",
                     vs_text(r, "pgpool-II"),
                     verdict(None if r is None else r >= 1.5,
                             None if cache_built else "cache not built yet")))

    for proto in ("simple", "prepared"):
        st, floor = get(f"cacheable_{proto}", "pgstash"), get(f"select1_{proto}", "direct")
        if st and floor and st["status"] == "ok" and floor["status"] == "ok":
            # Two statements per cacheable transaction; one per SELECT 1 transaction.
            r = 2 * st["tps"] / floor["tps"]
            measured = (f"{2 * st['tps']:,.0f} cacheable statements/s vs {floor['tps']:,.0f} "
                        f"direct `SELECT 1`/s ({r:.2f}×)")
            ok = r >= 1.0
        else:
            measured, ok = "–", None
        pp = get(f"cacheable_{proto}", "pgpool")
        if floor and pp and floor["status"] == "ok" and pp["status"] == "ok":
            measured += (f"; for scale, pgpool-II's cache: {2 * pp['tps']:,.0f}/s "
                         f"({2 * pp['tps'] / floor['tps']:.2f}×)")
        rows.append((f"cache hit vs `SELECT 1` direct, {proto}", "cheaper (more statements/s)",
                     measured, verdict(ok, None if cache_built else "cache not built yet")))

    st, df = get("cacheable_strict", "pgstash"), get("cacheable_followed", "pgstash")
    r = ratio(st, df)
    rows.append(("strict consistency against the default mode (both following the stream)",
                 "measured (about one round trip added per hit)",
                 "–" if r is None else f"{st['tps']:,.0f} vs {df['tps']:,.0f} TPS ({r:.2f}×)",
                 verdict(None if r is None else True)))

    lag = follow_lag(outdir)
    if lag:
        load = lag["under_write_load"]
        rows.append(("lag of a direct write under write load", "p99 ≤ 100 ms",
                     f"p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms "
                     f"({load['server_commits_per_s']:,} commits/s on the server); idle: p50 "
                     f"{lag['idle']['p50_ms']} ms, p99 {lag['idle']['p99_ms']} ms",
                     verdict(load["p99_ms"] <= 100)))
    return rows


def follow_lag(outdir):
    """bench/follow_lag.py's figures from this run, if it ran."""
    path = os.path.join(outdir, "raw", "follow_lag.json")
    return json.load(open(path)) if os.path.exists(path) else None


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def merge_rounds(runs):
    """One result from the rounds of one workload against one target."""
    runs = sorted(runs, key=lambda r: r.get("round", 1))
    failed = [r for r in runs if r["status"] != "ok"]
    hist = {}
    for r in runs:
        for b, n in r.get("latency_histogram", {}).items():
            hist[int(b)] = hist.get(int(b), 0) + n
    merged = {k: v for k, v in runs[0].items() if k not in ("round", "latency_histogram", "raw", "exit_code")}
    tps = [r["tps"] for r in runs]
    merged.update({
        "status": "failed" if failed else "ok",
        "rounds": len(runs),
        "tps": mean(tps),
        "tps_rounds": tps,
        "transactions": sum(r["transactions"] or 0 for r in runs),
        "failed_transactions": sum(r["failed_transactions"] or 0 for r in runs),
        "lat_avg_ms": mean(r["lat_avg_ms"] for r in runs),
        "lat_p50_ms": hist_percentile(hist, 0.50),
        "lat_p99_ms": hist_percentile(hist, 0.99),
        "pooler_cpu_us_per_txn": mean(r.get("pooler_cpu_us_per_txn") for r in runs),
        "initial_connection_ms": mean(r.get("initial_connection_ms") for r in runs),
        "average_connection_ms": mean(r.get("average_connection_ms") for r in runs),
        "error": failed[0]["error"] if failed else None,
        "raw": [r["raw"] for r in runs],
    })
    if len(tps) > 1 and not failed and merged["tps"]:
        merged["round_spread"] = (max(tps) - min(tps)) / merged["tps"]
    return merged


def merged_results(records):
    merged = _merged_results(records)
    for r in merged:
        extra = STATIC_NOTES.get((r["workload"], r["target"]))
        if extra:
            r["note"] = f"{r['note']}; {extra}" if r.get("note") else extra
    return merged


def _merged_results(records):
    groups, out = {}, []
    for r in records:
        if r["kind"] == "pgbench":
            groups.setdefault((r["workload"], r["target"]), []).append(r)
        else:
            out.append(r)
    return [merge_rounds(runs) for runs in groups.values()] + out


class Index:
    def __init__(self, records):
        self.map = {(r["workload"], r["target"]): r for r in records}
        self.keys = self.map.keys()

    def __call__(self, workload, target):
        return self.map.get((workload, target))


def render(outdir):
    meta = json.load(open(os.path.join(outdir, "meta.json")))
    runs = [json.loads(line) for line in open(os.path.join(outdir, "results.jsonl")) if line.strip()]
    records = merged_results(runs)
    get = Index(records)
    pg_workloads = [w for w in WORKLOADS if any(get(w, t) for t in TARGETS)]
    idle_workloads = sorted({r["workload"] for r in records if r["kind"] == "idle"},
                            key=lambda w: int(w.split("_")[1]))
    m = meta["machine"]
    mode = meta["pgstash_mode"]
    md = []
    md.append(f"Measured {meta['date_utc']} on {m['cores']} cores ({m['cpu']}), "
              f"{m['memory_gb']} GB, {m['os']}, Linux {m['kernel']}; "
              f"PostgreSQL {meta['versions']['postgresql']}, PgBouncer {meta['versions']['pgbouncer']}, "
              f"pgpool-II {meta['versions']['pgpool']}, pgstash {meta['pgstash_rev']} "
              f"(**{mode} pooling**, cache {meta['pgstash_cache']}). "
              f"{'**Quick run** (smoke test: 1-2 s per run, scaled-down client counts). ' if meta['quick'] else ''}"
              f"pgbench scale {meta['scale']}, {meta['clients']} clients unless stated, `-j 2`; "
              f"{meta.get('rounds', 1)} round(s) of {meta['seconds']} s per target "
              f"({meta['many_seconds']} s with {meta['many_clients']:,} clients), targets in "
              f"alternating order, TPS the mean of the rounds; pool of {meta['pool_size']} server "
              f"connections in each pooler. Load average {meta.get('load_before', 0):.1f} before, "
              f"{meta.get('load_after', 0):.1f} after.")
    md.append("")
    md.append("Everything runs on the same small machine: PostgreSQL, the pooler and pgbench share "
              "its cores, and other work may run beside it. Absolute numbers are noisy; compare "
              "the ratios, which come from the same run.")
    md.append("")
    md.append("### TPS per workload")
    md.append("")
    md.append("| workload | PostgreSQL | PgBouncer | pgpool-II | pgstash | pgstash / PgBouncer "
              "| pgstash / pgpool-II | pgstash / direct |")
    md.append("|---|--:|--:|--:|--:|--:|--:|--:|")
    for w in pg_workloads:
        cells = [fmt_tps(get(w, t)) for t in TARGETS]
        st = get(w, "pgstash")
        md.append(f"| {workload_title(w, meta, short=True)} | " + " | ".join(cells) + " | "
                  + " | ".join(fmt_ratio(ratio(st, get(w, o))) for o in ("pgbouncer", "pgpool", "direct"))
                  + " |")
    md.append("")
    md.append("### Pooler CPU per transaction")
    md.append("")
    md.append("User + system CPU time of the pooler's processes during the run, divided by the "
              "transactions pgbench completed, in µs: the cost of the pooler itself, less "
              "affected than TPS by what else shares the cores.")
    md.append("")
    md.append("| workload | PgBouncer | pgpool-II | pgstash | pgstash / PgBouncer |")
    md.append("|---|--:|--:|--:|--:|")
    for w in pg_workloads:
        cpu = {t: (get(w, t) or {}).get("pooler_cpu_us_per_txn") for t in ("pgbouncer", "pgpool", "pgstash")}
        rel = (f"{cpu['pgstash'] / cpu['pgbouncer']:.2f}×"
               if cpu["pgstash"] is not None and cpu["pgbouncer"] else "–")
        md.append(f"| {workload_title(w, meta, short=True)} | "
                  + " | ".join(fmt_cpu(cpu[t]) for t in ("pgbouncer", "pgpool", "pgstash"))
                  + f" | {rel} |")
    md.append("")
    if idle_workloads:
        md.append("### Idle clients: resident memory per client")
        md.append("")
        md.append("Growth of the pooler's resident memory (sum over its processes) from before the "
                  "first to after the last idle client logged in, divided by the clients that "
                  "logged in; each pooler freshly started. Total PSS after, in MB, in brackets.")
        md.append("")
        md.append("| idle clients | PgBouncer | pgpool-II | pgstash |")
        md.append("|---|--:|--:|--:|")
        for w in idle_workloads:
            cells = []
            for t in ("pgbouncer", "pgpool", "pgstash"):
                r = get(w, t)
                if not r:
                    cells.append("n/a")
                    continue
                kb = r.get("kb_per_client")
                cell = f"{kb:.1f} kB" if kb is not None else "–"
                if r["status"] != "ok":
                    cell += f", only {r.get('connected', 0):,} connected"
                if r.get("pss_after_kb") is not None:
                    cell += f" ({r['pss_after_kb'] / 1024:.0f} MB)"
                cells.append(cell)
            md.append(f"| {int(w.split('_')[1]):,} | " + " | ".join(cells) + " |")
        md.append("")
    md.append("### Where pgstash stands against its targets")
    md.append("")
    md.append("| target | goal | measured | |")
    md.append("|---|---|---|---|")
    targets = evaluate(meta, get, outdir)
    for row in targets:
        md.append("| " + " | ".join(row) + " |")
    md.append("")
    md.append("### Per workload")
    md.append("")
    for w in pg_workloads:
        cmd = next((get(w, t)["command"] for t in TARGETS if get(w, t)), "")
        md.append(f"**{workload_title(w, meta)}** — `{cmd}`")
        md.append("")
        md.append("| target | TPS | ± rounds | latency avg ms | p99 ms | vs direct | pooler CPU µs/txn | note |")
        md.append("|---|--:|--:|--:|--:|--:|--:|---|")
        d = get(w, "direct")
        for t in TARGETS:
            r = get(w, t)
            if not r:
                md.append(f"| {LABELS[t]} | n/a | | | | | | |")
                continue
            ok = r["status"] == "ok"
            notes = [x for x in (r.get("error"), r.get("note")) if x]
            if ok and r.get("average_connection_ms") is not None:
                notes.append(f"p99 excludes connecting: {r['average_connection_ms']:.2f} ms "
                             "per connection on average")
            spread = r.get("round_spread")
            spread = f"{spread * 50:.0f}%" if spread is not None else "–"
            md.append(f"| {LABELS[t]} | {fmt_tps(r)} | {spread} | {fmt_ms(r['lat_avg_ms']) if ok else '–'} | "
                      f"{fmt_ms(r['lat_p99_ms']) if ok else '–'} | {fmt_ratio(ratio(r, d))} | "
                      f"{fmt_cpu(r.get('pooler_cpu_us_per_txn'))} | "
                      + "; ".join(n.replace("|", "\\|") for n in notes) + " |")
        st = get(w, "pgstash")
        md.append("")
        md.append(f"pgstash / PgBouncer {fmt_ratio(ratio(st, get(w, 'pgbouncer')))} · "
                  f"pgstash / pgpool-II {fmt_ratio(ratio(st, get(w, 'pgpool')))} · "
                  f"pgstash / direct {fmt_ratio(ratio(st, d))}")
        md.append("")
    tables = "\n".join(md)
    with open(os.path.join(outdir, "tables.md"), "w") as f:
        f.write(tables)
    with open(os.path.join(outdir, "report.md"), "w") as f:
        f.write(f"# pgstash benchmark, {meta['date_utc']}\n\n![TPS per target per workload](chart.png)\n\n"
                + tables)
    summary = {"meta": meta, "results": records,
               "runs": [{k: v for k, v in r.items() if k != "latency_histogram"} for r in runs],
               "ratios": {w: {f"pgstash/{o}": ratio(get(w, "pgstash"), get(w, o))
                              for o in ("pgbouncer", "pgpool", "direct")} for w in pg_workloads},
               "targets": [dict(zip(("target", "goal", "measured", "verdict"), r)) for r in targets]}
    with open(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    chart(outdir, meta, get, pg_workloads, idle_workloads)
    print(tables)


def short_num(v):
    if v >= 100_000:
        return f"{v / 1000:.0f}k"
    if v >= 10_000:
        return f"{v / 1000:.1f}k"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}"


def chart(outdir, meta, get, pg_workloads, idle_workloads):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(w, TARGETS) for w in pg_workloads] + [(w, TARGETS[1:]) for w in idle_workloads]
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.1 * rows + 1.2), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (w, targets) in zip(axes.flat, panels):
        idle = w.startswith("idle_")
        values, texts = [], []
        for t in targets:
            r = get(w, t)
            if idle:
                v = r.get("kb_per_client") if r else None
                ok = r is not None and v is not None
                text = (short_num(v) if ok else "n/a")
                if r and r["status"] != "ok":
                    text += f"\n{r.get('connected', 0)}/{r['clients']}"
            else:
                ok = r is not None and r["status"] == "ok"
                v = r["tps"] if ok else None
                text = short_num(v) if ok else ("failed" if r else "n/a")
            values.append(v if ok else 0)
            texts.append(text)
        x = range(len(targets))
        bars = ax.bar(x, values, color=[COLORS[t] for t in targets])
        top = max(values) if any(values) else 1
        ax.set_ylim(0, top * 1.22)
        for bar, text, v in zip(bars, texts, values):
            ax.text(bar.get_x() + bar.get_width() / 2, v + top * 0.02, text, ha="center",
                    va="bottom", fontsize=8, color="black" if v else "#c00000")
        ax.set_xticks(list(x))
        ax.set_xticklabels([LABELS[t] for t in targets], fontsize=8)
        ax.set_title(workload_title(w, meta, short=True), fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("kB per client (lower is better)" if idle else "TPS", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    m = meta["machine"]
    fig.suptitle(f"pgbench TPS per target (higher is better; mean of {meta.get('rounds', 1)} round(s)) — "
                 f"{meta['date_utc']}, {m['cores']} cores, "
                 f"{m['os']} — pgstash {meta['pgstash_rev']}: {meta['pgstash_mode']} pooling, cache "
                 f"{meta['pgstash_cache']}{' — QUICK RUN' if meta['quick'] else ''}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(os.path.join(outdir, "chart.png"), dpi=90)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pgbench-record")
    p.add_argument("--results", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--log-prefix", required=True)
    p.add_argument("--exit-code", type=int, required=True)
    p.add_argument("--workload", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--seconds", type=int, required=True)
    p.add_argument("--note", default="")
    p.add_argument("--cpu-ticks", type=int, default=0,
                   help="CPU clock ticks the pooler used during the run")
    p.add_argument("--keep-logs-in")
    p = sub.add_parser("idle-record")
    p.add_argument("--results", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--exit-code", type=int, required=True)
    p.add_argument("--workload", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--note", default="")
    p = sub.add_parser("render")
    p.add_argument("dir")
    a = ap.parse_args()
    if a.cmd == "pgbench-record":
        pgbench_record(a)
    elif a.cmd == "idle-record":
        idle_record(a)
    else:
        render(a.dir)


if __name__ == "__main__":
    main()
