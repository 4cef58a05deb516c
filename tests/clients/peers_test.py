#!/usr/bin/python3
"""Several pgstash instances in front of one PostgreSQL, sharing one port (listen.reuse_port)
and knowing each other ([peers], process.peer_id), from psycopg.

  reuse_port_cancels
      two instances bound to the same port with SO_REUSEPORT: the kernel spreads clients over
      both, and a cancel request (libpq's, on a new connection to the same address) that lands
      on the other instance is forwarded to the one running the query: every one of 16
      concurrent `pg_sleep` queries is canceled, in transaction and in session pooling.
  reuse_port_without_peers
      the same two instances without [peers]: some cancels land on the instance that does not
      know the key and are lost (so the case above can fail).
  (On a shared port each instance also has a unix socket of its own, which its peers use: a
  cancel forwarded to the shared port could land on the forwarding instance again.)
  peer_cancel_direct
      a cancel request sent straight to instance 2 for a query running on instance 1 (each on
      a port of its own, as behind a TCP balancer) cancels it.

Arguments, if any, name the cases to run (all by default).
"""

import os
import socket
import struct
import sys
import threading
import time

import psycopg

from case_harness import CASE_TIMEOUT, connect, expect, main, ok

CLIENTS = 16
SLEEP = 4.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_peers(case, mode, peering=True, same_port=True, count=2):
    """`count` instances. With `same_port`, all on one port with SO_REUSEPORT, each also on a
    unix socket of its own by which its peers reach it (an address that reaches one instance
    only); else each on a port of its own, which its peers use."""
    ports = [free_port()] * count if same_port else [free_port() for _ in range(count)]
    sockets = [os.path.join(case.root, f"{case.name}-{len(case.instances) + i}-sock")
               for i in range(count)]
    addresses = [f"{sockets[i]}:{ports[i]}" if same_port else f"127.0.0.1:{ports[i]}"
                 for i in range(count)]
    insts = []
    for i in range(count):
        lines = [f'pool.mode = "{mode}"', "pool.size = 20", f"listen.port = {ports[i]}"]
        if same_port:
            os.makedirs(sockets[i], exist_ok=True)
            lines += ["listen.reuse_port = true", f'listen.unix_socket_dir = "{sockets[i]}"']
        if peering:
            lines.append(f"process.peer_id = {i + 1}")
            lines += [f'peers.{j + 1} = "{addresses[j]}"' for j in range(count)]
        insts.append(case.start(*lines))
        if same_port:
            # The shared port accepted connections before this instance bound it: wait for its
            # own listening line.
            wait_until_listening(insts[-1])
    return insts


def wait_until_listening(inst, limit=20.0):
    deadline = time.monotonic() + limit
    while True:
        with open(os.path.join(inst.work, "pgstash.log")) as f:
            if "pgstash listening on" in f.read():
                return
        expect(time.monotonic() < deadline, f"pgstash (pid {inst.pid}) did not say it listens")
        time.sleep(0.02)


def logins(inst):
    with open(os.path.join(inst.work, "pgstash.log")) as f:
        return f.read().count(" login ")


def canceled_of(port, clients=CLIENTS):
    """`clients` connections each run pg_sleep(SLEEP); each is then canceled with libpq's cancel
    (a new connection to `port`). How many were canceled, and how long the slowest took."""
    conns = [connect(port, dbname="pgstash_test") for _ in range(clients)]
    outcome = [None] * clients

    def run(i):
        started = time.monotonic()
        try:
            conns[i].execute(f"select pg_sleep({SLEEP})")
            outcome[i] = ("finished", time.monotonic() - started)
        except psycopg.errors.QueryCanceled:
            outcome[i] = ("canceled", time.monotonic() - started)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    for c in conns:
        c.cancel()
    for t in threads:
        t.join(SLEEP + 10)
    for c in conns:
        c.close()
    expect(all(outcome), f"a client did not come back: {outcome}")
    return sum(1 for o in outcome if o[0] == "canceled"), max(o[1] for o in outcome)


def case_reuse_port_cancels(case):
    for mode in ["transaction", "session"]:
        insts = start_peers(case, mode)
        expect(insts[0].port == insts[1].port, "the instances do not share a port")
        canceled, slowest = canceled_of(insts[0].port)
        spread = [logins(i) for i in insts]
        expect(all(spread), f"the kernel did not spread clients over both instances: {spread}")
        expect(canceled == CLIENTS, f"{mode}: {canceled} of {CLIENTS} queries were canceled")
        ok(f"{mode} pooling: two instances on one port took {spread} clients; all {CLIENTS} "
           f"cancels worked (slowest query {slowest:.2f} s of {SLEEP:.0f})")
        for inst in insts:
            inst.stop(False)


def case_reuse_port_without_peers(case):
    insts = start_peers(case, "transaction", peering=False)
    canceled, _ = canceled_of(insts[0].port)
    expect(canceled < CLIENTS, f"without [peers] all {CLIENTS} cancels still worked: the case "
                               "above cannot tell forwarding from luck")
    ok(f"without [peers], {CLIENTS - canceled} of {CLIENTS} cancels landed on the wrong instance "
       "and were lost")


def raw_session(port):
    """A minimal protocol session (trust auth): the socket and its BackendKeyData."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    params = b"user\0postgres\0database\0pgstash_test\0\0"
    s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    key = None
    while True:
        tag, body = read_message(s)
        if tag == b"K":
            key = struct.unpack("!II", body)
        elif tag == b"Z":
            return s, key
        elif tag == b"E":
            raise AssertionError(f"login failed: {body!r}")


def read_message(s):
    head = recv_exactly(s, 5)
    length = struct.unpack("!i", head[1:])[0]
    return head[:1], recv_exactly(s, length - 4)


def recv_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        expect(chunk, "the connection closed")
        data += chunk
    return data


def case_peer_cancel_direct(case):
    insts = start_peers(case, "transaction", same_port=False)
    s, (pid, secret) = raw_session(insts[0].port)
    expect(secret >> 24 == 1, f"instance 1's cancel key does not carry its peer id: {secret:#x}")
    query = b"select pg_sleep(30)\0"
    s.sendall(b"Q" + struct.pack("!i", 4 + len(query)) + query)
    time.sleep(0.5)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", insts[1].port), timeout=10) as c:
        c.sendall(struct.pack("!iiII", 16, 80877102, pid, secret))
        c.recv(1)
    tag, body = read_message(s)
    while tag not in (b"E", b"Z"):  # RowDescription comes first
        tag, body = read_message(s)
    expect(tag == b"E" and b"57014" in body, f"the query was not canceled: {tag!r} {body!r}")
    ok(f"a cancel sent to instance 2 canceled the query on instance 1 in "
       f"{time.monotonic() - started:.2f} s")
    s.close()


CASES = [
    ("reuse_port_cancels", case_reuse_port_cancels, 60),
    ("reuse_port_without_peers", case_reuse_port_without_peers, CASE_TIMEOUT),
    ("peer_cancel_direct", case_peer_cancel_direct, CASE_TIMEOUT),
]

if __name__ == "__main__":
    sys.exit(main("peers", CASES))
