#!/usr/bin/env node
// pg-cursor and pg-query-stream (over node-postgres) through pgstash, in session and in
// transaction pooling. Both read a portal in batches with Execute(max rows) and Flush, no Sync
// until the cursor closes, so outside an explicit transaction the server connection must stay
// with the client until then. Every scenario runs against PostgreSQL directly and through each
// pgstash, and must give the same results (and the expected ones): cursor batches of 100 over
// 10,000 rows, a cursor closed early, two cursors one after the other in one transaction, a stream piped to the end,
// a stream destroyed early, and other clients querying while a cursor is open (transaction
// pooling with 2 server connections: the cursor's connection must not be lent to them).
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { pipeline } = require('node:stream/promises');
const { Writable } = require('node:stream');

const {
  nodeRequire, ok, clusterEnv, startPgstash, stopPgstash, runSuite,
} = require('./node_harness');

const pg = nodeRequire('pg');
const Cursor = nodeRequire('pg-cursor');
const QueryStream = nodeRequire('pg-query-stream');

const MODES = {
  session: ['pool.mode = "session"', 'pool.size = 10'],
  transaction: ['pool.mode = "transaction"', 'pool.size = 2'],
};
const SCENARIO_TIMEOUT_MS = 20000;
const BIG = 'select g, md5(g::text) as h from generate_series(1, $1::int) g';

