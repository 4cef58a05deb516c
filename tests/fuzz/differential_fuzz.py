#!/usr/bin/python3
"""Differential protocol fuzzer: PostgreSQL directly against PostgreSQL through pgstash.

Each of several concurrent clients plays a seeded random sequence of PostgreSQL v3 frontend
messages twice, step by step: once straight to PostgreSQL ("direct") and once through pgstash
("proxy"). A step is one write of messages (simple queries, extended-protocol batches, COPY data,
Terminate, a new connection) followed by reading everything that write must produce. After every
step both answers must be the same, message for message, once what legitimately differs between
two connections is normalised (see normalise() and Transcript).

Why a client's stream is deterministic: each client only touches its own table (fz_<n>_t), reads
rows in ORDER BY order, never asks for pids or times, and its next step never depends on an
answer. The direct and the proxied side run in two databases created for the run, so their
tables do not interfere. Statement, portal and SQL-level prepared statement names deliberately
collide across clients (s1..s3, p1..p2, q1..q2, with different texts per client): with
transaction pooling the proxied clients run concurrently on shared server connections.

--mode malformed adds one client that sends broken frames through pgstash only (bad, tiny and
huge lengths, unknown tags, truncated Bind/Parse/Execute, garbage after the startup packet,
frames cut off by a close). It only requires an ErrorResponse or a close for each, and checks
that pgstash stays up (process alive, new connections answered); the other clients must still
match exactly.

Usage:
    differential_fuzz.py --direct-port 5432 --proxy-port 6432 --pool-mode transaction \\
        --seed 42 --seconds 60
With --proxy-port equal to --direct-port (or left out) PostgreSQL is compared with itself, which
checks the fuzzer's own determinism. tests/fuzz/run_differential.sh starts pgstash for ctest.

Narrowing a failure down: a client's sequence depends only on the seed, the client's number, the
feature groups and --pool-mode, so --only-client N replays client N alone (without the others'
concurrent traffic), --steps stops after the failing step, and --features / --no-large leave out
groups of traffic (--list-features). Two groups are opt-in (see DEFAULT_OFF).

Exit status: 0 every step matched; 1 a mismatch, hang, or pgstash died; 2 usage or setup error.
"""

import argparse
import collections
import hashlib
import os
import random
import select
import socket
import string
import re
import struct
import sys
import threading
import time
import traceback

PROTOCOL_3 = 196608
SSL_REQUEST_CODE = 80877103
CANCEL_REQUEST_CODE = 80877102

FEATURES = {
    "simple": "simple Query messages with zero to several statements",
    "extended": "Parse/Bind/Describe/Execute/Close/Sync, named and unnamed, row limits",
    "pipeline": "several extended batches before one Sync, several Syncs in one write",
    "flush": "open pipelines ended by Flush (or nothing) and synced steps later",
    "errors": "failing statements: division by zero, missing column or table, bad input",
    "protoerr": "well-formed messages the server refuses: parameter counts, missing names",
    "copy": "COPY FROM STDIN (with CopyFail and bad rows) and COPY TO STDOUT by Query",
    "xcopy": "COPY through Parse/Bind/Execute",
    "set": "SET/RESET/SET LOCAL/set_config of reported and unreported settings",
    "hidepath": "SET search_path = pg_catalog, where the client's own tables no longer resolve",
    "txn": "BEGIN/COMMIT/ROLLBACK/SAVEPOINT/ROLLBACK TO/RELEASE, by Query and extended",
    "prepare": "SQL-level PREPARE/EXECUTE/DEALLOCATE by simple Query",
    "xprepare": "SQL-level PREPARE/EXECUTE/DEALLOCATE through Parse/Bind/Execute",
    "crossns": "DEALLOCATE [ALL] of protocol-level statements, by Query and extended",
    "crossexec": "EXECUTE of protocol-level statements, Bind/Describe/Close of SQL-level ones",
    "terminate": "Terminate at a quiet point, then a new connection",
    "termpending": "Terminate right behind queries whose answers were not read yet",
    "notify": "LISTEN/NOTIFY to oneself (pins the client in transaction mode)",
    "temp": "temporary tables (pin the client in transaction mode)",
    "discard": "DISCARD ALL/PLANS/TEMP",
    "large": "query texts, parameters, rows and COPY data of 64 kB and more",
    "cache": "repeated reads of a table and a view over it, with writes, also in transactions (what the result cache answers)",
    "resetstartup": "RESET, SET TO DEFAULT, RESET ALL or DISCARD ALL of startup settings (transaction mode)",
}
# Opt-in groups. termpending: pgstash closes the client as soon as it reads Terminate, so the
# answers PostgreSQL would still send for the queries before it are lost; and because the
# statements may still be running when the client's next connection starts, later steps would
# race with them.
#
# crossexec: pgstash prepares protocol-level statements under names of its own and answers Close
# itself, so SQL-level EXECUTE of a protocol-level statement and protocol-level use of an
# SQL-level one cannot work through it in transaction mode (nor through PgBouncer).
#
# resetstartup: in transaction mode pgstash gives a client its startup settings with SET, so on
# the server RESET (or SET ... TO DEFAULT, RESET ALL, DISCARD ALL) goes to the server's default
# until pgstash restores the client's value before its next transaction: statements later in
# the same transaction, and the ParameterStatus the client is sent, see the server's default (a
# limit the README states). Session mode always resets startup settings.
DEFAULT_OFF = {"termpending", "crossexec", "resetstartup"}
# A pinned client keeps its server connection; with a small transaction-mode pool, several
# pinned clients would starve the others, so only client 0 pins there.
PINNING_FEATURES = ("notify", "temp")

# Frame sizes around pgstash's default limits.io_buffer_size (65536), and well beyond it.
LARGE_SIZES = (65530, 65535, 65536, 65537, 70000, 300000)
LARGE_WEIGHTS = (3, 2, 3, 2, 3, 1)
SMALL_SIZES = (0, 1, 10, 100, 1000)

OID_INT4, OID_TEXT, OID_NUMERIC = 23, 25, 1700


# ------------------------------------------------------------------------------------------------
# Frontend messages


def _cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def show(data, limit=int(os.environ.get("PGSTASH_FUZZ_SHOW", "60"))):
    """A short printable form of text or bytes; long values by size and digest (beyond
    $PGSTASH_FUZZ_SHOW bytes, 60 by default)."""
    if isinstance(data, str):
        data = data.encode()
    if len(data) <= limit:
        return repr(data.decode("utf-8", "replace"))
    head = data[: limit - 20].decode("utf-8", "replace")
    return f"{head!r}…({len(data)} B, md5 {hashlib.md5(data).hexdigest()[:8]})"


class FMsg:
    """One frontend message (or any bytes meant as one): its wire bytes and a one-line summary."""

    __slots__ = ("wire", "summary")

    def __init__(self, wire, summary):
        self.wire = wire
        self.summary = summary


def frame(tag, body, summary):
    return FMsg(tag + struct.pack("!i", len(body) + 4) + body, summary)


def m_startup(params, version=PROTOCOL_3):
    body = struct.pack("!i", version) + b"".join(_cstr(k) + _cstr(v) for k, v in params.items())
    body += b"\0"
    return FMsg(struct.pack("!i", len(body) + 4) + body, f"Startup {params}")


def m_query(sql):
    return frame(b"Q", _cstr(sql), f"Query {show(sql)}")


def m_parse(name, sql, oids=()):
    body = _cstr(name) + _cstr(sql) + struct.pack("!h", len(oids))
    body += b"".join(struct.pack("!I", o) for o in oids)
    return frame(b"P", body, f"Parse {name!r} {show(sql)}" + (f" types {list(oids)}" if oids else ""))


def m_bind(portal, stmt, params, pformats=(), rformats=()):
    body = _cstr(portal) + _cstr(stmt)
    body += struct.pack("!h", len(pformats)) + b"".join(struct.pack("!h", f) for f in pformats)
    body += struct.pack("!h", len(params))
    for p in params:
        body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
    body += struct.pack("!h", len(rformats)) + b"".join(struct.pack("!h", f) for f in rformats)
    shown = ", ".join("NULL" if p is None else show(p, 30) for p in params)
    return frame(
        b"B",
        body,
        f"Bind {portal!r} <- {stmt!r} [{shown}]"
        + (f" pformats {list(pformats)}" if pformats else "")
        + (f" rformats {list(rformats)}" if rformats else ""),
    )


def m_describe(kind, name):
    return frame(b"D", kind + _cstr(name), f"Describe {kind.decode()} {name!r}")


def m_execute(portal, maxrows=0):
    return frame(
        b"E",
        _cstr(portal) + struct.pack("!i", maxrows),
        f"Execute {portal!r}" + (f" max {maxrows}" if maxrows else ""),
    )


def m_close(kind, name):
    return frame(b"C", kind + _cstr(name), f"Close {kind.decode()} {name!r}")


def m_copy_data(data):
    return frame(b"d", data, f"CopyData {show(data)}")


def m_copy_fail(why):
    return frame(b"f", _cstr(why), f"CopyFail {why!r}")


SYNC = frame(b"S", b"", "Sync")
FLUSH = frame(b"H", b"", "Flush")
TERMINATE = frame(b"X", b"", "Terminate")
COPY_DONE = frame(b"c", b"", "CopyDone")


# ------------------------------------------------------------------------------------------------
# Backend messages and their normalisation

BACKEND_NAMES = {
    b"1": "ParseComplete",
    b"2": "BindComplete",
    b"3": "CloseComplete",
    b"n": "NoData",
    b"s": "PortalSuspended",
    b"I": "EmptyQueryResponse",
    b"c": "CopyDone",
    b"G": "CopyInResponse",
    b"H": "CopyOutResponse",
    b"W": "CopyBothResponse",
    b"v": "NegotiateProtocolVersion",
    b"V": "FunctionCallResponse",
}

# ErrorResponse/NoticeResponse fields that name the source file, line and routine that raised
# the error, or a cursor position: they describe where the text was looked at, not what
# happened. Severity, SQLSTATE, message, detail, hint, context and the schema/table/column/
# constraint names are compared.
DROPPED_ERROR_FIELDS = set("FLRPpq")

# In transaction mode a protocol-level statement lives on the server under pgstash's name for it
# (pgstash_<hash>), and the server's messages name it so. Which statement a message is about is
# not compared, only what it says about it.
STATEMENT_NAME = re.compile(r'prepared statement "[^"]*"')


def _digest(data):
    return data if len(data) <= 256 else (len(data), hashlib.sha1(data).digest())


def parse_fields(body):
    fields, off = [], 0
    while off < len(body) and body[off] != 0:
        end = body.index(b"\0", off + 1)
        fields.append((chr(body[off]), body[off + 1 : end].decode("utf-8", "replace")))
        off = end + 1
    return fields


def _cstrings(body, count):
    parts = body.split(b"\0")
    return [p.decode("utf-8", "replace") for p in parts[:count]]


