#!/usr/bin/env node
// node-postgres (`pg`) through pgstash with the result cache on (transaction pooling): a
// parameterized query and a named prepared query repeated are answered by pgstash (PostgreSQL's
// pg_stat_statements count of them stops moving), and an UPDATE through pgstash is seen by the
// next read.
'use strict';

const assert = require('node:assert/strict');

const { nodeRequire, ok, clusterEnv, withPgstash, runSuite } = require('./node_harness');

const pg = nodeRequire('pg');
const table = 'node_pg_cache_items';

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
  const cluster = clusterEnv();
  const direct = { host: cluster.PGSTASH_PG_SOCKET_DIR, port: Number(cluster.PGSTASH_PG_PORT) };
  return withPgstash('node-cache-test',
    (work) => ['pool.mode = "transaction"', 'cache.enabled = true', `cache.path = "${work}/cache"`],
    (port) => run(port, direct));
}

runSuite('node_pg_cache_test', main);
