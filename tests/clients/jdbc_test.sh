#!/usr/bin/env bash
# pgJDBC through pgstash, in session and in transaction pooling: tests/clients/JdbcTest.java
# (compiled here, against Debian's /usr/share/java/postgresql.jar) runs a PreparedStatement past
# prepareThreshold, batch inserts, a setFetchSize cursor in a transaction, savepoints, an error,
# 300 kB bytea values both ways, metadata, and four connections whose server-side statements share
# names. What it prints through each pgstash must equal what it prints against PostgreSQL directly.
set -euo pipefail

# shellcheck source=tests/clients/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" jdbc_test
JAR=/usr/share/java/postgresql.jar
[[ -f $JAR ]] || fail "$JAR not found (Debian package libpostgresql-jdbc-java)"
T=jdbc_test_$$

after_test() {
  local mode
  for mode in session transaction; do
    [[ ! -f $work/$mode/pid ]] || "$instance" stop "$work/$mode"
  done
  admin -d pgstash_test -c "DROP TABLE IF EXISTS ${T}_direct, ${T}_direct_blob, ${T}_session,
    ${T}_session_blob, ${T}_transaction, ${T}_transaction_blob" >/dev/null 2>&1
}

javac -cp "$JAR" -d "$work/classes" "$src/tests/clients/JdbcTest.java"
run_java() {
  timeout 60 java -cp "$JAR:$work/classes" JdbcTest "$1" "$2" >"$3" 2>"$3.err" || {
    cat "$3.err" >&2
    fail "JdbcTest on port $1 failed (output so far in $3)"
  }
}

run_java "$PGSTASH_PG_PORT" "${T}_direct" "$work/direct.txt"
grep -q '^done: ok$' "$work/direct.txt" || fail "JdbcTest against PostgreSQL directly did not finish"
grep -q '^reuse 11 server-prepared=true:' "$work/direct.txt" ||
  fail "the statement never became server-prepared: the test would not test it"
echo "JdbcTest against PostgreSQL directly: $(wc -l <"$work/direct.txt") result lines"

for mode in session transaction; do
  size=10
  [[ $mode == session ]] || size=2
  read -r port pid <<<"$("$instance" start "$work/$mode" "pool.mode = \"$mode\"" "pool.size = $size")"
  echo "# $mode pooling: pgstash on 127.0.0.1:$port (pid $pid)"
  run_java "$port" "${T}_$mode" "$work/$mode.txt"
  if ! diff "$work/direct.txt" "$work/$mode.txt" >"$work/$mode.diff"; then
    head -n 30 "$work/$mode.diff" >&2
    fail "$mode: pgJDBC through pgstash printed something else than against PostgreSQL (diff above)"
  fi
  ok "$mode: pgJDBC through pgstash gives what PostgreSQL gives directly"
  "$instance" stop "$work/$mode"
done
echo "jdbc_test: all $checks checks passed"