async function withClient(port, fn) {
  const client = new pg.Client({
    host: '127.0.0.1', port, database: 'pgstash_test', user: 'postgres',
    application_name: 'node_pg_cursor_test', connectionTimeoutMillis: 10000,
  });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

// A digest of rows, so that results compare cheaply but exactly.
function summary(rows) {
  let sum = 0;
  let text = '';
  for (const r of rows) {
    sum += r.g;
    text += r.h;
  }
  return { n: rows.length, sum, first: rows[0], last: rows[rows.length - 1], h: text.length };
}

async function openCursors(c) {
  const r = await c.query('select count(*)::int as n from pg_cursors');
  return r.rows[0].n;
}

const SCENARIOS = {
  async batches(port) {
    return withClient(port, async (c) => {
      const cursor = c.query(new Cursor(BIG, [10000]));
      const sizes = [];
      const rows = [];
      for (;;) {
        const batch = await cursor.read(100);
        sizes.push(batch.length);
        rows.push(...batch);
        if (batch.length === 0) break;
      }
      await cursor.close();
      assert.equal(rows.length, 10000);
      return { sizes, rows: summary(rows), after: (await c.query('select 42 as x')).rows };
    });
  },

  async closeEarly(port) {
    return withClient(port, async (c) => {
      const cursor = c.query(new Cursor(BIG, [10000]));
      const rows = [...await cursor.read(100), ...await cursor.read(100), ...await cursor.read(100)];
      await cursor.close();
      const after = (await c.query('select $1::text as t', ['after close'])).rows;
      const again = c.query(new Cursor(BIG, [5]));
      const five = await again.read(100);
      await again.close();
      return { rows: summary(rows), after, five: summary(five), open: await openCursors(c) };
    });
  },

  // node-postgres runs one query at a time per client, so the second cursor opens once the first
  // is closed; both must run inside the client's transaction.
  async twoCursorsInTransaction(port) {
    return withClient(port, async (c) => {
      await c.query('begin');
      const tx = (await c.query('select txid_current()::text as x')).rows[0].x;
      await c.query('create temp table cursor_rows on commit drop as select g from generate_series(1, 1000) g');
      const a = c.query(new Cursor('select g, txid_current()::text as x from cursor_rows order by g'));
      const fromA = [...await a.read(100), ...await a.read(100)];
      await a.close();
      await c.query('insert into cursor_rows select -g from generate_series(1, 10) g');
      const b = c.query(new Cursor('select g, txid_current()::text as x from cursor_rows where g < 0 or g > 990 order by g'));
      const fromB = [];
      for (let batch = await b.read(7); batch.length; batch = await b.read(7)) fromB.push(...batch);
      await b.close();
      await c.query('rollback');
      const gone = (await c.query("select to_regclass('pg_temp.cursor_rows') is null as gone")).rows[0].gone;
      return {
        a: fromA.map((r) => r.g),
        b: fromB.map((r) => r.g),
        oneTransaction: [...fromA, ...fromB].every((r) => r.x === tx),
        gone,
      };
    });
  },

  async streamToEnd(port) {
    return withClient(port, async (c) => {
      const rows = [];
      await pipeline(
        c.query(new QueryStream(BIG, [10000], { batchSize: 100 })),
        new Writable({
          objectMode: true,
          write(row, _enc, cb) {
            rows.push(row);
            cb();
          },
        }),
      );
      assert.equal(rows.length, 10000);
      return { rows: summary(rows), after: (await c.query('select 7 as x')).rows };
    });
  },

  async streamDestroyedEarly(port) {
    return withClient(port, async (c) => {
      const stream = c.query(new QueryStream(BIG, [10000], { batchSize: 100 }));
      const rows = [];
      await new Promise((resolve, reject) => {
        stream.on('data', (row) => {
          rows.push(row);
          if (rows.length === 250) stream.destroy();
        });
        stream.on('close', resolve);
        stream.on('error', reject);
      });
      const after = (await c.query('select $1::int * 2 as x', [21])).rows;
      const again = [];
      for await (const row of c.query(new QueryStream(BIG, [300], { batchSize: 100 }))) again.push(row);
      return { rows: summary(rows.slice(0, 250)), after, again: summary(again) };
    });
  },

  async othersWhileCursorOpen(port) {
    return withClient(port, async (c) => {
      const cursor = c.query(new Cursor('select g, pg_backend_pid() as pid from generate_series(1, 400) g'));
      const first = await cursor.read(100);
      // Other clients need server connections while the cursor's portal is open.
      const others = await Promise.all(Array.from({ length: 6 }, (_, i) => withClient(port, async (o) => {
        const r = await o.query('select $1::int as i', [i]);
        return r.rows[0].i;
      })));
      const rest = [];
      for (let batch = await cursor.read(100); batch.length; batch = await cursor.read(100)) rest.push(...batch);
      await cursor.close();
      const pids = new Set([...first, ...rest].map((r) => r.pid));
      return { n: first.length + rest.length, others, onePortal: pids.size === 1 };
    });
  },
};

// A hang fails the scenario instead of blocking the test; stopping pgstash then frees the client.
function withTimeout(promise, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${SCENARIO_TIMEOUT_MS} ms`)),
      SCENARIO_TIMEOUT_MS);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

async function runAll(port) {
  const out = {};
  for (const [name, fn] of Object.entries(SCENARIOS)) out[name] = await withTimeout(fn(port), name);
  return out;
}

async function main() {
  const version = (pkg) => JSON.parse(fs.readFileSync(
    path.join(__dirname, 'node', 'node_modules', pkg, 'package.json'), 'utf8')).version;
  console.log(`node ${process.version}, pg ${version('pg')}, pg-cursor ${version('pg-cursor')}, `
    + `pg-query-stream ${version('pg-query-stream')}`);
  const direct = await runAll(Number(clusterEnv().PGSTASH_PG_PORT));
  assert.deepEqual(direct.batches.sizes, [...Array(100).fill(100), 0]);
  assert.equal(direct.closeEarly.open, 0);
  assert.equal(direct.twoCursorsInTransaction.oneTransaction, true);
  assert.equal(direct.othersWhileCursorOpen.onePortal, true);

  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pgstash-node-cursor-test.'));
  let rc = 0;
  for (const mode of Object.keys(MODES)) {
    const work = path.join(root, mode);
    let failed = false;
    try {
      const port = startPgstash(work, MODES[mode]);
      for (const [name, fn] of Object.entries(SCENARIOS)) {
        try {
          assert.deepEqual(await withTimeout(fn(port), name), direct[name], `${name} differs from PostgreSQL directly`);
          ok(`${mode}: ${name} gives what PostgreSQL gives directly`);
        } catch (e) {
          console.error(`FAIL: ${mode}: ${name}: ${e.message}`);
          failed = true;
        }
      }
    } catch (e) {
      console.error(`FAIL: ${mode}: ${e.message}`);
      failed = true;
    } finally {
      failed = !stopPgstash(work, failed) || failed;
    }
    if (failed) rc = 1;
  }
  if (rc === 0) {
    fs.rmSync(root, { recursive: true, force: true });
  } else {
    console.error(`files kept in ${root}`);
  }
  return rc;
}

runSuite('node_pg_cursor_test', main);
