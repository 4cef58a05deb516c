"""What the psycopg client suites share: a pgstash per case (tests/lib/pgstash_instance.sh),
cases run in threads with a time limit (a hang fails the case instead of blocking the test), a
pgstash that dies during a case reported as a crash, and a summary.

A suite lists (name, function, timeout) cases and calls main(suite_name, cases). A case function
gets a Case, starts pgstash instances with case.start(*config_lines), and fails by raising
Failure (expect()) or any exception.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("PGSTASH_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
INSTANCE = os.path.join(SOURCE_DIR, "tests", "lib", "pgstash_instance.sh")
DB = "pgstash_test"
# Generous enough for the sanitizer build on a busy machine; a hang still ends in bounded time.
CASE_TIMEOUT = 30
SUITE = {"name": "pgstash_test"}

checks = 0
checks_lock = threading.Lock()


class Failure(Exception):
    pass


def ok(msg):
    global checks
    with checks_lock:
        checks += 1
    print(f"ok - {msg}", flush=True)


def expect(cond, msg):
    if not cond:
        raise Failure(msg)


def cluster_env(cluster_dir=None):
    env = {}
    with open(os.path.join(cluster_dir or os.environ["PGSTASH_TEST_CLUSTER_DIR"], "env")) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep:
                env[key] = value
    return env


CLUSTER = {}


def admin(dbname="postgres"):
    """A connection to the cluster itself, for setup that must not depend on pgstash."""
    return psycopg.connect(host=CLUSTER["PGSTASH_PG_SOCKET_DIR"], port=CLUSTER["PGSTASH_PG_PORT"],
                           user="postgres", dbname=dbname, autocommit=True, connect_timeout=10)


def connect(port, dbname=DB, **kw):
    params = dict(host="127.0.0.1", port=port, dbname=dbname, user="postgres",
                  connect_timeout=10, application_name=SUITE["name"], autocommit=True)
    params.update(kw)
    return psycopg.connect(**params)


def pid_alive(pid, work):
    """pgstash is still running (not a zombie, and not a recycled pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and os.fsencode(work) in cmdline


class Instance:
    def __init__(self, work, extra, cluster_dir=None, env=None):
        self.work = work
        env = dict(os.environ, **(env or {}))
        if cluster_dir:
            env["PGSTASH_TEST_CLUSTER_DIR"] = cluster_dir
        out = subprocess.run([INSTANCE, "start", work, *extra], check=True,
                             stdout=subprocess.PIPE, text=True, env=env).stdout
        port, pid = out.split()
        self.port, self.pid = int(port), int(pid)
        self.stopped = False
        who = f"pgstash (pid {self.pid})" if self.pid else "PostgreSQL itself (no pgstash)"
        print(f"   {who} on 127.0.0.1:{self.port}: {', '.join(extra)}", flush=True)

    def alive(self):
        return self.pid == 0 or pid_alive(self.pid, self.work)  # pid 0: straight to PostgreSQL

    def stop(self, show_log):
        if self.stopped:
            return True
        self.stopped = True
        env = dict(os.environ, PGSTASH_KEEP_LOG="1") if show_log else None
        return subprocess.run([INSTANCE, "stop", self.work], env=env).returncode == 0


class Case:
    """What a case function gets: instances it starts are checked and stopped by run_case."""

    def __init__(self, name, root):
        self.name = name
        self.root = root
        self.instances = []
        self.cleanups = []

    def start(self, *extra, cluster_dir=None, env=None):
        """A pgstash in front of the fixture's cluster, or of the one in `cluster_dir`; `env`
        adds to its environment."""
        work = os.path.join(self.root, f"{self.name}-{len(self.instances) + 1}")
        inst = Instance(work, list(extra), cluster_dir, env)
        self.instances.append(inst)
        return inst

    def private_cluster(self, extra_conf=""):
        """A PostgreSQL of the case's own (scripts/pg_test_cluster.sh), for what would disturb
        the shared one (a restart, other server settings); stopped when the case ends. Its
        directory and its env."""
        cluster_dir = os.path.join(self.root, f"{self.name}-cluster")
        script = os.path.join(SOURCE_DIR, "scripts", "pg_test_cluster.sh")
        env = dict(os.environ, PGSTASH_PG_EXTRA_CONF=extra_conf)
        self.cleanups.append(lambda: subprocess.run([script, "stop", cluster_dir],
                                                    stdout=subprocess.DEVNULL, check=True))
        subprocess.run([script, "start", cluster_dir], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        return cluster_dir, cluster_env(cluster_dir)

    def expect_alive(self, inst, when):
        expect(inst.alive(), f"pgstash (pid {inst.pid}) died {when}")


def run_case(name, fn, root, timeout):
    print(f"# {name}", flush=True)
    case = Case(name, root)
    error = []

    def body():
        try:
            fn(case)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            error.append(e)

    t = threading.Thread(target=body, name=name, daemon=True)
    started = time.monotonic()
    t.start()
    t.join(timeout)
    message = None
    # An instance the case stopped itself is not a crash.
    dead = [inst for inst in case.instances if not inst.stopped and not inst.alive()]
    if t.is_alive():
        message = (f"did not finish within {timeout} s: "
                   "a client is waiting for an answer that never comes")
        # Stopping pgstash closes the stuck client's socket, which lets its thread end.
        for inst in case.instances:
            inst.stop(show_log=True)
        t.join(10)
    elif error:
        e = error[0]
        if isinstance(e, Failure):
            message = str(e)
        else:
            message = f"{type(e).__name__}: {e}".strip()
            if not isinstance(e, psycopg.Error):
                traceback.print_exception(type(e), e, e.__traceback__)
    if dead:
        crash = "; ".join(f"pgstash (pid {inst.pid}) is no longer running: it crashed"
                          for inst in dead)
        message = f"{message} [{crash}]" if message else crash
    for cleanup in reversed(case.cleanups):
        try:
            cleanup()
        except Exception as e:  # noqa: BLE001 - cleanup trouble is reported, not fatal
            print(f"   (cleanup of {name}: {e})", file=sys.stderr)
    for inst in case.instances:
        if not inst.stop(show_log=message is not None) and message is None:
            message = "pgstash reported a sanitizer error"
    elapsed = time.monotonic() - started
    if message is None:
        print(f"PASS {name} ({elapsed:.1f} s)", flush=True)
        return True
    print(f"FAIL {name} ({elapsed:.1f} s): {message}", file=sys.stderr, flush=True)
    return False


# --- (a) a large bind parameter to a named statement


def main(suite, cases):
    """Runs the cases named on the command line (all by default); the exit status."""
    SUITE["name"] = suite
    if not os.environ.get("PGSTASH_TEST_CLUSTER_DIR"):
        print("FAIL: run through ctest (PGSTASH_TEST_CLUSTER_DIR is not set)", file=sys.stderr)
        return 1
    CLUSTER.update(cluster_env())
    wanted = sys.argv[1:]
    unknown = [w for w in wanted if w not in {name for name, _, _ in cases}]
    if unknown:
        print(f"FAIL: unknown case(s) {unknown}; cases: {[name for name, _, _ in cases]}",
              file=sys.stderr)
        return 2
    print(f"psycopg {psycopg.__version__}, libpq {psycopg.pq.version()}", flush=True)
    root = tempfile.mkdtemp(prefix=f"pgstash-{suite}.")
    failed = []
    ran = 0
    for name, fn, timeout in cases:
        if wanted and name not in wanted:
            continue
        ran += 1
        if not run_case(name, fn, root, timeout):
            failed.append(name)
    print(f"{ran - len(failed)} passed, {len(failed)} failed", flush=True)
    if failed:
        print(f"{suite}: FAILED: {', '.join(failed)}; files kept in {root}",
              file=sys.stderr)
        return 1
    shutil.rmtree(root, ignore_errors=True)
    print(f"{suite}: all {ran} cases ({checks} checks) passed")
    return 0
