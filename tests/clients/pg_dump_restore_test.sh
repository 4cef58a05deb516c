#!/usr/bin/env bash
# pg_dump and pg_restore through pgstash, in session and in transaction pooling: a database with
# a varied schema (enum and composite types, a sequence, a view, indexes, functions, a trigger, a
# foreign key), a few thousand rows of bytea/json/array/... data and large objects is dumped
# through pgstash in the custom format and restored through pgstash into a fresh database, and
# dumped in the plain format and replayed with psql through pgstash into another. Each copy must
# equal the original, as PostgreSQL itself sees them: same schema-only dump, same rows, same
# sequence positions, same large objects. The custom archive must also hold exactly what a dump
# taken from PostgreSQL directly holds.
set -euo pipefail

# shellcheck source=tests/clients/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" pg_dump_restore_test
export PGCONNECT_TIMEOUT=10
PG_DUMP=$PGSTASH_PG_BIN/pg_dump
PG_RESTORE=$PGSTASH_PG_BIN/pg_restore
PREFIX=pgstash_dump_$$
MODES=(session transaction)

after_test() {
  local mode suffix
  for mode in "${MODES[@]}"; do
    [[ ! -f $work/$mode/pid ]] || "$instance" stop "$work/$mode"
    for suffix in src custom plain; do
      admin -c "DROP DATABASE IF EXISTS ${PREFIX}_${mode}_$suffix WITH (FORCE)" >/dev/null 2>&1
    done
  done
}

# The source database is filled directly, so that only the dump and the restores go through
# pgstash. Timestamps and random-looking values are derived from the row number: two fills give
# the same rows.
fill_source() {
  admin -d "$1" <<'EOF'
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE SEQUENCE ticket_seq START 1000 INCREMENT 7;
CREATE TABLE customers (
  id serial PRIMARY KEY,
  name text NOT NULL,
  email text UNIQUE,
  created timestamptz NOT NULL,
  mood mood,
  CHECK (name <> '')
);
CREATE TABLE items (
  id bigint PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
  ticket bigint DEFAULT nextval('ticket_seq'),
  price numeric(12, 2),
  payload bytea,
  doc jsonb,
  meta json,
  tags text[],
  scores int[],
  p pair,
  ratio double precision,
  flag boolean,
  d date,
  span interval,
  u uuid,
  note text
);
CREATE INDEX items_doc_idx ON items USING gin (doc);
CREATE INDEX items_price_idx ON items (price) WHERE price > 10;
CREATE INDEX items_lower_note_idx ON items (lower(note));
CREATE VIEW expensive_items AS
  SELECT i.id, c.name, i.price FROM items i JOIN customers c ON c.id = i.customer_id
  WHERE i.price > 50;
CREATE FUNCTION customer_total(int) RETURNS numeric LANGUAGE sql STABLE
  AS $$ SELECT coalesce(sum(price), 0) FROM items WHERE customer_id = $1 $$;
CREATE TABLE audit (id bigserial PRIMARY KEY, item_id bigint, what text);
CREATE FUNCTION audit_item() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit (item_id, what) VALUES (NEW.id, TG_OP);
  RETURN NEW;
END $$;
CREATE TRIGGER items_audit AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION audit_item();
COMMENT ON TABLE items IS 'items, héllo ✓';
COMMENT ON COLUMN items.doc IS 'a jsonb document';

INSERT INTO customers (name, email, created, mood)
SELECT 'customer ' || g, 'c' || g || '@example.com',
       timestamptz '2024-01-01 00:00:00+00' + g * interval '37 minutes',
       (enum_range(NULL::mood))[1 + g % 3]
FROM generate_series(1, 500) g;

INSERT INTO items (id, customer_id, price, payload, doc, meta, tags, scores, p, ratio, flag, d,
                   span, u, note)
SELECT g, 1 + g % 500, (g % 10000) / 100.0,
       CASE WHEN g % 11 = 0 THEN NULL ELSE decode(md5(g::text) || repeat('00ff', g % 40), 'hex') END,
       jsonb_build_object('n', g, 'name', 'item ' || g, 'nested', jsonb_build_object('even', g % 2 = 0),
                          'list', jsonb_build_array(g, g * 2, 'x' || g)),
       json_build_object('k', g, 'quote', 'say "hi" \ ' || g),
       ARRAY['tag' || g % 5, 'tag' || g % 7, CASE WHEN g % 3 = 0 THEN NULL ELSE 'a,b {c}' END],
       ARRAY[g, -g, g % 13],
       ROW(g, 'pair ' || g)::pair,
       g / 7.0, g % 2 = 0, date '2020-02-29' + g, g * interval '1 minute 3 seconds',
       md5('u' || g)::uuid,
       CASE WHEN g % 17 = 0 THEN NULL ELSE E'line1\nline2\ttab\\back ' || g || ' ✓' END
FROM generate_series(1, 4000) g;

SELECT setval('ticket_seq', 123456);
SELECT lo_from_bytea(424242, convert_to(repeat('large object ✓ ', 20000), 'UTF8'));
SELECT lo_from_bytea(424243, decode(repeat('deadbeef', 50000), 'hex'));
COMMENT ON LARGE OBJECT 424242 IS 'a large object';
ANALYZE;
EOF
}

