#!/usr/bin/python3
"""The admin dashboard (proxy/dashboard.html, GET / of the admin port) in headless Chromium in
front of a live pgstash, with psycopg clients making the traffic it shows. Chromium runs with a
virtual time budget: the page's 2 s polling runs on virtual time, and the DOM is dumped (or the
screenshot taken) when the budget is spent.

  page
      GET / answers without a token: 200, text/html, with the elements the cases read; it is
      self-contained (no http:// or https:// anywhere, no src= or href=, no CSS url() or
      @import) and holds no token.
  live
      with the token in the URL fragment the page reports `ok`, a row for the test pool and the
      request, hit and miss totals as integers; after 20 reads of a cached statement the totals
      have grown by at least 20, the statement (which holds markup) is listed among the top
      cached statements as text, now() is counted as time_function, and the slow statement
      section lists the pg_sleep (GET /api/slow). The token never appears in the DOM.
  token_refused
      a wrong token shows "token refused" and the token form; no token shows the form.
  screenshot
      a 1280x1000 PNG of the dashboard under traffic, into $PGSTASH_ARTIFACT_DIR (or
      ./test-artifacts): written, and not a blank page.

Needs chromium (scripts/setup installs it; PGSTASH_CHROMIUM names another binary): the cases
fail without it. Arguments, if any, name the cases to run (all by default).
"""

import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from html.parser import HTMLParser

from admin_test import TOKEN, eventually, served_from_cache, start_admin
from cache_test import setup, simple
from case_harness import CASE_TIMEOUT, Failure, connect, expect, main, ok

POOL = {"database": "pgstash_test", "user": "postgres"}
TABLE = "dashboard_reads"
# Markup in the statement: the page must show it as text, never parse it.
SQL = f"select v from {TABLE} where id = 1 and v <> '<i>x</i>'"
BROWSER_TIMEOUT = 90
# The ids the cases read; proxy/dashboard.html keeps raw integers in the totals.
IDS = ["status", "requests-total", "cache-hits-total", "cache-misses-total", "pools-rows",
       "top-statements", "uncacheable-rows", "slow-rows", "login"]


def start_cached_admin(case):
    path = os.path.join(case.root, f"{case.name}-cache")
    return start_admin(case, "cache.enabled = true", f'cache.path = "{path}"',
                       "log.slow_query_ms = 100")


# --- the browser


def chromium():
    for name in [os.environ.get("PGSTASH_CHROMIUM"), "chromium", "chromium-browser"]:
        path = name and shutil.which(name)
        if path:
            return path
    raise Failure("chromium is not installed (scripts/setup installs it; PGSTASH_CHROMIUM "
                  "names another binary)")