def normalise(tag, body):
    """The comparison key and a one-line summary of one backend message (not ParameterStatus)."""
    t = tag.decode("latin-1")
    if tag == b"K":
        # pgstash hands out its own cancel keys (and, in transaction mode, its own pid).
        return ("K",), "BackendKeyData (values not compared)"
    if tag in (b"E", b"N"):
        fields = parse_fields(body)
        kept = tuple(
            sorted(
                (c, STATEMENT_NAME.sub('prepared statement "…"', v))
                for c, v in fields
                if c not in DROPPED_ERROR_FIELDS
            )
        )
        d = dict(fields)
        text = (
            f"{'Error' if tag == b'E' else 'Notice'} {d.get('S', '?')} {d.get('C', '?')} {d.get('M', '')!r}"
        )
        if "D" in d:
            text += f" detail {d['D']!r}"
        return (t, kept), text
    if tag == b"A":
        # The sender's pid differs between any two connections.
        channel, payload = _cstrings(body[4:], 2)
        return ("A", channel, payload), f"Notification {channel!r} {payload!r}"
    if tag == b"T":
        count = struct.unpack_from("!h", body)[0]
        off, cols = 2, []
        for _ in range(count):
            end = body.index(b"\0", off)
            name = body[off:end].decode("utf-8", "replace")
            tableoid, attnum, typoid, typlen, typmod, fmt = struct.unpack_from("!ihihih", body, end + 1)
            off = end + 19
            # The two sides' tables live in different databases, so their OIDs differ; whether
            # a column comes from a table at all is still compared.
            cols.append((name, tableoid != 0, attnum, typoid, typlen, typmod, fmt))
        shown = ", ".join(f"{c[0]}:{c[3]}" + ("/bin" if c[6] else "") for c in cols)
        return ("T", tuple(cols)), f"RowDescription [{shown}]"
    if tag == b"D":
        count = struct.unpack_from("!h", body)[0]
        off, cols = 2, []
        for _ in range(count):
            n = struct.unpack_from("!i", body, off)[0]
            off += 4
            if n < 0:
                cols.append("NULL")
            else:
                cols.append(show(body[off : off + n], 40))
                off += n
        return ("D", _digest(body)), f"DataRow [{', '.join(cols)}]"
    if tag == b"Z":
        return ("Z", body), f"ReadyForQuery {body.decode('latin-1')}"
    if tag == b"C":
        text = body.rstrip(b"\0").decode("utf-8", "replace")
        return ("C", text), f"CommandComplete {text!r}"
    if tag == b"R":
        code = struct.unpack_from("!i", body)[0] if len(body) >= 4 else None
        return ("R", body), f"Authentication {code}"
    if tag == b"t":
        count = struct.unpack_from("!h", body)[0]
        oids = struct.unpack_from(f"!{count}I", body, 2)
        return ("t", oids), f"ParameterDescription {list(oids)}"
    if tag == b"d":
        return ("d", _digest(body)), f"CopyData {show(body)}"
    name = BACKEND_NAMES.get(tag, f"message {t!r}")
    return (t, _digest(body)), name + (f" {show(body)}" if body else "")


class Transcript:
    """What one side received during one step, normalised for comparison.

    ParameterStatus messages are not compared one by one: a proxy may legitimately report a
    value again, or in another order, when it moves a client between server connections. A report
    of the value the client already has is dropped; the remaining changes are compared as one
    set per ReadyForQuery (inserted just before it), and at the end of the run the final values.
    """

    def __init__(self, side):
        self.side = side
        self.items = []
        self.pending = {}

    def add(self, tag, body):
        if tag == b"S":
            name, value = _cstrings(body, 2)
            if self.side.known.get(name) != value:
                self.side.known[name] = value
                self.pending[name] = value
            return
        if tag == b"Z":
            self._flush_params()
        self.items.append(normalise(tag, body))

    def event(self, key, summary):
        self._flush_params()
        self.items.append(((key,), summary))

    def _flush_params(self):
        if self.pending:
            changes = tuple(sorted(self.pending.items()))
            shown = ", ".join(f"{k}={v}" for k, v in changes)
            self.items.append((("S*", changes), f"ParameterStatus {{{shown}}}"))
            self.pending = {}

    def finish(self):
        self._flush_params()

    def keys(self):
        return [k for k, _ in self.items]

    def has(self, key):
        return any(k[0] == key for k, _ in self.items)


# ------------------------------------------------------------------------------------------------
# One socket, read and written without blocking so that a large pipelined write can never
# deadlock against a server that is already answering it.


class Timeout(Exception):
    pass


class BadFrame(Exception):
    pass