# pg_dump's version lines and its random \restrict key differ between any two dumps.
no_volatile_lines() { grep -Ev '^(-- Dumped|\\(un)?restrict )'; }

# What both databases must agree on, as PostgreSQL sees them (no pgstash involved): the
# schema-only dump, then every table's rows in primary-key order, sequence positions and large
# objects.
snapshot() {
  local db=$1 out=$2 t
  "$PG_DUMP" -h "$PGSTASH_PG_SOCKET_DIR" -p "$PGSTASH_PG_PORT" -U postgres --schema-only "$db" |
    no_volatile_lines >"$out"
  for t in customers items audit; do
    echo "-- table $t" >>"$out"
    admin -d "$db" -c "COPY (SELECT * FROM $t ORDER BY id) TO STDOUT" >>"$out"
  done
  admin -d "$db" -At >>"$out" <<'EOF'
SELECT 'seq', sequencename, last_value FROM pg_sequences ORDER BY sequencename;
SELECT 'lo', m.oid, md5(lo_get(m.oid)), obj_description(m.oid, 'pg_largeobject')
FROM pg_largeobject_metadata m ORDER BY m.oid;
SELECT 'fn', customer_total(7);
EOF
}

same_snapshot() {
  local label=$1 want=$2 got=$3
  if ! cmp -s "$want" "$got"; then
    diff "$want" "$got" | head -n 30 >&2
    fail "$label: the copy differs from the original (diff above)"
  fi
}

run_mode() {
  local mode=$1 port pid src=${PREFIX}_${1}_src custom=${PREFIX}_${1}_custom plain=${PREFIX}_${1}_plain
  local dir=$work/$mode
  read -r port pid <<<"$("$instance" start "$dir" "pool.mode = \"$mode\"" 'pool.size = 4')"
  echo "# $mode pooling: pgstash on 127.0.0.1:$port (pid $pid)"
  local via=(-h 127.0.0.1 -p "$port" -U postgres)

  admin -c "CREATE DATABASE $src"
  fill_source "$src" >/dev/null
  snapshot "$src" "$dir/src.snap"
  # A comparison of empty snapshots would prove nothing.
  [[ $(grep -c '' "$dir/src.snap") -gt 4500 && $(grep -c '^lo|' "$dir/src.snap") == 2 ]] ||
    fail "$mode: the source snapshot lacks the rows or the large objects"

  # --- custom format: pg_dump -Fc and pg_restore, both through pgstash
  "$PG_DUMP" "${via[@]}" -Fc -f "$dir/through.dump" "$src" 2>"$dir/pg_dump.err" || {
    cat "$dir/pg_dump.err" >&2
    fail "$mode: pg_dump -Fc through pgstash failed"
  }
  [[ ! -s $dir/pg_dump.err ]] || fail "$mode: pg_dump -Fc through pgstash warned: $(<"$dir/pg_dump.err")"
  "$PG_DUMP" -h "$PGSTASH_PG_SOCKET_DIR" -p "$PGSTASH_PG_PORT" -U postgres -Fc -f "$dir/direct.dump" "$src"
  "$PG_RESTORE" -f - "$dir/through.dump" | no_volatile_lines >"$dir/through.sql"
  "$PG_RESTORE" -f - "$dir/direct.dump" | no_volatile_lines >"$dir/direct.sql"
  if ! cmp -s "$dir/direct.sql" "$dir/through.sql"; then
    diff "$dir/direct.sql" "$dir/through.sql" | head -n 30 >&2
    fail "$mode: the archive pg_dump wrote through pgstash differs from a direct dump"
  fi
  ok "$mode: pg_dump -Fc through pgstash holds what a direct dump holds"

  admin -c "CREATE DATABASE $custom"
  "$PG_RESTORE" "${via[@]}" --exit-on-error -d "$custom" "$dir/through.dump" 2>"$dir/pg_restore.err" || {
    cat "$dir/pg_restore.err" >&2
    fail "$mode: pg_restore through pgstash failed"
  }
  snapshot "$custom" "$dir/custom.snap"
  same_snapshot "$mode: pg_restore" "$dir/src.snap" "$dir/custom.snap"
  ok "$mode: pg_restore through pgstash recreated the database exactly"

  # --- plain format replayed by psql, as `pg_dump db | psql newdb`
  "$PG_DUMP" "${via[@]}" -f "$dir/plain.sql" "$src" || fail "$mode: plain pg_dump through pgstash failed"
  admin -c "CREATE DATABASE $plain"
  "$PSQL" -X -q -v ON_ERROR_STOP=1 "${via[@]}" -d "$plain" -f "$dir/plain.sql" >"$dir/psql.out" 2>&1 || {
    cat "$dir/psql.out" >&2
    fail "$mode: replaying the plain dump with psql through pgstash failed"
  }
  snapshot "$plain" "$dir/plain.snap"
  same_snapshot "$mode: plain dump through psql" "$dir/src.snap" "$dir/plain.snap"
  ok "$mode: a plain dump replayed with psql through pgstash recreated the database exactly"

  "$instance" stop "$dir"
}

for mode in "${MODES[@]}"; do
  run_mode "$mode"
done
echo "pg_dump_restore_test: all $checks checks passed"
