#!/usr/bin/env bash
# psql through pgstash (session pooling): DDL, \d and \dt, \copy both ways, several statements in
# one query string, an error in the middle of a script, \conninfo, a large result, password roles.
set -euo pipefail

# shellcheck source=tests/clients/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" psql_test
export PGCONNECT_TIMEOUT=10

# expect_contains LABEL HAYSTACK NEEDLE
expect_contains() {
  [[ $2 == *"$3"* ]] || fail "$1: expected output to contain '$3', got:"$'\n'"$2"
}

T=psql_test_items_$$
B=psql_test_batch_$$
after_test() {
  admin -d pgstash_test -c "DROP TABLE IF EXISTS $T, $B" >/dev/null 2>&1
}

out=$("$instance" start "$work")
read -r PORT PID <<<"$out"
echo "pgstash listening on 127.0.0.1:$PORT (pid $PID)"
CONN="host=127.0.0.1 port=$PORT dbname=pgstash_test user=postgres"

psql_q() { "$PSQL" -X -v ON_ERROR_STOP=1 "$CONN" "$@"; }

# --- connect ---------------------------------------------------------------------------------
v=$(psql_q -At -c "select current_database() || ' ' || current_user || ' ' || version()")
expect_contains "connect" "$v" "pgstash_test postgres PostgreSQL 15"
ok "connect and run a query ($v)"

# --- DDL, \d, \dt ----------------------------------------------------------------------------
psql_q -q <<EOF
DROP TABLE IF EXISTS $T;
CREATE TABLE $T (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), note text);
COMMENT ON TABLE $T IS 'psql_test';
EOF
ok "CREATE TABLE $T"

d=$(psql_q -c "\\d $T")
expect_contains "\\d" "$d" "Table \"public.$T\""
for col in id name price note; do expect_contains "\\d" "$d" " $col "; done
expect_contains "\\d" "$d" "${T}_pkey"
ok "\\d $T shows the table, its columns and its primary key"

dt=$(psql_q -c "\\dt")
expect_contains "\\dt" "$dt" "$T"
ok "\\dt lists $T"

# --- \copy in and out --------------------------------------------------------------------------
rows=2000
awk -v n="$rows" 'BEGIN {
  for (i = 1; i <= n; i++) {
    note = (i % 7 == 0) ? "\\N" : "note " i " h\303\251llo \342\234\223 tab\\there back\\\\slash"
    printf "%d\titem-%05d\t%d.%02d\t%s\n", i, i, i, i % 100, note
  }
}' >"$work/in.tsv"
psql_q -q -c "\\copy $T from '$work/in.tsv'"
n=$(psql_q -At -c "select count(*), count(note), sum(price) from $T")
[[ $n == "$rows|$((rows - rows / 7))|"* ]] || fail "\\copy in: unexpected count/sum: $n"
ok "\\copy from a file: $rows rows (count, nulls, sum: $n)"

psql_q -q -c "\\copy (select * from $T order by id) to '$work/out.tsv'"
cmp -s "$work/in.tsv" "$work/out.tsv" || {
  diff "$work/in.tsv" "$work/out.tsv" | head -n 20 >&2
  fail "\\copy out differs from the file copied in"
}
ok "\\copy to a file gives back exactly the file copied in"

psql_q -c "copy (select * from $T order by id) to stdout" >"$work/out2.tsv"
cmp -s "$work/in.tsv" "$work/out2.tsv" || fail "COPY TO STDOUT differs from the file copied in"
ok "COPY ... TO STDOUT through a plain query gives the same bytes"

psql_q -q -c "\\copy (select * from $T where id <= 10 order by id) to '$work/ten.csv' with (format csv, header)"
[[ $(wc -l <"$work/ten.csv") == 11 ]] || fail "\\copy csv with header: expected 11 lines"
ok "\\copy out as CSV with a header"

# --- several statements in one query string ----------------------------------------------------
multi=$(psql_q -At -c "select 'first_result'; select 'second_result'")
expect_contains "multi-statement" "$multi" "first_result"
expect_contains "multi-statement" "$multi" "second_result"
ok "-c 'select 1; select 2' shows both results"

# --- an error in the middle of a script ------------------------------------------------------
psql_q -q -c "CREATE TABLE $B (v int)"
cat >"$work/batch.sql" <<EOF
insert into $B values (1);
select 1/0;
insert into $B values (2);
begin;
insert into $B values (100);
rollback;
select 'still_connected';
EOF
set +e
batch_out=$("$PSQL" -X "$CONN" -f "$work/batch.sql" 2>&1)
batch_rc=$?
set -e
((batch_rc == 0)) || fail "psql -f without ON_ERROR_STOP exited $batch_rc: $batch_out"
expect_contains "batch" "$batch_out" "division by zero"
expect_contains "batch" "$batch_out" "still_connected"
got=$(psql_q -At -c "select string_agg(v::text, ',' order by v) from $B")
[[ $got == "1,2" ]] || fail "batch: expected rows 1,2 (before and after the error), got '$got'"
ok "error in the middle of a script: the error text appears, statements before and after it took effect, rollback undid its insert"

set +e
err_out=$("$PSQL" -X "$CONN" -c "insert into $B values (3); select 1/0; insert into $B values (4)" 2>&1)
err_rc=$?
set -e
((err_rc != 0)) || fail "a failing multi-statement query string should make psql fail"
expect_contains "implicit transaction" "$err_out" "division by zero"
got=$(psql_q -At -c "select string_agg(v::text, ',' order by v) from $B")
[[ $got == "1,2" ]] || fail "a failed multi-statement query string must roll back as a whole, got '$got'"
ok "an error inside one multi-statement query string rolls back the whole string"

# --- \conninfo ---------------------------------------------------------------------------------
ci=$(psql_q -c "\\conninfo")
expect_contains "\\conninfo" "$ci" "database \"pgstash_test\""
expect_contains "\\conninfo" "$ci" "user \"postgres\""
expect_contains "\\conninfo" "$ci" "port \"$PORT\""
ok "\\conninfo: $ci"

# --- a large result ----------------------------------------------------------------------------
big=$(psql_q -At -c "select g, repeat(md5(g::text), 32) from generate_series(1, 5000) g" | md5sum)
want=$(psql_q -At -c "select md5(string_agg(g || '|' || repeat(md5(g::text), 32) || E'\\n', '' order by g))
                       from generate_series(1, 5000) g")
[[ $big == "$want  -" ]] || fail "large result (5000 rows of 1 kB) differs"
ok "a 5 MB result arrives intact"

# --- roles that authenticate to the server with a password -------------------------------------
for pair in pgstash_scram:scram-secret-1 pgstash_md5:md5-secret-1 pgstash_clear:clear-secret-1; do
  user=${pair%%:*}
  who=$(PGPASSWORD=${pair#*:} "$PSQL" -X -v ON_ERROR_STOP=1 -At \
    "host=127.0.0.1 port=$PORT dbname=pgstash_test user=$user" -c "select current_user")
  [[ $who == "$user" ]] || fail "connecting as $user: current_user is '$who'"
done
ok "psql as pgstash_scram, pgstash_md5 and pgstash_clear"

echo "psql_test: all $checks checks passed"
