#!/usr/bin/env bash
# pgbench through pgstash with transaction pooling: far more clients than server connections.
#
# A role and a database of its own (so that other tests' backends are not counted), pool.size 10:
#   1. pgbench -i -s 1;
#   2. select-only, simple protocol, 1000 clients (-c 1000 -j 2);
#   3. select-only with -M prepared and -M extended, 50 clients;
#   4. TPC-B-like with -M extended, 8 clients, and with -M simple, 32 clients (more clients than
#      connections, each holding one only for its open transaction).
# Every run must report zero failed transactions and a positive number of processed ones. All the
# while a background loop samples pg_stat_activity on the cluster directly every 100 ms: pgstash
# must never have more than pool.size backends open for the role.
#
# Not run: TPC-B with -M prepared and more clients than pool.size. pgbench itself deadlocks there:
# it prepares each statement with a blocking PQprepare() the first time a client uses it, while
# other clients of the same pgbench thread hold every server connection in open transactions that
# the blocked thread would have to advance. That is pgbench's single-threaded event loop, not
# pgstash; the prepared runs here are select-only (no open transactions).
#
# PGSTASH_PGBENCH_SECONDS sets the length of each run (default 5).
set -euo pipefail

# shellcheck source=tests/clients/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" transaction_pgbench_test
export PGCONNECT_TIMEOUT=30
ROLE=pgstash_txbench_$$
DB=pgstash_txbench_$$
POOL_SIZE=10
MANY_CLIENTS=1000
SECONDS_PER_RUN=${PGSTASH_PGBENCH_SECONDS:-5}

# 1000 pgbench connections, and as many on pgstash's side plus its server connections.
need_fds=$((2 * MANY_CLIENTS + 200))
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((hard < need_fds)); then
  fail "the open file hard limit ($hard) is below the $need_fds this test needs"
fi
ulimit -n "$need_fds" 2>/dev/null || ulimit -n "$hard"

sampler_pid=
after_test() {
  if [[ -n $sampler_pid ]]; then
    rm -f "$work/sampling"
    kill "$sampler_pid" 2>/dev/null
    wait "$sampler_pid" 2>/dev/null
  fi
  admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  admin -c "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1
}

admin -c "CREATE ROLE $ROLE LOGIN"
admin -c "CREATE DATABASE $DB OWNER $ROLE"
out=$("$instance" start "$work" 'pool.mode = "transaction"' "pool.size = $POOL_SIZE" \
  'listen.max_client_conn = 2000' 'pool.query_wait_timeout_ms = 60000')
read -r PORT PID <<<"$out"
echo "pgstash listening on 127.0.0.1:$PORT (pid $PID), transaction pooling, pool.size $POOL_SIZE;" \
  "role and database $DB"
CONN=(-h 127.0.0.1 -p "$PORT" -U "$ROLE")

# Samples the number of backends pgstash has open for the role, every 100 ms, until
# $work/sampling goes away; keeps the maximum in $work/max_backends.
count_sql="select count(*) from pg_stat_activity where usename = '$ROLE' and backend_type = 'client backend'"
sample() {
  local max=0 n samples=0
  while [[ -f $work/sampling ]]; do
    if n=$("$PSQL" -X -At -h "$PGSTASH_PG_SOCKET_DIR" -p "$PGSTASH_PG_PORT" -U postgres -d postgres \
      -c "$count_sql" 2>/dev/null) && [[ $n =~ ^[0-9]+$ ]]; then
      samples=$((samples + 1))
      ((n > max)) && max=$n
      echo "$max $samples" >"$work/max_backends.tmp"
      mv -f "$work/max_backends.tmp" "$work/max_backends"
    fi
    sleep 0.1
  done
}
touch "$work/sampling"
sample &
sampler_pid=$!

if ! "$PGBENCH" "${CONN[@]}" -i -s 1 -q "$DB" >"$work/init.log" 2>&1; then
  cat "$work/init.log" >&2
  fail "pgbench -i -s 1 through pgstash failed"
fi
n=$("$PSQL" -X -At "${CONN[@]}" -d "$DB" -c "select count(*) from pgbench_accounts")
[[ $n == 100000 ]] || fail "after pgbench -i -s 1, pgbench_accounts has '$n' rows, expected 100000"
ok "pgbench -i -s 1: 100000 accounts"

# run NAME PGBENCH-ARGS...: one timed run that must process transactions and fail none.
run() {
  local name=$1
  shift
  local log=$work/run-$name.log
  if ! "$PGBENCH" "${CONN[@]}" -n -T "$SECONDS_PER_RUN" "$@" "$DB" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    fail "pgbench $* exited non-zero"
  fi
  grep -q '^number of failed transactions: 0 ' "$log" || {
    tail -n 40 "$log" >&2
    fail "pgbench $*: 'number of failed transactions: 0' not in the output"
  }
  local processed tps clients
  processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
  if [[ -z $processed ]] || ((processed == 0)); then
    tail -n 40 "$log" >&2
    fail "pgbench $*: no transactions processed"
  fi
  clients=$(sed -n 's/^number of clients: \([0-9]*\).*/\1/p' "$log")
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$log")
  ok "pgbench $* -T $SECONDS_PER_RUN: $clients clients, $processed transactions, 0 failed, tps $tps"
}

run select-1000 -S -M simple -c "$MANY_CLIENTS" -j 2
run select-prepared -S -M prepared -c 50 -j 2
run select-extended -S -M extended -c 50 -j 2
run tpcb-extended -M extended -c 8 -j 2
run tpcb-simple -M simple -c 32 -j 2

rm -f "$work/sampling"
wait "$sampler_pid" || true
sampler_pid=
read -r max_backends samples <"$work/max_backends" || fail "the pg_stat_activity sampler recorded nothing"
echo "pg_stat_activity: at most $max_backends backends of $ROLE in $samples samples"
((samples >= 20)) || fail "only $samples pg_stat_activity samples were taken"
((max_backends <= POOL_SIZE)) || fail "pgstash had $max_backends server connections open, pool.size is $POOL_SIZE"
((max_backends > 0)) || fail "the sampler never saw a pgstash backend"
ok "at most $max_backends (<= pool.size $POOL_SIZE) server connections over $samples samples"

# The history rows written by the runs are all there and consistent with the balances.
consistent=$("$PSQL" -X -At "${CONN[@]}" -d "$DB" -c \
  "select (select sum(delta) from pgbench_history) = (select sum(abalance) from pgbench_accounts)")
[[ $consistent == t ]] || fail "sum of pgbench_history.delta differs from sum of account balances"
ok "pgbench_history agrees with pgbench_accounts"

echo "transaction_pgbench_test: all $checks checks passed"
