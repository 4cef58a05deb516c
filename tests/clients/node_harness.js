// What the node client suites share: their npm packages (tests/clients/node, installed by
// scripts/setup), the test cluster's env file, starting and stopping a pgstash
// (tests/lib/pgstash_instance.sh), counting checks, and how a suite ends.
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { createRequire } = require('node:module');

// Resolves the npm packages from tests/clients/node, wherever the test is started from.
const nodeRequire = createRequire(path.join(__dirname, 'node', 'package.json'));

const sourceDir = process.env.PGSTASH_SOURCE_DIR || path.resolve(__dirname, '..', '..');
const instance = path.join(sourceDir, 'tests', 'lib', 'pgstash_instance.sh');

let checks = 0;
function ok(msg) {
  checks += 1;
  console.log(`ok - ${msg}`);
}

// The KEY=value lines scripts/pg_test_cluster.sh wrote.
function clusterEnv() {
  const env = {};
  const text = fs.readFileSync(path.join(process.env.PGSTASH_TEST_CLUSTER_DIR, 'env'), 'utf8');
  for (const line of text.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return env;
}

// Starts a pgstash in `work` with these `section.key = value` lines; its port.
function startPgstash(work, extra = []) {
  const out = execFileSync(instance, ['start', work, ...extra],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const [port, pid] = out.trim().split(/\s+/);
  console.log(`# pgstash on 127.0.0.1:${port} (pid ${pid}): ${extra.join(', ')}`);
  return Number(port);
}

// Stops it, showing its log when the run failed; false if it had died or left a sanitizer
// report.
function stopPgstash(work, failed) {
  const env = failed ? { ...process.env, PGSTASH_KEEP_LOG: '1' } : process.env;
  try {
    execFileSync(instance, ['stop', work], { stdio: 'inherit', env });
    return true;
  } catch {
    return false;
  }
}

// Runs fn(port) against a pgstash started in a fresh temporary directory with the lines
// extra(work) gives; the exit status. The directory is kept if anything failed.
async function withPgstash(name, extra, fn) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `pgstash-${name}.`));
  let failed = false;
  try {
    await fn(startPgstash(work, extra(work)));
  } catch (e) {
    console.error(e);
    failed = true;
  } finally {
    failed = !stopPgstash(work, failed) || failed;
  }
  if (failed) {
    console.error(`files kept in ${work}`);
    return 1;
  }
  fs.rmSync(work, { recursive: true, force: true });
  return 0;
}

// Runs the suite's main (which returns an exit status) and exits explicitly: a client stuck on
// an answer that never came must not keep node running.
function runSuite(name, main) {
  if (!process.env.PGSTASH_TEST_CLUSTER_DIR) {
    console.error('FAIL: run through ctest (PGSTASH_TEST_CLUSTER_DIR is not set)');
    process.exit(1);
  }
  main().then(
    (rc) => {
      if (rc === 0) console.log(`${name}: all ${checks} checks passed`);
      else console.error(`${name}: FAILED`);
      process.exit(rc);
    },
    (e) => {
      console.error(e);
      console.error(`${name}: FAILED`);
      process.exit(1);
    },
  );
}

module.exports = {
  nodeRequire, ok, clusterEnv, startPgstash, stopPgstash, withPgstash, runSuite,
};