def browser(case, url, *args, budget=5000):
    """Runs headless Chromium on `url` with `args` (--dump-dom, --screenshot=...) until
    `budget` ms of virtual time are spent; its stdout."""
    with tempfile.TemporaryDirectory(prefix="chromium-", dir=case.root,
                                     ignore_cleanup_errors=True) as profile:
        # --no-sandbox: the tests may run as root, where Chromium's sandbox refuses to start.
        command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                   "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                   f"--virtual-time-budget={budget}", *args, url]
        # A session of its own, so that a hang is ended with every process Chromium started.
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=BROWSER_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise Failure(f"chromium did not finish within {BROWSER_TIMEOUT} s on {url}")
    expect(proc.returncode == 0, f"chromium exited with {proc.returncode}: {err[-2000:]}")
    return out


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def elements(self, tag):
        """Descendants named `tag`, in document order."""
        for c in self.children:
            if isinstance(c, Node):
                if c.tag == tag:
                    yield c
                yield from c.elements(tag)


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Dom(HTMLParser):
    """The tree of a DOM Chromium dumped (well formed), with its elements by id."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.html = html
        self.root = self.current = Node("#document", {}, None)
        self.ids = {}
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.current)
        self.current.children.append(node)
        if "id" in node.attrs:
            self.ids[node.attrs["id"]] = node
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.current = self.current.parent

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)

    def by_id(self, id_):
        node = self.ids.get(id_)
        expect(node is not None, f"the dashboard has no element #{id_}")
        return node

    def text(self, id_):
        return self.by_id(id_).text().strip()

    def integer(self, id_):
        text = self.text(id_)
        expect(re.fullmatch(r"\d+", text), f"#{id_} is {text!r}, not an integer")
        return int(text)

    def rows(self, id_):
        """The rows of tbody `id_` (the row saying the table is empty left out) as (attributes,
        [cell text])."""
        return [(tr.attrs, [td.text().strip() for td in tr.elements("td")])
                for tr in self.by_id(id_).elements("tr") if "empty" not in tr.attrs.get("class", "")]


def dashboard(case, admin, token=TOKEN, fragment=True, budget=5000):
    """The DOM of the dashboard after `budget` ms of virtual time (2 polls at least)."""
    url = f"http://127.0.0.1:{admin.port}/" + (f"#token={token}" if fragment else "")
    html = browser(case, url, "--dump-dom", budget=budget)
    expect("<html" in html, f"chromium dumped no page: {html[:300]!r}")
    expect(token not in html, "the token is in the dashboard's DOM")
    return Dom(html)


def expect_ok(dom):
    status = dom.text("status")
    expect(status == "ok", f"the dashboard's status is {status!r}, expected 'ok'")


def pool_row(dom):
    rows = [cells for attrs, cells in dom.rows("pools-rows")
            if attrs.get("data-database") == POOL["database"] and attrs.get("data-user") == POOL["user"]]
    expect(len(rows) == 1 and rows[0][:2] == [POOL["database"], POOL["user"]],
           f"no single pools row for {POOL}: {dom.rows('pools-rows')}")
    return rows[0]


def api_requests(admin):
    return sum(s["total_query_count"] for s in admin.get("/api/stats")["stats"])


# --- cases


def case_page(case):
    inst, admin = start_admin(case)
    status, headers, body = admin.request("GET", "/", token=False)
    expect(status == 200, f"GET / without a token: {status} {body[:300]!r}")
    content_type = headers.get("Content-Type", "")
    expect(content_type.startswith("text/html"), f"GET / is {content_type!r}, not text/html")
    page = body.decode()
    expect(page.lstrip().lower().startswith("<!doctype html>"), "GET / is not an HTML page")
    for id_ in IDS:
        expect(f'id="{id_}"' in page, f"the page has no element id={id_!r}")
    ok("GET / answers the dashboard without a token")
    for what, pattern in [("an http:// or https:// URL", r"https?://"),
                          ("a src= or href= attribute", r"\b(?:src|href)\s*="),
                          ("a CSS url() or @import", r"\burl\s*\(|@import")]:
        found = re.search(pattern, page, re.IGNORECASE)
        if found:
            raise Failure(f"the page holds {what}: "
                          f"{page[max(0, found.start() - 60):found.end() + 60]!r}")
    expect(TOKEN not in page, "the page holds the token")
    ok("the page is self-contained and holds no token")
    case.expect_alive(inst, "after GET /")


def case_live(case):
    setup(f"drop table if exists {TABLE}; create table {TABLE} (id int primary key, v text);"
          f"insert into {TABLE} values (1, 'one')")
    inst, admin = start_cached_admin(case)
    with connect(inst.port) as conn:
        simple(conn, "select 1")
        eventually("the test pool in /api/pools", lambda: admin.get("/api/pools")["pools"],
                   lambda pools: any(p["database"] == POOL["database"] for p in pools))
        before = dashboard(case, admin)
        expect_ok(before)
        pool_row(before)
        requests, hits = before.integer("requests-total"), before.integer("cache-hits-total")
        misses = before.integer("cache-misses-total")
        ok(f"status ok, the pool's row, totals as integers ({requests} requests, {hits} hits)")

        # First: pgstash counts a call of a session function such as pg_sleep(), and the
        # first call of a function it has not looked up yet, as a possible write, which would
        # invalidate the cached statement.
        simple(conn, "select pg_sleep(0.3)")
        simple(conn, "select now()")
        served_from_cache(conn, SQL, TABLE)
        for _ in range(20):
            expect(simple(conn, SQL) == [("one",)], f"{SQL!r} returned the wrong rows")
        # The counters follow the answers by a moment: the page is read once the API has them.
        eventually("the reads in /api/stats", lambda: api_requests(admin),
                   lambda n: n >= requests + 22)
        after = dashboard(case, admin)
    expect_ok(after)
    pool_row(after)
    grown = after.integer("requests-total") - requests
    expect(grown >= 22, f"requests-total grew by {grown}, expected at least 22")
    grown_hits = after.integer("cache-hits-total") - hits
    expect(grown_hits >= 20, f"cache-hits-total grew by {grown_hits}, expected at least 20")
    expect(after.integer("cache-misses-total") >= misses, "cache-misses-total went back")
    ok(f"the totals grew with the traffic (+{grown} requests, +{grown_hits} hits)")

    top = [cells for _, cells in after.rows("top-statements") if cells and cells[0] == SQL]
    expect(len(top) == 1 and top[0][1] == TABLE and top[0][2] == POOL["database"]
           and int(top[0][5]) >= 20,
           f"top statements ({after.text('entries-note')!r}): {after.by_id('top-statements').text()!r}")
    expect(not list(after.by_id("top-statements").elements("i")),
           "the statement's <i> became an element: API text was parsed as HTML")
    ok("the cached statement is among the top statements, its markup shown as text")

    reasons = {attrs.get("data-reason"): cells for attrs, cells in after.rows("uncacheable-rows")}
    expect("time_function" in reasons and int(reasons["time_function"][1]) >= 1,
           f"uncacheable by reason: {reasons}")
    ok("now() is counted among the uncacheable statements as time_function")

    slow = after.rows("slow-rows")
    expect(any("pg_sleep" in cells[-1] for _, cells in slow),
           f"no pg_sleep among the slow statements ({after.text('slow-note')!r}): {slow}")
    ok("the slow statement section lists the pg_sleep")
    case.expect_alive(inst, "after the dashboard's polling")


def case_token_refused(case):
    inst, admin = start_admin(case)
    dom = dashboard(case, admin, token="not-the-admin-token")
    expect(dom.text("status") == "token refused", f"a wrong token: status {dom.text('status')!r}")
    expect("hidden" not in dom.by_id("login").attrs, "a wrong token: no token form")
    ok("a wrong token shows 'token refused' and the token form")
    dom = dashboard(case, admin, fragment=False)
    expect(dom.text("status") != "ok", "no token: status ok")
    expect("hidden" not in dom.by_id("login").attrs, "no token: no token form")
    ok("no token shows the token form")
    case.expect_alive(inst, "after the refused dashboard")


def case_screenshot(case):
    setup(f"drop table if exists {TABLE}_many; create table {TABLE}_many (id int primary key, v text);"
          f"insert into {TABLE}_many select i, 'row ' || i from generate_series(1, 40) i")
    inst, admin = start_cached_admin(case)
    stop = threading.Event()
    trouble = []

    def traffic():
        """Reads of 40 rows at random: misses at first, then mostly hits; some uncacheable."""
        try:
            with connect(inst.port) as conn:
                while not stop.is_set():
                    simple(conn, f"select v from {TABLE}_many where id = {random.randint(1, 40)}")
                    if random.random() < 0.05:
                        simple(conn, "select now()")
                    time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 - reported by the case
            trouble.append(e)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        time.sleep(1)  # something to show from the first poll on
        directory = os.environ.get("PGSTASH_ARTIFACT_DIR") or os.path.join(os.getcwd(),
                                                                          "test-artifacts")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "dashboard.png")
        if os.path.exists(path):
            os.remove(path)
        browser(case, f"http://127.0.0.1:{admin.port}/#token={TOKEN}", f"--screenshot={path}",
                "--window-size=1280,1000", budget=20000)
    finally:
        stop.set()
        worker.join(10)
    expect(not trouble, f"traffic during the screenshot failed: {trouble[:1]}")
    expect(os.path.exists(path), f"chromium wrote no screenshot at {path}")
    with open(path, "rb") as f:
        png = f.read()
    expect(png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR", f"{path} is not a PNG")
    width, height = struct.unpack(">II", png[16:24])
    expect((width, height) == (1280, 1000), f"the screenshot is {width}x{height}, not 1280x1000")
    # A blank 1280x1000 page compresses to a few KiB; the dashboard's text takes far more.
    expect(len(png) > 20000, f"the screenshot is {len(png)} bytes: a blank page?")
    print(f"   screenshot: {path} ({len(png)} bytes)", flush=True)
    ok("a screenshot of the dashboard under traffic")
    case.expect_alive(inst, "during the screenshot")


CASES = [
    ("page", case_page, CASE_TIMEOUT),
    ("live", case_live, 150),
    ("token_refused", case_token_refused, 120),
    ("screenshot", case_screenshot, 120),
]


if __name__ == "__main__":
    sys.exit(main("dashboard_test", CASES))
