#!/usr/bin/env bash
# pgbench through pgstash (session pooling): initialize scale 1 in a database of its own, then
# timed runs with the simple, extended and prepared query protocols, 8 clients each. Every run
# must report zero failed transactions and a positive number of processed transactions.
# PGSTASH_PGBENCH_SECONDS sets the length of each run (default 5).
set -euo pipefail

# shellcheck source=tests/clients/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" pgbench_test
export PGCONNECT_TIMEOUT=10
DB=pgstash_bench_$$
SECONDS_PER_RUN=${PGSTASH_PGBENCH_SECONDS:-5}

after_test() {
  admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
}

admin -c "CREATE DATABASE $DB"
out=$("$instance" start "$work")
read -r PORT PID <<<"$out"
echo "pgstash listening on 127.0.0.1:$PORT (pid $PID); database $DB"
CONN=(-h 127.0.0.1 -p "$PORT" -U postgres)

if ! "$PGBENCH" "${CONN[@]}" -i -s 1 -q "$DB" >"$work/init.log" 2>&1; then
  cat "$work/init.log" >&2
  fail "pgbench -i -s 1 through pgstash failed"
fi
n=$("$PSQL" -X -At "${CONN[@]}" -d "$DB" -c "select count(*) from pgbench_accounts")
[[ $n == 100000 ]] || fail "after pgbench -i -s 1, pgbench_accounts has '$n' rows, expected 100000"
ok "pgbench -i -s 1: 100000 accounts"

for mode in simple extended prepared; do
  log=$work/run-$mode.log
  if ! "$PGBENCH" "${CONN[@]}" -M "$mode" -c 8 -j 2 -T "$SECONDS_PER_RUN" -n "$DB" >"$log" 2>&1; then
    cat "$log" >&2
    fail "pgbench -M $mode exited non-zero"
  fi
  grep -q '^number of failed transactions: 0 ' "$log" || {
    cat "$log" >&2
    fail "pgbench -M $mode: 'number of failed transactions: 0' not in the output"
  }
  processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
  if [[ -z $processed ]] || ((processed == 0)); then
    cat "$log" >&2
    fail "pgbench -M $mode: no transactions processed"
  fi
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$log")
  ok "pgbench -M $mode -c 8 -j 2 -T $SECONDS_PER_RUN: $processed transactions, 0 failed, tps $tps"
done

# The history rows written by the runs are all there and consistent with the balances.
consistent=$("$PSQL" -X -At "${CONN[@]}" -d "$DB" -c \
  "select (select sum(delta) from pgbench_history) = (select sum(abalance) from pgbench_accounts)")
[[ $consistent == t ]] || fail "sum of pgbench_history.delta differs from sum of account balances"
ok "pgbench_history agrees with pgbench_accounts"

echo "pgbench_test: all $checks checks passed"
