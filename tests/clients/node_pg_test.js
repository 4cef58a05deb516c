#!/usr/bin/env node
// node-postgres (`pg`, installed by scripts/setup into tests/clients/node/node_modules) through
// pgstash (session pooling): connect() and end() at once, parameterized queries, a named prepared query run twice, an error
// with its SQLSTATE, transactions, COPY in both directions through pg-copy-streams, a password
// role, several clients at once.
'use strict';

const assert = require('node:assert/strict');
const { pipeline } = require('node:stream/promises');
const { Readable, Writable } = require('node:stream');

const {
  nodeRequire, ok, clusterEnv, withPgstash, runSuite,
} = require('./node_harness');

const pg = nodeRequire('pg');
const copyStreams = nodeRequire('pg-copy-streams');

async function withClient(port, user, password, fn) {
  const client = new pg.Client({
    host: '127.0.0.1',
    port,
    database: 'pgstash_test',
    user,
    password,
    application_name: 'node_pg_test',
    connectionTimeoutMillis: 10000,
  });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

// What a client that calls connect() and end() at once sees: node-postgres sends its Terminate
// before the startup packet.
async function connectThenEnd(port) {
  const errors = [];
  const c = new pg.Client({ host: '127.0.0.1', port, database: 'pgstash_test', user: 'postgres' });
  c.on('error', (e) => errors.push(e.message));
  let connect = 'pending';
  c.connect().then(() => { connect = 'connected'; }, (e) => { connect = `rejected: ${e.message}`; });
  await c.end();
  await new Promise((resolve) => setTimeout(resolve, 300));
  return { connect, errors };
}

async function run(port) {
  const table = `node_pg_items_${process.pid}`;

  // PostgreSQL closes a connection whose startup packet it cannot read without a word.
  assert.deepEqual(await connectThenEnd(port), await connectThenEnd(Number(clusterEnv().PGSTASH_PG_PORT)));
  ok('connect(); end() at once: the same outcome as against PostgreSQL, no error');

  await withClient(port, 'postgres', undefined, async (c) => {
    // --- parameterized query
    let r = await c.query('select $1::int + $2::int as sum, $3::text as t, $4::int as n',
      [40, 2, 'héllo ✓', null]);
    assert.deepEqual(r.rows, [{ sum: 42, t: 'héllo ✓', n: null }]);
    ok('parameterized query ($1..$4, with a NULL)');

    // --- named prepared query, run twice (the second run binds the already-parsed statement)
    for (const v of [3, 7]) {
      r = await c.query({ name: 'node_times_ten', text: 'select $1::int * 10 as x', values: [v] });
      assert.equal(r.rows[0].x, v * 10);
    }
    ok('named prepared query {name, text, values} run twice');

    // --- an error with its code; the connection stays usable
    await assert.rejects(c.query('select 1 / $1::int', [0]), (e) => {
      assert.equal(e.code, '22012');
      assert.match(e.message, /division by zero/);
      return true;
    });
    await assert.rejects(c.query('select * from no_such_table_xyz'), { code: '42P01' });
    r = await c.query('select 1 as one');
    assert.equal(r.rows[0].one, 1);
    ok('errors carry their SQLSTATE (22012, 42P01) and the connection stays usable');

    // --- a transaction: rollback discards, commit keeps
    await c.query(`drop table if exists ${table}`);
    await c.query(`create table ${table} (id int primary key, name text)`);
    await c.query('begin');
    await c.query(`insert into ${table} values ($1, $2)`, [1, 'rolled back']);
    await c.query('rollback');
    await c.query('begin');
    await c.query(`insert into ${table} values ($1, $2)`, [2, 'committed']);
    await assert.rejects(c.query('select 1/0'), { code: '22012' });
    await assert.rejects(c.query('select 1'), { code: '25P02' }); // in failed transaction
    await c.query('rollback');
    await c.query('begin');
    await c.query(`insert into ${table} values ($1, $2)`, [3, 'committed']);
    await c.query('commit');
    r = await c.query(`select id from ${table} order by id`);
    assert.deepEqual(r.rows, [{ id: 3 }]);
    ok('transactions: rollback discards, an error aborts the transaction (25P02), commit keeps');

    // --- COPY FROM STDIN and COPY TO STDOUT
    const lines = [];
    for (let i = 100; i < 1100; i++) lines.push(`${i}\tcopy-${i} ✓\n`);
    const input = lines.join('');
    await pipeline(Readable.from([input]), c.query(copyStreams.from(`copy ${table} from stdin`)));
    r = await c.query(`select count(*)::int as n from ${table} where id >= 100`);
    assert.equal(r.rows[0].n, 1000);
    const chunks = [];
    await pipeline(
      c.query(copyStreams.to(`copy (select * from ${table} where id >= 100 order by id) to stdout`)),
      new Writable({
        write(chunk, _enc, cb) {
          chunks.push(chunk);
          cb();
        },
      }),
    );
    assert.equal(Buffer.concat(chunks).toString('utf8'), input);
    ok('COPY FROM STDIN (1000 rows) and COPY TO STDOUT give back the same bytes');

    await c.query(`drop table ${table}`);
  });

  // --- a role that pgstash authenticates to the server with a SCRAM secret
  await withClient(port, 'pgstash_scram', 'scram-secret-1', async (c) => {
    const r = await c.query('select current_user as u');
    assert.equal(r.rows[0].u, 'pgstash_scram');
  });
  ok('connect as pgstash_scram');

  // --- several clients at once through a pool
  const pool = new pg.Pool({ host: '127.0.0.1', port, database: 'pgstash_test', user: 'postgres', max: 8 });
  try {
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => pool.query('select $1::int as i, pg_backend_pid() as pid', [i])),
    );
    results.forEach((r, i) => assert.equal(r.rows[0].i, i));
    const pids = new Set(results.map((r) => r.rows[0].pid));
    ok(`40 queries over a pool of 8 clients (${pids.size} server backends)`);
  } finally {
    await pool.end();
  }
}

async function main() {
  console.log(`node ${process.version}, pg ${nodeRequire('pg/package.json').version}`);
  return withPgstash('node-test', () => [], run);
}

runSuite('node_pg_test', main);
