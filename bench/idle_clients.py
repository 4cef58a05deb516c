#!/usr/bin/python3
"""Opens N idle PostgreSQL client connections to a pooler and reports its memory per client.

    idle_clients.py --port PORT --pid PID [--pid PID ...] -n N [options]

Each connection sends a v3 StartupMessage (user, database; no password: the benchmark targets
trust their clients) and waits for ReadyForQuery, then stays idle. The resident memory of the
pooler is read from /proc before the first connection and after the last one has logged in and
the pooler has settled: the sum of VmRSS over every PID given and all their descendants (pgpool-II
is one process per client slot). The result is one JSON object on stdout:

    requested, connected, failed, first_error, stopped_early, rss_before_kb, rss_after_kb,
    kb_per_client, pss_after_kb, processes_before, processes_after, seconds

kb_per_client = (rss_after_kb - rss_before_kb) / connected.

Connections are opened concurrently (at most --concurrency handshakes in flight, so that the
pooler's listen backlog is not overrun) and each must log in within --timeout seconds. A pooler
that cannot take more clients (pgpool-II with num_init_children busy slots, a session-mode pool
that is full) makes the handshakes time out or fail: after --max-failures failures no new
connection is started, so such a run ends in seconds instead of N x timeout.

Speaks the protocol itself (no libpq, no psycopg) to stay small: one socket per client and
nothing else, so 10,000 clients cost this process little. Raises RLIMIT_NOFILE to its hard limit.
"""

import argparse
import errno
import json
import os
import resource
import selectors
import socket
import struct
import sys
import time


def descendants(roots):
    """The given pids and all their live descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        state, ppid = rest[0], int(rest[1])
        if state == "Z":
            continue
        children.setdefault(ppid, []).append(int(entry))
    seen, todo = set(), [p for p in roots if os.path.exists(f"/proc/{p}")]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return sorted(seen)


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def pss_kb(pids):
    """Proportional set size: shared pages (pgpool-II's shared memory) split between processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def startup_packet(user, database):
    body = struct.pack("!I", 196608)
    for key, value in (("user", user), ("database", database), ("application_name", "idle_clients")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def error_message(payload):
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return f"{fields.get('C', '?')} {fields.get('M', '?')}"


class Client:
    __slots__ = ("sock", "state", "inbuf", "outbuf", "deadline")

    def __init__(self, sock, deadline, packet):
        self.sock = sock
        self.state = "connecting"
        self.inbuf = b""
        self.outbuf = packet
        self.deadline = deadline


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--database", default="bench")
    ap.add_argument("--pid", type=int, action="append", required=True,
                    help="pooler process (repeatable); its descendants are counted too")
    ap.add_argument("-n", type=int, required=True, help="idle connections to open")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=5.0, help="per-connection login timeout, s")
    ap.add_argument("--max-failures", type=int, default=100)
    ap.add_argument("--settle", type=float, default=1.0, help="wait before measuring, s")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if args.n + 50 > soft:
        print(f"idle_clients: open-file limit {soft} is too low for {args.n} clients", file=sys.stderr)

    pids_before = descendants(args.pid)
    rss_before = rss_kb(pids_before)
    start = time.monotonic()

    packet = startup_packet(args.user, args.database)
    sel = selectors.DefaultSelector()
    in_flight = {}  # fd -> Client
    ready = []
    failed = 0
    first_error = None
    started = 0

    def fail(c, why):
        nonlocal failed, first_error
        failed += 1
        if first_error is None:
            first_error = why
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        in_flight.pop(c.sock.fileno(), None)
        c.sock.close()

    while True:
        while (started < args.n and len(in_flight) < args.concurrency
               and failed < args.max_failures):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                rc = s.connect_ex((args.host, args.port))
            except OSError as e:  # e.g. EMFILE
                s.close()
                failed += 1
                first_error = first_error or f"connect: {e}"
                started += 1
                continue
            started += 1
            c = Client(s, time.monotonic() + args.timeout, packet)
            if rc not in (0, errno.EINPROGRESS):
                failed += 1
                first_error = first_error or f"connect: {os.strerror(rc)}"
                s.close()
                continue
            in_flight[s.fileno()] = c
            sel.register(s, selectors.EVENT_WRITE, c)
        if not in_flight:
            break
        for key, events in sel.select(timeout=0.2):
            c = key.data
            if c.state == "connecting":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, f"connect: {os.strerror(err)}")
                    continue
                c.state = "sending"
            if c.state == "sending":
                try:
                    n = c.sock.send(c.outbuf)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(c, f"send: {e}")
                    continue
                c.outbuf = c.outbuf[n:]
                if not c.outbuf:
                    c.state = "reading"
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                fail(c, f"recv: {e}")
                continue
            if not data:
                fail(c, "connection closed by the server during login")
                continue
            c.inbuf += data
            done = False
            while len(c.inbuf) >= 5:
                kind = c.inbuf[0:1]
                length = struct.unpack("!I", c.inbuf[1:5])[0]
                if len(c.inbuf) < 1 + length:
                    break
                payload = c.inbuf[5:1 + length]
                c.inbuf = c.inbuf[1 + length:]
                if kind == b"E":
                    fail(c, error_message(payload))
                    done = True
                    break
                if kind == b"R" and struct.unpack("!I", payload[:4])[0] != 0:
                    fail(c, "the server asked for a password")
                    done = True
                    break
                if kind == b"Z":
                    sel.unregister(c.sock)
                    del in_flight[c.sock.fileno()]
                    ready.append(c.sock)
                    done = True
                    break
            if done:
                continue
        now = time.monotonic()
        for c in [c for c in in_flight.values() if c.deadline < now]:
            fail(c, f"no ReadyForQuery within {args.timeout:g} s")

    time.sleep(args.settle)
    pids_after = descendants(args.pid)
    rss_after = rss_kb(pids_after)
    pss_after = pss_kb(pids_after)
    # Check that the connections are still there (a pooler may have closed them meanwhile).
    alive = 0
    for s in ready:
        try:
            s.setblocking(False)
            if s.recv(1, socket.MSG_PEEK) == b"":
                continue
        except BlockingIOError:
            pass
        except OSError:
            continue
        alive += 1
    result = {
        "requested": args.n,
        "connected": alive,
        "failed": failed + (len(ready) - alive),
        "first_error": first_error,
        "stopped_early": started < args.n,
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "kb_per_client": round((rss_after - rss_before) / alive, 2) if alive else None,
        "pss_after_kb": pss_after,
        "processes_before": len(pids_before),
        "processes_after": len(pids_after),
        "seconds": round(time.monotonic() - start, 2),
    }
    for s in ready:
        s.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
