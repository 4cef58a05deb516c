#!/usr/bin/env node
// node-postgres (`pg`) through pgstash with the result cache on (transaction pooling): a
// parameterized query and a named prepared query repeated are answered by pgstash (PostgreSQL's
// pg_stat_statements count of them stops moving), and an UPDATE through pgstash is seen by the
// next read.
'use strict';

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { createRequire } = require('node:module');

const nodeRequire = createRequire(path.join(__dirname, 'node', 'package.json'));
const pg = nodeRequire('pg');

const sourceDir = process.env.PGSTASH_SOURCE_DIR || path.resolve(__dirname, '..', '..');
const instance = path.join(sourceDir, 'tests', 'lib', 'pgstash_instance.sh');
const table = 'node_pg_cache_items';

let checks = 0;
function ok(msg) {
  checks += 1;
  console.log(`ok - ${msg}`);
}

function clusterEnv() {
  const env = {};
  const text = fs.readFileSync(path.join(process.env.PGSTASH_TEST_CLUSTER_DIR, 'env'), 'utf8');
  for (const line of text.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return env;
}

async function withClient(options, fn) {
  const client = new pg.Client({ database: 'pgstash_test', user: 'postgres', ...options });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function run(port, direct) {
  const serverCalls = () => withClient(direct, async (c) => {
    const r = await c.query(
      "select coalesce(sum(calls), 0)::int as n from pg_stat_statements where query like $1",
      [`%${table} where%`]);
    return r.rows[0].n;
  });
  await withClient(direct, (c) => c.query(
    `drop table if exists ${table}; create table ${table} (id int, v text);` +
    `insert into ${table} values (1, 'one'), (2, 'two')`));

  await withClient({ host: '127.0.0.1', port }, async (c) => {
    const unnamed = () => c.query(`select v from ${table} where id = $1`, [2]);
    const named = () => c.query({ name: 'by_id', text: `select v from ${table} where id = $1`, values: [1] });
    // The first runs may pass through: the catalog look-up and the store are asynchronous.
    for (let i = 0; i < 5; i += 1) {
      await unnamed();
      await named();
      await sleep(50);
    }
    const before = await serverCalls();
    for (let i = 0; i < 10; i += 1) {
      assert.deepEqual((await unnamed()).rows, [{ v: 'two' }]);
      assert.deepEqual((await named()).rows, [{ v: 'one' }]);
    }
    assert.equal(await serverCalls(), before, 'cached reads reached the server');
    ok('parameterized and named prepared queries answered from the cache');

    await c.query(`update ${table} set v = 'deux' where id = 2`);
    assert.deepEqual((await unnamed()).rows, [{ v: 'deux' }]);
    ok('an UPDATE through pgstash is seen by the next read');
  });
}

async function main() {
  if (!process.env.PGSTASH_TEST_CLUSTER_DIR) {
    console.error('FAIL: run through ctest (PGSTASH_TEST_CLUSTER_DIR is not set)');
    return 1;
  }
  const cluster = clusterEnv();
  const direct = { host: cluster.PGSTASH_PG_SOCKET_DIR, port: Number(cluster.PGSTASH_PG_PORT) };
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pgstash-node-cache-test.'));
  let rc = 0;
  try {
    const out = execFileSync(instance, ['start', work, 'pool.mode = "transaction"',
      'cache.enabled = true', `cache.path = "${work}/cache"`],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    const [port] = out.trim().split(/\s+/);
    await run(Number(port), direct);
  } catch (e) {
    console.error(e);
    console.error(`FAIL: ${e.message}`);
    rc = 1;
  } finally {
    try {
      const env = rc ? { ...process.env, PGSTASH_KEEP_LOG: '1' } : process.env;
      execFileSync(instance, ['stop', work], { stdio: 'inherit', env });
    } catch {
      rc = 1;
    }
  }
  if (rc === 0) {
    fs.rmSync(work, { recursive: true, force: true });
    console.log(`node_pg_cache_test: all ${checks} checks passed`);
  } else {
    console.error(`node_pg_cache_test: FAILED; files kept in ${work}`);
  }
  return rc;
}

main().then(
  (rc) => process.exit(rc),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
