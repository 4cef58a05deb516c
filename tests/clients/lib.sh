# shellcheck shell=bash disable=SC2034 # variables for the tests that source this
# What the client shell tests share: the test cluster's environment, check counting, statements
# sent to the cluster directly, and a work directory whose pgstash is stopped when the test exits
# (the directory is kept and the end of the log shown if the test failed).
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" NAME
#
# sets instance, PSQL, PGBENCH and work, and installs the EXIT trap. A test with more to undo
# defines after_test (called by the trap once pgstash is stopped, with `set +e`).
: "${PGSTASH_TEST_CLUSTER_DIR:?run through ctest (PGSTASH_TEST_CLUSTER_DIR is not set)}"
# shellcheck disable=SC1091
source "$PGSTASH_TEST_CLUSTER_DIR/env"

TEST_NAME=$1
src=${PGSTASH_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
instance=$src/tests/lib/pgstash_instance.sh
PSQL=$PGSTASH_PG_BIN/psql
PGBENCH=$PGSTASH_PG_BIN/pgbench

checks=0
ok() {
  checks=$((checks + 1))
  echo "ok - $*"
}
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# Administrative statements go to the cluster directly over its Unix socket.
admin() {
  "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$PGSTASH_PG_SOCKET_DIR" -p "$PGSTASH_PG_PORT" -U postgres \
    -d postgres "$@"
}

after_test() { :; }

work=$(mktemp -d "${TMPDIR:-/tmp}/pgstash-$TEST_NAME.XXXXXX")
finish_test() {
  local rc=$?
  set +e
  # On failure, show the end of the pgstash log too.
  if ((rc != 0)); then export PGSTASH_KEEP_LOG=1; fi
  "$instance" stop "$work" || rc=1
  after_test
  if ((rc == 0)); then
    rm -rf "$work"
  else
    echo "$TEST_NAME: FAILED (exit $rc); files kept in $work" >&2
  fi
  exit "$rc"
}
trap finish_test EXIT