class Conn:
    CHUNK = 1 << 18

    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.inbuf = bytearray()
        self.pos = 0
        self.out = bytearray()
        self.eof = False
        self.write_failed = False

    def send(self, data):
        if not self.write_failed:
            self.out += data

    def _pump(self, deadline):
        readers = [] if self.eof else [self.sock]
        writers = [self.sock] if self.out and not self.write_failed else []
        if not readers and not writers:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout()
        readable, writable, _ = select.select(readers, writers, [], min(remaining, 0.5))
        if writable:
            try:
                n = self.sock.send(self.out[: self.CHUNK])
                del self.out[:n]
            except BlockingIOError:
                pass
            except OSError:
                # The peer closed; what it sent before closing is still to be read.
                self.write_failed = True
                self.out.clear()
        if readable:
            try:
                chunk = self.sock.recv(self.CHUNK)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if chunk:
                self.inbuf += chunk
            else:
                self.eof = True

    def _take(self):
        avail = len(self.inbuf) - self.pos
        if avail < 5:
            return None
        tag = bytes(self.inbuf[self.pos : self.pos + 1])
        length = struct.unpack_from("!i", self.inbuf, self.pos + 1)[0]
        if length < 4:
            raise BadFrame(f"frame {tag!r} with length {length}")
        if avail < 1 + length:
            return None
        body = bytes(self.inbuf[self.pos + 5 : self.pos + 1 + length])
        self.pos += 1 + length
        if self.pos > (1 << 20):
            del self.inbuf[: self.pos]
            self.pos = 0
        return tag, body

    def read_msg(self, deadline):
        """The next backend message, or None once the server has closed the connection."""
        while True:
            msg = self._take()
            if msg is not None:
                return msg
            if self.eof:
                return None
            self._pump(deadline)

    def flush(self, deadline):
        while self.out and not self.write_failed:
            self._pump(deadline)

    def shutdown_write(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------------------------------------
# Steps


class Unit:
    """Messages answered together.

    end "Q" (a Query) or "S" (ends with Sync): read up to its ReadyForQuery. end None: an open
    pipeline tail, read only when it ends with Flush (flushed), up to the answer of each message.
    copy: the CopyData.. CopyDone/CopyFail messages to send when the server asks for COPY data.
    """

    __slots__ = ("msgs", "end", "flushed", "copy")

    def __init__(self, msgs, end, flushed=False, copy=None):
        self.msgs, self.end, self.flushed, self.copy = msgs, end, flushed, copy

    @staticmethod
    def query(sql, copy=None):
        return Unit([m_query(sql)], "Q", copy=copy)


class Step:
    __slots__ = ("label", "units", "kind", "terminate")

    def __init__(self, label, units=(), kind="batch", terminate=False):
        self.label, self.units, self.kind, self.terminate = label, list(units), kind, terminate

    def lines(self):
        if self.kind == "connect":
            return ["(new connection: startup packet)"]
        out = []
        for u in self.units:
            out += [m.summary for m in u.msgs]
            if u.copy:
                out += ["  on CopyInResponse: " + m.summary for m in u.copy]
        if self.terminate:
            out.append(TERMINATE.summary + " (then close)")
        return out


# Which answer ends each message of an open pipeline tail (errors end the whole tail).
TAIL_ENDS = {b"P": b"1", b"B": b"2", b"C": b"3", b"D": b"Tn", b"E": b"CsI"}


class Side:
    """One client's connection to one target (direct or proxy), and what it has been told."""

    def __init__(self, host, port, database, user, startup, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.params = dict(startup, user=user, database=database)
        self.conn = None
        self.known = {}
        self.pending_tail = []  # open-pipeline messages whose answers were not read yet
        self.tail_failed = False
        self.waiting = ""

    def drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self, step):
        tr = Transcript(self)
        deadline = time.monotonic() + self.timeout
        try:
            if step.kind == "connect":
                self._connect(tr, deadline)
            elif self.conn is None:
                tr.event("<not connected>", "<not connected: an earlier step lost the connection>")
            else:
                self._batch(step, tr, deadline)
        except Timeout:
            tr.event("<timeout>", f"<no answer within {self.timeout:g} s while waiting for {self.waiting}>")
            self.drop()
        except BadFrame as e:
            tr.event("<bad frame>", f"<unparseable data from the server: {e}>")
            self.drop()
        tr.finish()
        return tr

    def _read(self, tr, deadline):
        msg = self.conn.read_msg(deadline)
        if msg is None:
            tr.event("<closed>", "<connection closed by the server>")
            self.drop()
        else:
            tr.add(*msg)
        return msg

    def _connect(self, tr, deadline):
        self.drop()
        self.known = {}
        self.pending_tail, self.tail_failed = [], False
        self.waiting = "the answer to the startup packet"
        try:
            self.conn = Conn(self.host, self.port, self.timeout)
        except OSError as e:
            tr.event("<connect failed>", f"<connect failed: {e}>")
            return
        self.conn.send(m_startup(self.params).wire)
        while (msg := self._read(tr, deadline)) is not None and msg[0] != b"Z":
            pass

    def _batch(self, step, tr, deadline):
        conn = self.conn
        for u in step.units:
            for m in u.msgs:
                conn.send(m.wire)
        if step.terminate:
            # A Terminate while skipping to Sync is ignored by PostgreSQL: only the close ends
            # the session then, so always close our side too, then read to the end.
            conn.send(TERMINATE.wire)
            self.waiting = "the connection to close after Terminate"
            conn.flush(deadline)
            conn.shutdown_write()
            while self._read(tr, deadline) is not None:
                pass
            return
        ready_needed = sum(1 for u in step.units if u.end)
        ready_seen = 0
        for u in step.units:
            if u.end:
                ready_seen += 1
                self.waiting = f"ReadyForQuery {ready_seen} of {ready_needed}"
                if not self._read_unit(u, tr, deadline):
                    return
            else:
                self.pending_tail += [m for m in u.msgs if m.wire[:1] in TAIL_ENDS]
                if u.flushed and not self._read_tail(tr, deadline):
                    return

    def _read_unit(self, unit, tr, deadline):
        copied = False
        while True:
            msg = self._read(tr, deadline)
            if msg is None:
                return False
            tag = msg[0]
            if tag == b"G":
                plan = (
                    unit.copy if unit.copy and not copied else [m_copy_fail("fuzzer: no COPY data planned")]
                )
                copied = True
                for m in plan:
                    self.conn.send(m.wire)
                # PostgreSQL ignores a Sync that arrives during COPY (libpq relies on that and
                # sends another after CopyDone): without it an extended COPY never ends.
                if unit.end == "S":
                    self.conn.send(SYNC.wire)
            elif tag == b"Z":
                self.pending_tail, self.tail_failed = [], False
                return True

    def _read_tail(self, tr, deadline):
        expected, self.pending_tail = self.pending_tail, []
        if self.tail_failed:
            return True  # after an error everything up to Sync is skipped: nothing comes
        for i, m in enumerate(expected):
            self.waiting = f"the answer to {m.summary} (message {i + 1} of {len(expected)} after Flush)"
            ends = TAIL_ENDS[m.wire[:1]]
            while True:
                msg = self._read(tr, deadline)
                if msg is None:
                    return False
                tag = msg[0]
                if tag == b"E":
                    self.tail_failed = True
                    return True
                if tag == b"G":
                    self.conn.send(m_copy_fail("fuzzer: no COPY data planned").wire)
                if len(tag) == 1 and tag in ends:
                    break
        return True


# ------------------------------------------------------------------------------------------------
# The per-client random sequence


class Generator:
    """Random steps for one client. Everything here depends only on the seed and the options,
    never on an answer: both sides get the very same steps. The state kept (transaction open,
    statements prepared, ...) is this generator's belief, used to make steps mostly sensible;
    when it is wrong the server answers with an error, deterministically, on both sides."""

    ALPHABET = string.ascii_lowercase + string.digits + " éü€"

    def __init__(self, seed, client, features, pool_mode):
        self.r = random.Random(f"{seed}/{client}")
        self.c = client
        self.t = f"fz_{client}_t"
        self.k = f"fz_{client}_k"  # rows the cache group reads again and again
        self.features = set(features)
        if pool_mode == "transaction" and client != 0:
            self.features -= set(PINNING_FEATURES)
        # With transaction pooling the server's list of prepared statements is pgstash's (its
        # own names, shared between clients), not the client's: only session mode shows it.
        self.show_prepared = pool_mode == "session"
        self.next_id = 1
        self.in_txn = False
        self.txn_age = 0
        self.pipe = None  # open pipeline: {"steps": n, "unflushed": bool}
        self.stmts = {}  # protocol-level named statements: name -> kind
        self.sqlprep = {}  # SQL-level prepared statements: name -> kind
        self.reconnect = False
        self.startup = self._startup_params()
        self.reset_startup = pool_mode == "session" or "resetstartup" in self.features

    def on(self, feature):
        return feature in self.features

    # -- values -----------------------------------------------------------------------------

    def _startup_params(self):
        r, p = self.r, {}
        if r.random() < 0.7:
            p["application_name"] = r.choice([f"fz_{self.c}", "fuzz"])
        if r.random() < 0.3:
            p["extra_float_digits"] = r.choice(["0", "2"])
        if r.random() < 0.3:
            p["DateStyle"] = "ISO, DMY"
        if r.random() < 0.3:
            p["TimeZone"] = r.choice(["UTC", "Asia/Kolkata"])
        if r.random() < 0.2:
            p["options"] = "-c search_path=public -c statement_timeout=600000"
        return p

    def size(self):
        if self.on("large") and self.r.random() < 0.2:
            return self.r.choices(LARGE_SIZES, LARGE_WEIGHTS)[0]
        return self.r.choice(SMALL_SIZES)

    def text(self, n):
        """About n characters marked with the client number, so rows of clients never match."""
        r = self.r
        head = f"c{self.c}-"
        if n <= 64:
            return head + "".join(r.choice(self.ALPHABET) for _ in range(n))
        chunk = "".join(r.choice(string.ascii_lowercase) for _ in range(16))
        return head + (chunk * (n // 16 + 1))[:n]

    def num(self):
        r = self.r
        return (
            str(r.randint(-99, 9999))
            if r.random() < 0.5
            else f"{r.randint(-99, 9999)}.{r.randint(0, 999):03d}"
        )

    def new_id(self):
        # Now and then an id that may exist already: a duplicate key error.
        if self.next_id > 1 and self.on("errors") and self.r.random() < 0.08:
            return self.r.randint(1, self.next_id - 1)
        self.next_id += 1
        return self.next_id - 1

    def padded(self, sql, frame):
        """sql with a comment appended so that the Query message is exactly `frame` bytes."""
        k = frame - 6 - len(sql.encode()) - 5
        return sql if k < 0 else sql + " /*" + "x" * k + "*/"

    # -- statement texts -----------------------------------------------------------------------

    def sql_read(self):
        r, t = self.r, self.t
        choices = [
            f"SELECT id, length(v) AS len, md5(v), n FROM {t} ORDER BY id",
            f"SELECT count(*), sum(n), max(id) FROM {t}",
            f"SELECT id, v FROM {t} WHERE length(v) < 100 ORDER BY id",
            "SELECT 1/3::float8 AS third, 0.1::float8 + 0.2 AS sum, 1e100::float8 AS big",
            "SELECT current_setting('application_name') AS app, current_setting('search_path') AS path,"
            " current_setting('extra_float_digits') AS efd, current_setting('statement_timeout') AS st",
            "SELECT '2021-03-04 05:06:07+00'::timestamptz AS ts, '2021-03-04'::date AS d,"
            " interval '1 day 2 hours' AS i",
            "SHOW search_path",
            f"SELECT g, g * 1.5 AS x, repeat('ab', g % 4) AS s FROM generate_series(1, {r.randint(0, 30)}) g",
            "VALUES (1, 'one'), (2, NULL)",
            "SELECT NULL::int AS nothing, ''::text AS empty, true AS yes, 'é€'::text AS utf8",
        ]
        if self.on("large"):
            choices += [
                f"SELECT id, v FROM {t} WHERE length(v) > 60000 ORDER BY id LIMIT 2",
                f"SELECT repeat('z', {r.choices(LARGE_SIZES, LARGE_WEIGHTS)[0]}) AS wide",
            ]
        return r.choice(choices)

    def sql_write(self):
        r, t = self.r, self.t
        k = r.random()
        if k < 0.45:
            row = f"{self.new_id()}, '{self.text(self.size())}', {self.num()}"
            return f"INSERT INTO {t} (id, v, n) VALUES ({row})"
        if k < 0.6:
            rows = ", ".join(
                f"({self.new_id()}, '{self.text(r.randint(0, 20))}', {self.num()})"
                for _ in range(r.randint(2, 4))
            )
            return f"INSERT INTO {t} (id, v, n) VALUES {rows}"
        if k < 0.75:
            return f"UPDATE {t} SET n = coalesce(n, 0) + 1, v = v || 'u' WHERE id % {r.randint(2, 5)} = 0"
        if k < 0.85:
            return f"DELETE FROM {t} WHERE id % {r.randint(3, 7)} = {r.randint(0, 2)}"
        if k < 0.92:
            return f"DELETE FROM {t} WHERE length(v) > 1000"
        base = self.next_id
        self.next_id += 5
        return f"INSERT INTO {t} (id, v) SELECT g + {base - 1}, 'g' || g FROM generate_series(1, 5) g"

    def sql_fail(self):
        t = self.t
        return self.r.choice(
            [
                "SELECT 1/0",
                f"SELECT nosuchcol FROM {t}",
                f"SELECT * FROM fz_{self.c}_nosuch",
                "SELEC 1",
                f"INSERT INTO {t} (id) VALUES (NULL)",
                "SELECT 'abc'::int",
                f"SELECT id FROM {t} WHERE id = 'x'",
            ]
        )

    def startup_names(self):
        names = {k.lower() for k in self.startup if k != "options"}
        if "options" in self.startup:
            names |= {"search_path", "statement_timeout"}
        return names

    def may_reset(self, sql):
        """Whether `sql` may run here: see resetstartup."""
        if self.reset_startup or not self.startup:
            return True
        words = sql.lower().split()
        if words[:2] in (["reset", "all"], ["discard", "all"]):
            return False
        if words[:1] == ["reset"]:
            return words[1] not in self.startup_names()
        if sql.lower().endswith("to default"):
            return words[1] not in self.startup_names()
        return True

    def sql_set(self):
        r = self.r
        while True:
            sql = self._sql_set_candidate()
            if self.may_reset(sql):
                return sql

    def _sql_set_candidate(self):
        r = self.r
        return r.choice(
            [
                f"SET application_name = 'fz_{self.c}_{r.randint(0, 9)}'",
                "SET application_name TO DEFAULT",
                "SET search_path = "
                + r.choice(
                    ["public", "pg_catalog, public", '"$user", public', "fz_nowhere, public"]
                    + (["pg_catalog"] if self.on("hidepath") else [])
                ),
                f"SET extra_float_digits = {r.choice([-3, 0, 1, 2, 3])}",
                "SET TimeZone = " + r.choice(["'UTC'", "'America/New_York'", "'Asia/Kolkata'"]),
                "SET DateStyle = " + r.choice(["'ISO, MDY'", "'SQL, DMY'", "'German'"]),
                "SET statement_timeout = " + r.choice(["'5min'", "0"]),
                "SET LOCAL extra_float_digits = 1",
                "SET SESSION IntervalStyle = 'postgres_verbose'",
                "RESET "
                + r.choice(
                    [
                        "application_name",
                        "search_path",
                        "extra_float_digits",
                        "TimeZone",
                        "DateStyle",
                        "statement_timeout",
                        "IntervalStyle",
                        "ALL",
                    ]
                ),
                f"SELECT set_config('application_name', 'fz_{self.c}_cfg', false)",
                f"SELECT set_config('extra_float_digits', '{r.randint(0, 3)}', true)",
                "SHOW application_name",
                "SHOW TimeZone",
            ]
        )

    def sql_settings(self):
        return (
            "SELECT current_setting('application_name') AS app, current_setting('search_path') AS path,"
            " current_setting('extra_float_digits') AS efd, current_setting('TimeZone') AS tz,"
            " current_setting('DateStyle') AS ds, current_setting('IntervalStyle') AS ist,"
            " current_setting('statement_timeout') AS st, 1/3::float8 AS third,"
            " '2021-03-04 05:06:07+00'::timestamptz AS ts, interval '1 day 2 hours' AS i"
        )

    def sql_txn(self):
        r = self.r
        if not self.in_txn:
            return r.choice(
                ["BEGIN", "START TRANSACTION", "BEGIN ISOLATION LEVEL REPEATABLE READ", "BEGIN READ ONLY"]
            )
        if r.random() < 0.5:
            return r.choice(
                [
                    "SAVEPOINT sp1",
                    "SAVEPOINT sp2",
                    "ROLLBACK TO SAVEPOINT sp1",
                    "ROLLBACK TO sp2",
                    "RELEASE SAVEPOINT sp1",
                ]
            )
        return self.sql_txn_end()

    def sql_txn_end(self):
        return self.r.choice(["COMMIT", "ROLLBACK", "END", "ABORT", "COMMIT AND CHAIN"])

    # SQL-level prepared statements: the same name has a different shape in each client, so that
    # running one client's statement for another shows in the answers.
    def sql_prepare(self, name):
        t, c = self.t, self.c
        kind = self.r.choice(["sel", "cnt", "ins", "gen"])
        self.sqlprep[name] = kind
        return {
            "sel": f"PREPARE {name} (int) AS SELECT id, n, md5(v) FROM {t} WHERE id > $1 ORDER BY id",
            "cnt": f"PREPARE {name} AS SELECT count(*), {c} AS client FROM {t}",
            "ins": f"PREPARE {name} (int, text) AS INSERT INTO {t} (id, v) VALUES ($1, $2)",
            "gen": f"PREPARE {name} AS SELECT g, {c} AS client FROM generate_series(1, {c + 3}) g",
        }[kind]

    def sql_execute(self, name):
        kind = self.sqlprep.get(name, self.r.choice(["sel", "cnt"]))
        if kind == "sel":
            return f"EXECUTE {name}({self.r.randint(0, 20)})"
        if kind == "ins":
            return f"EXECUTE {name}({self.new_id()}, '{self.text(self.r.randint(0, 10))}')"
        return f"EXECUTE {name}"

    def sql_deallocate(self, name):
        self.sqlprep.pop(name, None)
        return self.r.choice([f"DEALLOCATE {name}", f"DEALLOCATE PREPARE {name}"])

    def note(self, sql):
        """Follows what a statement does to the session, as far as this generator needs to know."""
        s = sql.lstrip().upper()
        if s.startswith(("BEGIN", "START TRANSACTION")):
            self.in_txn = True
        elif s.startswith(("COMMIT AND CHAIN", "ROLLBACK TO")):
            pass
        elif s.startswith(("COMMIT", "ROLLBACK", "END", "ABORT")):
            self.in_txn, self.txn_age = False, 0
        elif s.startswith("DEALLOCATE ALL"):
            self.sqlprep.clear()
            self.stmts.clear()
        elif s.startswith("DISCARD ALL") and not self.in_txn:
            self.forget_session()

    def forget_session(self):
        self.in_txn, self.txn_age = False, 0
        self.pipe = None
        self.stmts.clear()
        self.sqlprep.clear()

    def any_stmt(self):
        pools = [(6, self.sql_read), (5, self.sql_write)]
        if self.on("errors"):
            # Inside a transaction an error spoils every later step until it ends: fewer there.
            pools.append((1 if self.in_txn else 2, self.sql_fail))
        if self.on("set"):
            pools.append((2, self.sql_set))
        if self.on("txn"):
            pools.append((2, self.sql_txn))
        weights = [w for w, _ in pools]
        stmt = self.r.choices([f for _, f in pools], weights)[0]()
        self.note(stmt)
        return stmt

    # -- extended protocol --------------------------------------------------------------------

    def ext_kinds(self):
        """name -> (text, parameter kinds). Kinds without a table are the same text in every
        client: with transaction pooling pgstash may share them on a server connection."""
        t = self.t
        kinds = {
            "sel": (f"SELECT id, length(v) AS len, md5(v), n FROM {t} WHERE id > $1 ORDER BY id", ("int",)),
            "series": (
                "SELECT g, g * 1.5 AS x, repeat('ab', g % 4) AS s FROM generate_series(1, $1::int) g",
                ("int",),
            ),
            "concat": ("SELECT $1::text || '/' || $2::text AS joined", ("text", "text")),
            "ins": (f"INSERT INTO {t} (id, v, n) VALUES ($1, $2, $3)", ("id", "text", "num")),
            "upd": (f"UPDATE {t} SET n = coalesce(n, 0) + 1 WHERE id % 3 = $1", ("mod",)),
            "big": ("SELECT length($1::text) AS len, md5($1::text)", ("big",)),
            "settings": (self.sql_settings(), ()),
            "count": (f"SELECT count(*), sum(n) FROM {t}", ()),
            "del": (f"DELETE FROM {t} WHERE id = $1 RETURNING id, n", ("int",)),
        }
        if self.on("errors"):
            # random() keeps the planner from folding the division: a fresh statement's custom
            # plan would fail at Bind, one PostgreSQL had run five times at Execute, and through
            # a pool whether a statement is fresh on its connection legitimately differs.
            kinds["div"] = ("SELECT 10 / ($1::int + (random() * 0)::int) AS q", ("int0",))
            kinds["badcol"] = (f"SELECT nosuchcol FROM {t} WHERE id = $1", ("int",))
        if self.on("set"):
            sets = ["SET extra_float_digits = 3", f"SET application_name = 'fz_{self.c}_x'"]
            sets += [sql for sql in ["RESET extra_float_digits"] if self.may_reset(sql)]
            kinds["set"] = (self.r.choice(sets), ())
        return kinds

    ROW_KINDS = ("sel", "series", "settings", "del")
    PARAM_OIDS = {
        "int": OID_INT4,
        "int0": OID_INT4,
        "mod": OID_INT4,
        "id": OID_INT4,
        "text": OID_TEXT,
        "big": OID_TEXT,
        "num": OID_NUMERIC,
    }

    def param(self, kind, binary):
        r = self.r
        if kind in ("int", "int0", "mod", "id"):
            v = {
                "int": lambda: r.randint(0, 30),
                "int0": lambda: r.choice((0, 1, 2, 5)),
                "mod": lambda: r.randint(0, 2),
                "id": self.new_id,
            }[kind]()
            return struct.pack("!i", v) if binary else str(v).encode()
        if kind == "text":
            return None if r.random() < 0.1 else self.text(r.choice((0, 5, 20))).encode()
        if kind == "big":
            return self.text(self.size()).encode()
        return None if r.random() < 0.2 else self.num().encode()

    def bind(self, portal, name, kinds):
        r = self.r
        binary = [k in ("int", "int0", "mod", "id") and r.random() < 0.3 for k in kinds]
        params = [self.param(k, b) for k, b in zip(kinds, binary)]
        codes = [1 if b else 0 for b in binary]
        if not any(codes) and r.random() < 0.6:
            pformats = ()
        elif codes and all(codes) and r.random() < 0.5:
            pformats = (1,)
        else:
            pformats = tuple(codes)
        rformats = r.choice(((), (), (0,), (1,)))
        return m_bind(portal, name, params, pformats, rformats)

    def ext_group(self):
        """Parse (when needed), Bind, Describe, Execute(s) and Close for one statement, no Sync.
        The unnamed statement is always parsed in the same group: a client cannot count on it
        after a Sync with transaction pooling, and real drivers never do."""
        r = self.r
        kinds = self.ext_kinds()
        msgs = []
        name = r.choice(("", "", "s1", "s2", "s3"))
        if name == "" or name not in self.stmts or self.stmts[name] not in kinds or r.random() < 0.25:
            kind = r.choice(list(kinds))
            # A second Parse of a name is an error (42P05): mostly Close it first.
            if name in self.stmts and (not self.on("protoerr") or r.random() < 0.85):
                msgs.append(m_close(b"S", name))
            sql, pkinds = kinds[kind]
            if self.on("large") and r.random() < 0.05:
                sql = self.padded(sql, r.choices(LARGE_SIZES, LARGE_WEIGHTS)[0])
            oids = tuple(self.PARAM_OIDS[k] for k in pkinds) if r.random() < 0.4 else ()
            msgs.append(m_parse(name, sql, oids))
            if name:
                self.stmts[name] = kind
        else:
            kind = self.stmts[name]
        pkinds = kinds[kind][1]
        if r.random() < 0.25:
            msgs.append(m_describe(b"S", name))
        portal = r.choice(("", "", "p1", "p2"))
        msgs.append(self.bind(portal, name, pkinds))
        if r.random() < 0.25:
            msgs.append(m_describe(b"P", portal))
        if kind in self.ROW_KINDS and r.random() < 0.4:
            for _ in range(r.randint(1, 3)):
                msgs.append(m_execute(portal, r.randint(1, 3)))
            if r.random() < 0.5:
                msgs.append(m_execute(portal, 0))
        else:
            msgs.append(m_execute(portal, 0))
        if portal and r.random() < 0.6:
            msgs.append(m_close(b"P", portal))
        return msgs

    def ext_sql(self, sql, describe=False):
        """One statement text through the unnamed statement and portal."""
        self.note(sql)
        msgs = [m_parse("", sql), m_bind("", "", [])]
        if describe:
            msgs.append(m_describe(b"P", ""))
        return msgs + [m_execute("", 0)]

    # -- steps ------------------------------------------------------------------------------

    def setup_steps(self):
        return [
            Step("connect", kind="connect"),
            Step(
                "setup",
                [
                    Unit.query(
                        f"DROP TABLE IF EXISTS {self.t}; "
                        f"CREATE TABLE {self.t} (id int PRIMARY KEY, v text NOT NULL DEFAULT '', n numeric); "
                        f"DROP TABLE IF EXISTS {self.k} CASCADE; "
                        f"CREATE TABLE {self.k} (id int PRIMARY KEY, n int NOT NULL); "
                        f"INSERT INTO {self.k} SELECT g, g * 10 FROM generate_series(1, 4) g; "
                        f"CREATE VIEW {self.k}v AS SELECT id, n FROM {self.k} WHERE id > 1"
                    )
                ],
            ),
        ]

    def final_steps(self):
        steps = []
        if self.reconnect:
            steps.append(Step("connect", kind="connect"))
        if self.pipe is not None:
            steps.append(Step("final", [Unit([SYNC], "S")]))
        steps.append(Step("final", [Unit.query("ROLLBACK")]))  # a warning when no transaction is open
        checks = [
            f"SELECT id, md5(v), n FROM public.{self.t} ORDER BY id",
            f"SELECT id, n FROM public.{self.k} ORDER BY id",
            "SELECT name, setting FROM pg_catalog.pg_settings ORDER BY name",
        ]
        if self.show_prepared:
            checks.append("SELECT name, statement FROM pg_catalog.pg_prepared_statements ORDER BY name")
        steps.append(Step("final", [Unit.query(sql) for sql in checks]))
        steps.append(Step("final", terminate=True))
        return steps

    def next_step(self):
        if self.reconnect:
            self.reconnect = False
            return Step("connect", kind="connect")
        if self.pipe is not None:
            return self.pipe_step()
        r = self.r
        if self.in_txn:
            self.txn_age += 1
            if self.txn_age > 2 and r.random() < 0.5:
                return self.end_txn_step()
        # The generator's idea of the transaction can be wrong (a statement it expected to work
        # failed); now and then a ROLLBACK makes sure no client stays in one for long.
        if r.random() < 0.03:
            self.note("ROLLBACK")
            return Step("rollback", [Unit.query("ROLLBACK")])
        actions = [
            ("simple", 20, self.act_simple),
            ("extended", 18, self.act_extended),
            ("pipeline", 8, self.act_pipeline),
            ("flush", 5, self.act_open_pipeline),
            ("copy", 6, self.act_copy),
            ("xcopy", 3, self.act_xcopy),
            ("set", 8, self.act_set),
            ("txn", 8, self.act_txn),
            ("prepare", 6, self.act_prepare),
            ("xprepare", 4, self.act_xprepare),
            ("crossns", 2, self.act_crossns),
            ("crossexec", 2, self.act_crossexec),
            ("terminate", 2, self.act_terminate),
            ("termpending", 1, self.act_terminate_pending),
            ("notify", 2, self.act_notify),
            ("temp", 2, self.act_temp),
            ("discard", 1, self.act_discard),
            ("protoerr", 3, self.act_protoerr),
            ("cache", 10, self.act_cache),
        ]
        actions = [(w, f) for name, w, f in actions if self.on(name)]
        if not actions:
            return Step("simple", [Unit.query("SELECT 1")])
        return r.choices([f for _, f in actions], [w for w, _ in actions])[0]()

    def act_simple(self):
        r = self.r
        n = r.choice((0, 1, 1, 1, 2, 3, 4))
        if n == 0:
            sql = r.choice(("", " ", ";", "-- only a comment"))
        else:
            sql = "; ".join(self.any_stmt() for _ in range(n))
        if self.on("large") and r.random() < 0.08:
            sql = self.padded(sql, r.choices(LARGE_SIZES, LARGE_WEIGHTS)[0])
        return Step("simple", [Unit.query(sql)])

    def act_extended(self):
        r = self.r
        if self.in_txn and r.random() < 0.2:
            # Portals live until the transaction ends: go on with one from an earlier step.
            portal = r.choice(("p1", "p2"))
            return Step("extended", [Unit([m_execute(portal, r.randint(0, 2)), SYNC], "S")])
        msgs = self.ext_group()
        if self.on("txn") and r.random() < 0.1:
            msgs = self.ext_sql(self.sql_txn()) + msgs
        return Step("extended", [Unit(msgs + [SYNC], "S")])

    def act_pipeline(self):
        r = self.r
        units = []
        for _ in range(r.randint(1, 3)):
            if self.on("simple") and r.random() < 0.3:
                units.append(Unit.query(self.any_stmt()))
            else:
                msgs = []
                for _ in range(r.randint(1, 3)):
                    msgs += self.ext_group()
                units.append(Unit(msgs + [SYNC], "S"))
        return Step("pipeline", units)

    def act_open_pipeline(self):
        self.pipe = {"steps": 0, "unflushed": False}
        return self.tail_step()

    def tail_step(self):
        r = self.r
        msgs = []
        for _ in range(r.randint(1, 2)):
            msgs += self.ext_group()
        flushed = r.random() < 0.75
        if flushed:
            msgs.append(FLUSH)
        self.pipe["steps"] += 1
        self.pipe["unflushed"] = not flushed
        return Step("open pipeline", [Unit(msgs, None, flushed=flushed)])

    def pipe_step(self):
        r = self.r
        k = r.random()
        if self.pipe["steps"] < 4 and k < 0.4:
            return self.tail_step()
        # Answers not yet flushed are lost when the server exits, so Terminate only after Flush.
        if k < 0.5 and not self.pipe["unflushed"] and self.on("terminate"):
            return self.act_terminate()
        msgs = []
        for _ in range(r.randint(0, 2)):
            msgs += self.ext_group()
        self.pipe = None
        return Step("pipeline sync", [Unit(msgs + [SYNC], "S")])

    def copy_payload(self):
        r = self.r
        rows = []
        for _ in range(r.randint(0, 6)):
            n = self.num() if r.random() < 0.8 else "\\N"
            rows.append(f"{self.new_id()}\t{self.text(self.size())}\t{n}\n")
        if self.on("errors") and r.random() < 0.15:
            rows.insert(r.randint(0, len(rows)), f"{self.new_id()}\tbad\tnot-a-number\n")
        data = "".join(rows).encode()
        # CopyData boundaries need not follow rows, nor characters.
        cuts = sorted(r.randint(0, len(data)) for _ in range(r.randint(0, 3)))
        chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        msgs = [m_copy_data(c) for c in chunks if c or r.random() < 0.2]
        if r.random() < 0.15:
            msgs.append(m_copy_fail("fuzzer gives up"))
        else:
            msgs.append(COPY_DONE)
        return msgs

    def copy_out_sql(self):
        r, t = self.r, self.t
        wide = r.choices(LARGE_SIZES, LARGE_WEIGHTS)[0] if self.on("large") and r.random() < 0.3 else 100
        choices = [
            f"COPY (SELECT id, v, n FROM {t} ORDER BY id) TO STDOUT",
            f"COPY (SELECT id, md5(v), n FROM {t} ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)",
            f"COPY (SELECT g, repeat('c', {wide}) FROM generate_series(1, 5) g) TO STDOUT",
        ]
        if self.on("errors"):
            choices.append(f"COPY (SELECT 1 / (id - id) FROM {t}) TO STDOUT")
        return r.choice(choices)

    def act_copy(self):
        r = self.r
        units = []
        if r.random() < 0.3:
            units.append(Unit.query(self.sql_read()))
        if r.random() < 0.4:
            units.append(Unit.query(self.copy_out_sql()))
        else:
            # A COPY FROM must end the write: what follows it would be read as COPY data.
            units.append(Unit.query(f"COPY {self.t} (id, v, n) FROM STDIN", copy=self.copy_payload()))
        return Step("copy", units)

    def act_xcopy(self):
        r = self.r
        if r.random() < 0.4:
            msgs = self.ext_sql(self.copy_out_sql(), describe=r.random() < 0.5)
            return Step("xcopy", [Unit(msgs + [SYNC], "S")])
        msgs = [
            m_parse("", f"COPY {self.t} (id, v, n) FROM STDIN"),
            m_bind("", "", []),
            m_execute("", 0),
            SYNC,
        ]
        return Step("xcopy", [Unit(msgs, "S", copy=self.copy_payload())])

    def act_set(self):
        r = self.r
        stmts = [self.sql_set() for _ in range(r.randint(1, 2))]
        if r.random() < 0.5:
            stmts.append(self.sql_settings())
        if self.on("errors") and r.random() < 0.1:
            stmts.append(self.sql_fail())  # rolls back the SETs of the same implicit transaction
        if self.on("extended") and r.random() < 0.3:
            msgs = []
            for s in stmts:
                msgs += self.ext_sql(s)
            return Step("set", [Unit(msgs + [SYNC], "S")])
        if r.random() < 0.5:
            return Step("set", [Unit.query("; ".join(stmts))])
        return Step("set", [Unit.query(s) for s in stmts])

    def act_txn(self):
        r = self.r
        stmts = [self.sql_txn()]
        self.note(stmts[0])
        for _ in range(r.randint(0, 2)):
            stmts.append(self.any_stmt())
        if self.on("extended") and r.random() < 0.3:
            msgs = []
            for s in stmts:
                msgs += [m_parse("", s), m_bind("", "", []), m_execute("", 0)]
            return Step("txn", [Unit(msgs + [SYNC], "S")])
        if r.random() < 0.5:
            return Step("txn", [Unit.query("; ".join(stmts))])
        return Step("txn", [Unit.query(s) for s in stmts])

    def end_txn_step(self):
        sql = self.sql_txn_end()
        self.note(sql)
        if self.on("extended") and self.r.random() < 0.3:
            return Step(
                "txn end", [Unit([m_parse("", sql), m_bind("", "", []), m_execute("", 0), SYNC], "S")]
            )
        return Step("txn end", [Unit.query(sql)])

    def prepare_stmts(self):
        r = self.r
        name = r.choice(("q1", "q2"))
        k = r.random()
        stmts = []
        if name not in self.sqlprep or k < 0.2:
            # PREPARE of an existing name is an error (42P05): mostly DEALLOCATE it first.
            if name in self.sqlprep and (not self.on("errors") or r.random() < 0.8):
                stmts.append(self.sql_deallocate(name))
            stmts.append(self.sql_prepare(name))
            if r.random() < 0.6:
                stmts.append(self.sql_execute(name))
        elif k < 0.85:
            stmts += [self.sql_execute(name) for _ in range(r.randint(1, 2))]
        else:
            stmts.append(self.sql_deallocate(name))
        return stmts

    def act_prepare(self):
        stmts = self.prepare_stmts()
        if self.r.random() < 0.5:
            return Step("prepare", [Unit.query("; ".join(stmts))])
        return Step("prepare", [Unit.query(s) for s in stmts])

    def act_xprepare(self):
        r = self.r
        stmts = self.prepare_stmts()
        parts = []
        for s in stmts:
            if r.random() < 0.15:
                # A protocol-level statement that itself runs an SQL-level one.
                name = r.choice(("s1", "s2", "s3"))
                close = [m_close(b"S", name)] if name in self.stmts else []
                self.stmts.pop(name, None)
                parts.append(
                    close
                    + [
                        m_parse(name, s),
                        m_bind("", name, []),
                        m_describe(b"P", ""),
                        m_execute("", 0),
                        m_close(b"S", name),
                    ]
                )
            else:
                parts.append(self.ext_sql(s, describe=r.random() < 0.3))
        if r.random() < 0.5:
            return Step("xprepare", [Unit(sum(parts, []) + [SYNC], "S")])
        return Step("xprepare", [Unit(p + [SYNC], "S") for p in parts])

    def act_crossns(self):
        """DEALLOCATE of protocol-level statements: PostgreSQL has one namespace for both kinds."""
        r = self.r
        if r.random() < 0.25:
            self.note("DEALLOCATE ALL")
            return Step("crossns", [Unit.query("DEALLOCATE ALL")])
        stmt = r.choice(("s1", "s2", "s3"))
        sql = r.choice((f"DEALLOCATE {stmt}", f"DEALLOCATE PREPARE {stmt}"))
        self.stmts.pop(stmt, None)
        if r.random() < 0.5:
            return Step("crossns", [Unit.query(sql)])
        return Step("crossns", [Unit(self.ext_sql(sql) + [SYNC], "S")])

    def act_crossexec(self):
        """Using one kind of prepared statement through the other's messages."""
        r = self.r
        k = r.random()
        stmt = r.choice(("s1", "s2", "s3"))
        q = r.choice(("q1", "q2"))
        if k < 0.35:
            # Bind to an SQL-level prepared statement by its name.
            kind = self.sqlprep.get(q)
            params = [str(r.randint(0, 9)).encode()] if kind == "sel" else []
            if kind == "ins":
                params = [str(self.new_id()).encode(), b"bound"]
            return Step(
                "crossexec", [Unit([m_describe(b"S", q), m_bind("", q, params), m_execute("", 0), SYNC], "S")]
            )
        if k < 0.7:
            # EXECUTE of a protocol-level statement by SQL.
            kind = self.stmts.get(stmt)
            arg = f"({r.randint(0, 5)})" if kind in ("sel", "series", "upd", "del", "div", "badcol") else ""
            return Step("crossexec", [Unit.query(f"EXECUTE {stmt}{arg}")])
        if k < 0.85 or not self.show_prepared:
            # Closing an SQL-level statement through the protocol deallocates it.
            self.sqlprep.pop(q, None)
            return Step("crossexec", [Unit([m_close(b"S", q), SYNC], "S")])
        return Step(
            "crossexec",
            [
                Unit.query(
                    "SELECT name, statement, from_sql FROM pg_catalog.pg_prepared_statements ORDER BY name"
                )
            ],
        )

    def act_terminate(self):
        self.forget_session()
        self.reconnect = True
        return Step("terminate", terminate=True)

    def act_terminate_pending(self):
        r = self.r
        units = [Unit.query(self.any_stmt()) for _ in range(r.randint(1, 2))]
        if self.on("extended") and r.random() < 0.5:
            units.append(Unit(self.ext_group() + [SYNC], "S"))
        step = self.act_terminate()
        step.units, step.label = units, "terminate with answers pending"
        return step

    def cache_read(self):
        r, k = self.r, self.k
        return r.choice(
            [
                f"SELECT id, n FROM {k} ORDER BY id",
                f"SELECT sum(n), count(*) FROM {k}v",
                f"SELECT n FROM {k} WHERE id = {r.randint(1, 4)}",
                f"SELECT a.id, b.n FROM {k} a JOIN {k}v b ON a.id = b.id ORDER BY 1",
            ]
        )

    def cache_write(self):
        r, k = self.r, self.k
        i = r.randint(1, 4)
        return r.choice(
            [
                f"UPDATE {k} SET n = n + 1 WHERE id = {i}",
                f"UPDATE {k}v SET n = n + 10 WHERE id = {i}",
                f"INSERT INTO {k} VALUES ({i}, 0) ON CONFLICT (id) DO UPDATE SET n = {k}.n + 100",
                f"DELETE FROM {k} WHERE id = {i}",
                f"INSERT INTO {k} SELECT g, g FROM generate_series(1, 4) g ON CONFLICT DO NOTHING",
                f"TRUNCATE {k}",
            ]
        )

    def cache_unit(self, sql):
        """One statement of the cache group: a Query, or an extended batch that describes it."""
        r = self.r
        if self.on("extended") and r.random() < 0.4:
            return Unit(self.ext_sql(sql, describe=r.random() < 0.8) + [SYNC], "S")
        self.note(sql)
        return Unit.query(sql)

    def cache_param_read(self):
        """A read with a parameter, in text or binary, results in either format."""
        r = self.r
        i = r.randint(1, 4)
        binary = r.random() < 0.5
        param = struct.pack("!i", i) if binary else str(i).encode()
        msgs = [
            m_parse("", f"SELECT id, n FROM {self.k} WHERE id >= $1 ORDER BY id", (23,)),
            m_bind("", "", [param], (1,) if binary else (), r.choice(((), (1,)))),
            m_describe(b"P", ""),
            m_execute("", 0),
            SYNC,
        ]
        return Unit(msgs, "S")

    def act_cache(self):
        r = self.r
        roll = r.random()
        if roll < 0.55:
            units = []
            for _ in range(r.randint(1, 3)):
                if self.on("extended") and r.random() < 0.25:
                    units.append(self.cache_param_read())
                else:
                    units.append(self.cache_unit(self.cache_read()))
            return Step("cache", units)
        if roll < 0.75 or self.in_txn:
            return Step("cache", [self.cache_unit(self.cache_write())])
        # A transaction: reads, perhaps a write and reads that must see it, then its end.
        stmts = ["BEGIN"] + [self.cache_read() for _ in range(r.randint(1, 2))]
        if r.random() < 0.5:
            stmts += [self.cache_write(), self.cache_read()]
        stmts.append(r.choice(("COMMIT", "ROLLBACK")))
        return Step("cache", [self.cache_unit(s) for s in stmts])

    def act_notify(self):
        r = self.r
        ch = f"fz_{self.c}_ch"
        sql = r.choice(
            [
                f"LISTEN {ch}",
                f"NOTIFY {ch}, 'n{r.randint(0, 9)}'",
                f"SELECT pg_notify('{ch}', 'p{r.randint(0, 9)}')",
                "UNLISTEN *",
                f"UNLISTEN {ch}",
                f"LISTEN {ch}; NOTIFY {ch}, 'both'",
            ]
        )
        return Step("notify", [Unit.query(sql)])

    def act_temp(self):
        sql = self.r.choice(
            [
                "CREATE TEMP TABLE IF NOT EXISTS fz_tmp (a int, b text)",
                f"INSERT INTO fz_tmp VALUES ({self.c}, 'x')",
                "SELECT count(*), max(a) FROM fz_tmp",
                "DROP TABLE IF EXISTS fz_tmp",
                "CREATE TEMP TABLE fz_tmp2 ON COMMIT DROP AS SELECT 1 AS a",
            ]
        )
        return Step("temp", [Unit.query(sql)])

    def act_discard(self):
        sql = self.r.choice(["DISCARD ALL", "DISCARD ALL", "DISCARD PLANS", "DISCARD TEMP"])
        if not self.may_reset(sql):
            sql = "DISCARD PLANS"
        self.note(sql)
        return Step("discard", [Unit.query(sql)])

    def act_protoerr(self):
        r = self.r
        kinds = self.ext_kinds()
        kind = r.choice(list(kinds))
        sql, pkinds = kinds[kind]
        k = r.random()
        if k < 0.25:
            wrong = [b"1"] * (len(pkinds) + r.choice((-1, 1)) if pkinds else 1)
            msgs = [m_parse("", sql), m_bind("", "", wrong), m_execute("", 0)]
        elif k < 0.35:
            msgs = [m_describe(b"S", "nosuch")]
        elif k < 0.45:
            msgs = [m_execute("nosuch", 0)]
        elif k < 0.55:
            msgs = [m_bind("", "nosuch", []), m_execute("", 0)]
        elif k < 0.62:
            msgs = [m_close(b"S", "nosuch"), m_close(b"P", "nosuch")]
        elif k < 0.7:
            msgs = [m_parse("", "SELECT 1, 2, 3, 4"), m_bind("", "", [], (), (0, 1)), m_execute("", 0)]
        elif k < 0.78:
            msgs = [
                m_parse("", "SELECT $1::int + 1", (OID_INT4,)),
                m_bind("", "", [b"\0\0\1"], (1,)),
                m_execute("", 0),
            ]
        elif k < 0.86:
            msgs = [m_parse("", "SELECT 1; SELECT 2")]
        elif k < 0.93:
            msgs = [m_parse("", "SELECT $1", (4294967295,)), m_bind("", "", [b"1"]), m_execute("", 0)]
        else:
            # A second Parse of an existing name, without Close.
            name = r.choice(("s1", "s2", "s3"))
            msgs = [m_parse(name, sql)]
            self.stmts.setdefault(name, kind)
        return Step("protocol error", [Unit(msgs + [SYNC], "S")])


# ------------------------------------------------------------------------------------------------
# Running clients


class Context:
    def __init__(self, args, seed, features):
        self.args = args
        self.seed = seed
        self.features = features
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures = []  # (client, kind, report)
        self.deadline = time.monotonic() + args.seconds
        self.steps = collections.Counter()
        self.messages = collections.Counter()
        self.current = {}  # client -> (step number, label) of the step in flight

    def fail(self, who, kind, report):
        with self.lock:
            self.failures.append((who, kind, report))
        self.stop.set()

    def time_left(self):
        return time.monotonic() < self.deadline and not self.stop.is_set()

    def proxy_alive(self):
        pid = self.args.proxy_pid
        if not pid:
            return None
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def repro(self, only_client=None, steps=None):
        a = self.args
        parts = [
            os.path.basename(sys.argv[0]),
            "--seed",
            str(self.seed),
            "--mode",
            a.mode,
            "--pool-mode",
            a.pool_mode,
            "--clients",
            str(a.clients),
        ]
        if a.features:
            parts.append(f"--features={a.features}")
        if a.no_large:
            parts.append("--no-large")
        if only_client is None:
            only_client = a.only_client
        if only_client is not None:
            parts += ["--only-client", str(only_client)]
        if steps:
            parts += ["--steps", str(steps)]
        parts += ["--direct-port", "PORT", "--proxy-port", "PORT"]
        return " ".join(parts)


def _listing(title, transcript, first_diff, budget=40):
    items = transcript.items
    lo = max(0, first_diff - 8)
    hi = min(len(items), lo + budget)
    out = [f"  {title} ({len(items)} messages):"]
    if lo:
        out.append(f"       ... {lo} earlier messages (equal)")
    for i in range(lo, hi):
        mark = ">>" if i == first_diff else "  "
        text = items[i][1]
        out.append(f"   {mark} {i:3d} {text if len(text) < 200 else text[:197] + '...'}")
    if hi < len(items):
        out.append(f"       ... {len(items) - hi} more")
    return out


def mismatch_report(ctx, client, step_no, step, history, direct, proxy, side_labels=("direct", "proxy")):
    dk, pk = direct.keys(), proxy.keys()
    first = next((i for i, (a, b) in enumerate(zip(dk, pk)) if a != b), min(len(dk), len(pk)))
    if proxy.has("<timeout>"):
        kind = "HANG"
    elif proxy.has("<closed>") and ctx.proxy_alive() is False:
        kind = "CRASH (pgstash is gone)"
    elif direct.has("<timeout>"):
        kind = "FUZZER ERROR (PostgreSQL itself did not answer as the fuzzer expected)"
    else:
        kind = "MISMATCH"
    lines = [f"=== {kind}: seed {ctx.seed}, client {client}, step {step_no} ({step.label}) ==="]
    lines.append("frontend messages of the last steps (oldest first):")
    for n, s in history:
        lines.append(f"  step {n} ({s.label}){'  <== this step' if n == step_no else ''}:")
        for ln in s.lines()[:30]:
            lines.append(f"    {ln}")
    lines.append(f"answers (first difference at message {first}):")
    lines += _listing(side_labels[0], direct, first)
    lines += _listing(side_labels[1], proxy, first)
    lines.append(f"this client alone: {ctx.repro(only_client=client, steps=step_no + 1)}")
    return kind, "\n".join(lines)


def run_client(ctx, idx):
    args = ctx.args
    gen = Generator(ctx.seed, idx, ctx.features, args.pool_mode)
    sides = [
        Side(args.host, args.direct_port, ctx.db_direct, args.user, gen.startup, args.timeout),
        Side(args.host, args.proxy_port, ctx.db_proxy, args.user, gen.startup, args.timeout),
    ]
    history = collections.deque(maxlen=args.history)
    step_no = 0

    def play(step):
        nonlocal step_no
        history.append((step_no, step))
        ctx.current[idx] = (step_no, step.label)
        direct = sides[0].run(step)
        proxy = sides[1].run(step)
        if args.trace is not None and args.trace == idx:
            print(f"[client {idx} step {step_no} {step.label}]", *step.lines(), sep="\n    ", file=sys.stderr)
            print("  direct:", *[s for _, s in direct.items], sep="\n    ", file=sys.stderr)
            print("  proxy: ", *[s for _, s in proxy.items], sep="\n    ", file=sys.stderr)
        ctx.steps[idx] += 1
        ctx.messages[idx] += len(direct.items)
        same = direct.keys() == proxy.keys() and not direct.has("<timeout>")
        if not same:
            kind, report = mismatch_report(ctx, idx, step_no, step, history, direct, proxy)
            ctx.fail(idx, kind, report)
        step_no += 1
        return same

    try:
        for step in gen.setup_steps():
            if not play(step):
                return
        while ctx.time_left() and (not args.steps or step_no < args.steps):
            if not play(gen.next_step()):
                return
        if ctx.stop.is_set():
            return
        for step in gen.final_steps():
            if not play(step):
                return
        if sides[0].known != sides[1].known:
            diff = sorted(set(sides[0].known.items()) ^ set(sides[1].known.items()))
            ctx.fail(
                idx,
                "MISMATCH",
                f"=== MISMATCH: seed {ctx.seed}, client {idx}: final ParameterStatus values "
                f"differ: direct {sides[0].known}, proxy {sides[1].known} (differences {diff}) ===",
            )
    except Exception as e:  # a fuzzer bug must not look like a pass
        ctx.fail(
            idx,
            "FUZZER ERROR",
            f"=== FUZZER ERROR in client {idx} at step {step_no}: {e!r}\n" + traceback.format_exc(),
        )
    finally:
        for s in sides:
            s.drop()


# ------------------------------------------------------------------------------------------------
# The malformed client


class Scenario:
    """One connection of the malformed client: optional valid traffic, then bad bytes."""

    def __init__(self, name, bad, startup=True, before=(), close=False):
        self.name = name
        self.bad = bad  # list of FMsg (raw frames)
        self.startup = startup  # do a valid startup first
        self.before = list(before)  # [(msgs, read_until)] with read_until b"Z", b"G" or None
        self.close = close  # close right after the bad bytes, expect nothing


class MalformedClient:
    def __init__(self, ctx):
        self.ctx = ctx
        self.r = random.Random(f"{ctx.seed}/malformed")
        self.args = ctx.args
        self.params = {"user": self.args.user, "database": ctx.db_proxy, "application_name": "fz_malformed"}
        self.count = 0

    def header(self, tag, length, summary, extra=b""):
        return FMsg(tag + struct.pack("!I", length & 0xFFFFFFFF) + extra, summary)

    def valid_traffic(self, copy=True):
        """Valid messages before the bad ones, leaving the session in some state: idle, in a
        transaction (maybe failed), in an unsynced extended batch, or (copy) in COPY FROM."""
        r = self.r
        choice = r.randrange(7 if copy else 6)
        if choice == 0:
            return []
        if choice == 1:
            return [([m_query("SELECT 1")], b"Z")]
        if choice == 2:
            return [([m_query("BEGIN")], b"Z"), ([m_query("SELECT 2")], b"Z")]
        if choice == 3:
            return [([m_query("BEGIN; SELECT 1/0")], b"Z")]
        if choice == 4:
            # An extended batch with no Sync yet: the server connection is held for it.
            return [([m_parse("", "SELECT $1::int"), m_bind("", "", [b"7"]), m_execute("", 0)], None)]
        if choice == 5:
            return [([m_parse("s1", "SELECT 42"), m_bind("p1", "s1", []), m_execute("p1", 1), FLUSH], None)]
        return [([m_query("COPY fz_m_t FROM STDIN")], b"G"), ([m_copy_data(b"1\tx\n")], None)]

    def scenario(self):
        r = self.r
        k = r.randrange(16)
        junk = bytes(r.randrange(256) for _ in range(r.randint(0, 40)))
        if k == 0:
            n = r.choice((0, 3, 4, 7))
            return Scenario(
                "startup packet length below 8",
                [FMsg(struct.pack("!i", n) + junk[: max(0, n - 4)], f"startup length {n}")],
                startup=False,
            )
        if k == 1:
            n = r.choice((0x7FFFFFFF, 0x40000000, 0xFFFFFFFF))
            return Scenario(
                "huge startup packet length",
                [
                    FMsg(
                        struct.pack("!I", n) + struct.pack("!i", PROTOCOL_3) + b"user\0",
                        f"startup length {n:#x}",
                    )
                ],
                startup=False,
            )
        if k == 2:
            version = r.choice(((2 << 16), (9 << 16) | 9, 0, 1 << 16))
            body = struct.pack("!i", version) + b"user\0postgres\0\0"
            return Scenario(
                "unsupported protocol version",
                [FMsg(struct.pack("!i", len(body) + 4) + body, f"startup version {version:#x}")],
                startup=False,
            )
        if k == 3:
            body = struct.pack("!i", PROTOCOL_3) + r.choice(
                (b"database\0x\0\0", b"user\0postgres", b"user\0\0", b"user\0postgres\0database\0")
            )
            return Scenario(
                "startup packet without user or terminator",
                [FMsg(struct.pack("!i", len(body) + 4) + body, f"startup body {body!r}")],
                startup=False,
            )
        if k == 4:
            # Garbage right behind the startup packet, in the same write. Its first frame is
            # complete, so the answer never depends on waiting for more bytes.
            bad = frame(bytes([r.choice(b"\x00\x01az~\xff")]), junk, "unknown frame")
            start = m_startup(self.params)
            return Scenario(
                "garbage after the startup packet",
                [FMsg(start.wire + bad.wire + junk, f"startup + {len(bad.wire) + len(junk)} garbage bytes")],
                startup=False,
            )
        if k == 5:
            n = r.choice((0, 1, 2, 3))
            return Scenario(
                "frame length below 4",
                [self.header(bytes([r.choice(b"QPBSE")]), n, f"frame length {n}")],
                before=self.valid_traffic(),
            )
        if k == 6:
            n = r.choice((0x40000001, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000))
            return Scenario(
                "huge frame length",
                [self.header(bytes([r.choice(b"QPBd")]), n, f"frame length {n:#x}", b"SELECT")],
                before=self.valid_traffic(),
            )
        if k == 7:
            tag = bytes([r.choice(b"\x00\x01AaZz~\xff!1")])
            return Scenario(
                "unknown message type", [frame(tag, junk, f"frame type {tag!r}")], before=self.valid_traffic()
            )
        if k == 8:
            body = r.choice(
                (
                    b"\0\0" + struct.pack("!hh", 0, 3) + struct.pack("!i", 1) + b"1",  # 3 params, 1 given
                    b"\0\0"
                    + struct.pack("!hh", 0, 1)
                    + struct.pack("!i", 1000)
                    + b"12",  # length past the end
                    b"\0\0" + struct.pack("!hh", 0, 1) + struct.pack("!i", -2),  # negative length
                    b"\0\0" + struct.pack("!h", 5) + struct.pack("!h", 1),  # 5 formats, 1 given
                    b"p1",  # no terminator
                    b"\0\0" + struct.pack("!hh", 0, 1) + struct.pack("!i", 1) + b"1" + struct.pack("!h", 2),
                )
            )
            msgs = [
                m_parse("", "SELECT $1::int"),
                frame(b"B", body, f"truncated Bind {body!r}"),
                m_execute("", 0),
                SYNC,
            ]
            return Scenario("truncated Bind", msgs, before=self.valid_traffic())
        if k == 9:
            body = r.choice(
                (b"s1", b"s1\0SELECT 1", b"s1\0SELECT 1\0\0\1", b"\0SELECT 1\0" + struct.pack("!h", 3))
            )
            return Scenario(
                "truncated Parse",
                [frame(b"P", body, f"truncated Parse {body!r}"), SYNC],
                before=self.valid_traffic(),
            )
        if k == 10:
            tag, body = r.choice(
                (
                    (b"E", b"\0\0\0"),
                    (b"D", b"Xfoo\0"),
                    (b"C", b"Qfoo\0"),
                    (b"D", b"S"),
                    (b"S", b"abcd"),
                    (b"Q", b"SELECT 1"),
                )
            )
            # PostgreSQL ignores a Sync during COPY, however malformed, and so may pgstash.
            return Scenario(
                "malformed Execute/Describe/Close/Sync/Query",
                [frame(tag, body, f"{tag.decode()} with body {body!r}"), SYNC],
                before=self.valid_traffic(copy=tag != b"S"),
            )
        if k == 11:
            wire = struct.pack("!ii", 8, SSL_REQUEST_CODE)
            return Scenario(
                "SSLRequest in the middle of a session",
                [FMsg(wire, "SSLRequest mid-session")],
                before=self.valid_traffic(),
            )
        if k == 12:
            tag = bytes([r.choice(b"QPBd")])
            n = r.choice((100, 70000, 5000000))
            cut = self.header(tag, n, f"frame {tag!r} of length {n}, cut after 10 bytes", b"SELECT 1, ")
            return Scenario("frame cut off, then close", [cut], before=self.valid_traffic(), close=True)
        if k == 13:
            body = struct.pack("!i", PROTOCOL_3) + b"user\0postgres\0database"
            return Scenario(
                "startup packet cut off, then close",
                [FMsg(struct.pack("!i", 200) + body, "startup packet cut off")],
                startup=False,
                close=True,
            )
        if k == 14:
            wire = struct.pack("!iiii", 16, CANCEL_REQUEST_CODE, r.randrange(1 << 31), r.randrange(1 << 31))
            return Scenario("CancelRequest with unknown key", [FMsg(wire, "CancelRequest")], startup=False)
        # Not malformed: a valid query in single bytes, to check frame reassembly.
        return Scenario(
            "valid query sent a few bytes at a time",
            [SYNC, m_query("ROLLBACK"), m_query("SELECT 'fz-dribble' AS answer")],
            before=self.valid_traffic(copy=False),
        )

    def run(self):
        ctx = self.ctx
        try:
            if not self.probe("at start", setup=True):
                return
            while ctx.time_left():
                sc = self.scenario()
                self.count += 1
                ctx.current["malformed"] = (
                    self.count,
                    sc.name + ": " + "; ".join(m.summary for m in sc.bad)[:300],
                )
                problem = self.play(sc)
                if problem:
                    self.report(sc, problem)
                    return
                if self.count % 3 == 0 and not self.probe(f"after scenario {self.count} ({sc.name})"):
                    return
            self.probe("at the end")
        except Exception as e:  # a fuzzer bug must not look like a pass
            ctx.fail(
                "malformed",
                "FUZZER ERROR",
                f"=== FUZZER ERROR in the malformed client: {e!r}\n" + traceback.format_exc(),
            )

    def report(self, sc, problem):
        lines = [
            f"=== MALFORMED CLIENT: seed {self.ctx.seed}, scenario {self.count} ({sc.name}): {problem} ==="
        ]
        for msgs, _ in sc.before:
            lines += [f"    {m.summary}" for m in msgs]
        lines += [f"    {m.summary}  <== bad bytes" for m in sc.bad]
        self.ctx.fail("malformed", "MALFORMED", "\n".join(lines))

    def _connect_ready(self, conn, deadline):
        conn.send(m_startup(self.params).wire)
        while True:
            msg = conn.read_msg(deadline)
            if msg is None or msg[0] == b"E":
                return f"pgstash refused a valid startup ({'closed' if msg is None else normalise(*msg)[1]})"
            if msg[0] == b"Z":
                return None

    def play(self, sc):
        args = self.args
        deadline = time.monotonic() + args.timeout
        conn = Conn(args.host, args.proxy_port, args.timeout)
        try:
            if sc.startup:
                problem = self._connect_ready(conn, deadline)
                if problem:
                    return problem
                for msgs, until in sc.before:
                    for m in msgs:
                        conn.send(m.wire)
                    while until:
                        msg = conn.read_msg(deadline)
                        if msg is None:
                            return f"pgstash closed the connection on valid traffic ({msgs[0].summary})"
                        if msg[0] in until:
                            break
            if sc.name.startswith("valid query"):
                return self._dribble(conn, sc, deadline)
            for m in sc.bad:
                conn.send(m.wire)
            conn.flush(deadline)
            if sc.close:
                return None
            got_error, ready = False, 0
            try:
                while not got_error:
                    msg = conn.read_msg(deadline)
                    if msg is None:
                        return None
                    got_error = msg[0] == b"E"
                    ready += msg[0] == b"Z"
            except Timeout:
                if ready:
                    return f"accepted without an error: {ready} ReadyForQuery, no ErrorResponse, no close"
                raise
            # Still open after the error: it must go on answering. The ROLLBACK ends a
            # transaction the error may have aborted, so that the marker row can come back.
            marker = f"fz-alive-{self.count}".encode()
            conn.send(SYNC.wire + m_query("ROLLBACK").wire + m_query(f"SELECT '{marker.decode()}'").wire)
            while True:
                msg = conn.read_msg(deadline)
                if msg is None:
                    return None
                if msg[0] == b"D" and msg[1].endswith(marker):
                    return None
        except Timeout:
            return f"no ErrorResponse, answer or close within {args.timeout:g} s"
        except BadFrame as e:
            return f"unparseable answer: {e}"
        except OSError as e:
            return None if sc.close else f"socket error {e}"
        finally:
            conn.close()

    def _dribble(self, conn, sc, deadline):
        data = b"".join(m.wire for m in sc.bad)
        for i in range(0, len(data), 3):
            conn.send(data[i : i + 3])
            conn.flush(deadline)
            time.sleep(0.002)
        while True:
            msg = conn.read_msg(deadline)
            if msg is None:
                return "pgstash closed the connection on valid messages sent in small pieces"
            if msg[0] == b"D" and msg[1].endswith(b"fz-dribble"):
                return None

    def probe(self, when, setup=False):
        """pgstash must be alive and serve a new connection."""
        ctx, args = self.ctx, self.args
        if ctx.proxy_alive() is False:
            ctx.fail(
                "malformed",
                "CRASH (pgstash is gone)",
                f"=== CRASH: seed {ctx.seed}: the pgstash process is gone, noticed {when} ===",
            )
            return False
        deadline = time.monotonic() + args.timeout
        try:
            conn = Conn(args.host, args.proxy_port, args.timeout)
        except OSError as e:
            ctx.fail(
                "malformed", "DOWN", f"=== DOWN: seed {ctx.seed}: cannot connect to pgstash {when}: {e} ==="
            )
            return False
        try:
            problem = self._connect_ready(conn, deadline)
            if not problem:
                sql = "CREATE TABLE IF NOT EXISTS fz_m_t (a int, b text)" if setup else "SELECT 42"
                conn.send(m_query(sql).wire)
                while True:
                    msg = conn.read_msg(deadline)
                    if msg is None:
                        problem = "closed during a simple query"
                        break
                    if msg[0] == b"E":
                        problem = normalise(*msg)[1]
                    if msg[0] == b"Z":
                        break
        except Timeout:
            problem = f"no answer within {args.timeout:g} s"
        finally:
            conn.close()
        if problem:
            ctx.fail(
                "malformed", "DOWN", f"=== pgstash does not serve a new connection {when}: {problem} ==="
            )
            return False
        return True


# ------------------------------------------------------------------------------------------------
# Setup and main


def admin(args, sqls):
    """Runs statements on PostgreSQL directly, one Query each; raises on an error."""
    conn = Conn(args.host, args.direct_port, args.timeout)
    deadline = time.monotonic() + 4 * args.timeout
    try:
        conn.send(m_startup({"user": args.user, "database": "postgres"}).wire)
        for sql in [None] + list(sqls):
            if sql is not None:
                conn.send(m_query(sql).wire)
            error = None
            while True:
                msg = conn.read_msg(deadline)
                if msg is None:
                    raise RuntimeError(f"PostgreSQL closed the connection ({error or 'no error'})")
                if msg[0] == b"E":
                    error = normalise(*msg)[1]
                if msg[0] == b"Z":
                    break
            if error:
                raise RuntimeError(f"{sql or 'startup'}: {error}")
    finally:
        conn.close()


def parse_features(spec):
    """A comma list of groups: "-a" removes a, "a" adds it, "all" and "default" name the whole
    sets. Plain names alone select only themselves; "-a" alone removes a from the default."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    only_removals = all(i.startswith("-") for i in items)
    features = set(FEATURES) - DEFAULT_OFF if only_removals else set()
    for item in items:
        name = item.lstrip("-")
        if name == "all":
            features |= set(FEATURES)
        elif name == "default":
            features |= set(FEATURES) - DEFAULT_OFF
        elif name not in FEATURES:
            raise SystemExit(f"differential_fuzz: unknown feature {name!r} (--list-features lists them)")
        elif item.startswith("-"):
            features.discard(name)
        else:
            features.add(name)
    return features


def cluster_port():
    env = os.path.join(os.environ.get("PGSTASH_TEST_CLUSTER_DIR", ""), "env")
    try:
        with open(env) as f:
            for line in f:
                if line.startswith("PGSTASH_PG_PORT="):
                    return int(line.split("=", 1)[1])
    except OSError:
        pass
    return None


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Feature groups (for --features):\n"
        + "\n".join(f"  {k:12} {v}" + (" (opt-in)" if k in DEFAULT_OFF else "") for k, v in FEATURES.items()),
    )
    p.add_argument("--seed", type=int, help="seed of every client's sequence (default: random, printed)")
    p.add_argument("--seconds", type=float, default=30, help="time budget for the random steps")
    p.add_argument(
        "--steps", type=int, default=0, help="stop each client after this many steps (0: no limit)"
    )
    p.add_argument("--clients", type=int, default=5, help="concurrent clients compared (default 5)")
    p.add_argument("--mode", choices=("normal", "malformed"), default="normal")
    p.add_argument(
        "--pool-mode",
        choices=("session", "transaction"),
        default="transaction",
        help="pgstash's pool.mode: in transaction mode only client 0 pins its connection",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--user", default="postgres")
    p.add_argument("--direct-port", type=int, help="PostgreSQL (default: from $PGSTASH_TEST_CLUSTER_DIR/env)")
    p.add_argument("--proxy-port", type=int, help="pgstash (default: the direct port, a self-check)")
    p.add_argument("--proxy-pid", type=int, help="pgstash's pid, to tell a crash from a close")
    p.add_argument("--timeout", type=float, default=20, help="seconds a step may wait for its answers")
    p.add_argument(
        "--no-large", action="store_true", help="no message of 64 kB or more (= --features=-large)"
    )
    p.add_argument(
        "--features",
        default="",
        help="comma list of groups: '-a,-b' the default set without a and b; 'a,b' only a and b; "
        "'default,c' or 'all' to add opt-in groups (" + ",".join(sorted(DEFAULT_OFF)) + ")",
    )
    p.add_argument("--list-features", action="store_true")
    p.add_argument(
        "--only-client",
        type=int,
        metavar="N",
        help="replay only client N's sequence (the same steps as in a full run, without the others)",
    )
    p.add_argument("--history", type=int, default=4, help="steps shown before a mismatch")
    p.add_argument("--trace", type=int, metavar="CLIENT", help="print every step of one client to stderr")
    p.add_argument("--keep-databases", action="store_true")
    args = p.parse_args()
    if args.list_features:
        for k, v in FEATURES.items():
            print(f"{k:12} {v}")
        sys.exit(0)
    if args.direct_port is None:
        args.direct_port = cluster_port()
        if args.direct_port is None:
            p.error("--direct-port is needed (or PGSTASH_TEST_CLUSTER_DIR with an env file)")
    if args.proxy_port is None:
        args.proxy_port = args.direct_port
    if args.clients < 1:
        p.error("--clients must be at least 1")
    return args


def main():
    args = parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    features = parse_features(args.features)
    if args.no_large:
        features.discard("large")
    ctx = Context(args, seed, features)
    self_check = args.proxy_port == args.direct_port
    print(
        f"differential_fuzz: seed {seed}, mode {args.mode}, pool mode {args.pool_mode}, "
        f"{args.clients} clients, "
        f"{args.seconds:g} s, features {','.join(sorted(features))}"
        + (" (direct against direct: a self-check)" if self_check else ""),
        flush=True,
    )

    # Databases of their own, named apart from the seed so that concurrent runs never share one.
    tag = f"{os.getpid()}_{random.SystemRandom().randrange(1 << 20)}"
    ctx.db_direct, ctx.db_proxy = f"fz_{tag}_direct", f"fz_{tag}_proxy"
    try:
        admin(args, [f"CREATE DATABASE {ctx.db_direct}", f"CREATE DATABASE {ctx.db_proxy}"])
    except (OSError, RuntimeError, Timeout) as e:
        print(f"differential_fuzz: setup failed: {e}", file=sys.stderr)
        return 2

    indexes = [args.only_client] if args.only_client is not None else range(args.clients)
    threads = [threading.Thread(target=run_client, args=(ctx, i), daemon=True) for i in indexes]
    malformed = None
    if args.mode == "malformed":
        malformed = MalformedClient(ctx)
        threads.append(threading.Thread(target=malformed.run, daemon=True))
    for t in threads:
        t.start()
    # Each step is bounded by --timeout; this only guards against a fuzzer bug.
    hard_deadline = ctx.deadline + 10 * args.timeout + 30
    for t in threads:
        t.join(max(0.0, hard_deadline - time.monotonic()))
    stuck = [t for t in threads if t.is_alive()]
    if stuck:
        ctx.fail(
            "-",
            "FUZZER ERROR",
            f"=== FUZZER ERROR: {len(stuck)} client threads did not finish; in flight: "
            f"{dict(ctx.current)} ===",
        )
    if ctx.proxy_alive() is False and not any(k.startswith("CRASH") for _, k, _ in ctx.failures):
        ctx.fail(
            "-",
            "CRASH (pgstash is gone)",
            f"=== CRASH: seed {seed}: the pgstash process is gone at the end ===",
        )

    if not args.keep_databases:
        try:
            admin(
                args,
                [
                    f"DROP DATABASE IF EXISTS {ctx.db_direct} WITH (FORCE)",
                    f"DROP DATABASE IF EXISTS {ctx.db_proxy} WITH (FORCE)",
                ],
            )
        except (OSError, RuntimeError, Timeout) as e:
            print(f"differential_fuzz: warning: could not drop the run's databases: {e}", file=sys.stderr)

    total_steps, total_msgs = sum(ctx.steps.values()), sum(ctx.messages.values())
    summary = (
        f"differential_fuzz: {total_steps} steps, {total_msgs} answers compared "
        f"(per client: {dict(sorted(ctx.steps.items()))})"
    )
    if malformed:
        summary += f"; malformed client: {malformed.count} bad connections"
    print(summary)
    if not ctx.failures:
        print(f"differential_fuzz: PASS (seed {seed})")
        return 0
    who, kind, report = ctx.failures[0]
    print(report)
    if kind.startswith("CRASH") or ctx.proxy_alive() is False or malformed:
        # With a shared pgstash, another client's traffic may be the cause.
        print("last step of every client when it happened:")
        for c, (n, label) in sorted(ctx.current.items(), key=lambda x: str(x[0])):
            print(f"  client {c}: {'scenario' if c == 'malformed' else 'step'} {n} ({label})")
    for other_who, other_kind, other in ctx.failures[1:]:
        print(f"also: client {other_who}: {other_kind}: {other.splitlines()[0]}")
    print(f"differential_fuzz: FAIL ({kind}, client {who}, seed {seed})")
    print(f"reproduce: {ctx.repro()}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
