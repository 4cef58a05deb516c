#!/usr/bin/env node
// postgres.js (porsager's `postgres`, installed by scripts/setup into
// tests/clients/node/node_modules) through pgstash with transaction pooling: a table re-created
// with another column type between two clients must not give the second one "cached plan must
// not change result type" (0A000).
//
// postgres.js prepares every query under a name of its own, so two clients running the same text
// differ only in name; pgstash may prepare both as one server-side statement. The first client's
// `select x from T` returns a point, the second's an array of points: PostgreSQL itself analyses
// the second Parse afresh, and so must the statement the second client gets through pgstash.
// With pool.size 1 both clients are sure to use the same server connection; with 3 they often
// do. Each combination of pool size and postgres.js `max` runs a few rounds, each with a time
// limit.
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const {
  nodeRequire, ok, clusterEnv, startPgstash, stopPgstash, runSuite,
} = require('./node_harness');

const postgres = nodeRequire('postgres');

const POOL_SIZES = [1, 3];
const MAXES = [1, 4];
const ROUNDS = 3;
const ROUND_TIMEOUT_MS = 30000;

class Failure extends Error {}
class Timeout extends Failure {}

// Statements sent to the cluster directly, so that cleanup does not depend on pgstash.
function admin(cluster, sql) {
  execFileSync(path.join(cluster.PGSTASH_PG_BIN, 'psql'),
    ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', cluster.PGSTASH_PG_SOCKET_DIR,
      '-p', cluster.PGSTASH_PG_PORT, '-U', 'postgres', '-d', 'pgstash_test', '-c', sql],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, PGOPTIONS: '-c client_min_messages=warning' },
    });
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Timeout(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function describe(e) {
  return e && e.code ? `${e.code} ${e.message}` : String(e && e.message ? e.message : e);
}

// One client (a postgres.js instance with its own connections) runs `fn`, then leaves.
async function asClient(port, max, fn) {
  const sql = postgres({
    host: '127.0.0.1',
    port,
    database: 'pgstash_test',
    username: 'postgres',
    max,
    connect_timeout: 10,
    connection: { application_name: 'node_postgres_js_test' },
    onnotice: () => {},
  });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function round(port, max, table) {
  const t = (sql) => sql(table);
  await asClient(port, max, async (sql) => {
    await sql`create table ${t(sql)} (x point)`;
    await sql`insert into ${t(sql)} values (point(1, 2))`;
    const rows = await sql`select x from ${t(sql)}`;
    if (rows.length !== 1) throw new Failure(`first client: select gave ${rows.length} rows`);
    await sql`drop table ${t(sql)}`;
  });
  await asClient(port, max, async (sql) => {
    await sql`create table ${t(sql)} (x point[])`;
    await sql`insert into ${t(sql)} values (array[point(3, 4), point(5, 6)])`;
    let rows;
    try {
      rows = await sql`select x from ${t(sql)}`;
    } catch (e) {
      throw new Failure('second client\'s select x after the table was re-created with x point[]: '
        + describe(e));
    }
    if (rows.length !== 1) throw new Failure(`second client: select gave ${rows.length} rows`);
    await sql`drop table ${t(sql)}`;
  });
}

async function runPool(cluster, poolSize, failures) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `pgstash-postgres-js-test.pool${poolSize}.`));
  const port = startPgstash(work, ['pool.mode = "transaction"', `pool.size = ${poolSize}`]);
  const table = `node_postgres_js_point_${process.pid}`;
  let failed = false;
  try {
    for (const max of MAXES) {
      for (let i = 1; i <= ROUNDS; i++) {
        const label = `pool.size ${poolSize}, max ${max}, round ${i}`;
        admin(cluster, `drop table if exists ${table}`);
        try {
          await withTimeout(round(port, max, table), ROUND_TIMEOUT_MS, label);
          ok(`${label}: select x after the table was re-created with another type`);
        } catch (e) {
          failed = true;
          if (!(e instanceof Failure)) console.error(e);
          failures.push(`${label}: ${describe(e)}`);
          console.error(`not ok - ${label}: ${describe(e)}`);
          // A client still waits on this pgstash: later rounds would only wait too.
          if (e instanceof Timeout) return;
        }
      }
    }
  } finally {
    try {
      admin(cluster, `drop table if exists ${table}`);
    } catch {
      failures.push('could not drop the test table');
    }
    // A pgstash that died (or left a sanitizer report) fails the test: stop says so.
    if (!stopPgstash(work, failed)) {
      failures.push(`pool.size ${poolSize}: pgstash reported an error when stopped`);
      failed = true;
    }
    if (!failed) fs.rmSync(work, { recursive: true, force: true });
    else console.error(`files kept in ${work}`);
  }
}

async function main() {
  // The package's exports do not include its package.json.
  const { version } = JSON.parse(fs.readFileSync(
    path.join(path.dirname(nodeRequire.resolve('postgres')), '..', '..', 'package.json'), 'utf8'));
  console.log(`node ${process.version}, postgres ${version}`);
  const cluster = clusterEnv();
  const failures = [];
  try {
    for (const poolSize of POOL_SIZES) await runPool(cluster, poolSize, failures);
  } catch (e) {
    console.error(e);
    failures.push(describe(e));
  }
  for (const f of failures) console.error(`FAIL: ${f}`);
  return failures.length === 0 ? 0 : 1;
}

runSuite('node_postgres_js_test', main);
