#!/usr/bin/env bash
# The differential protocol fuzzer (differential_fuzz.py) for ctest: PostgreSQL directly against
# PostgreSQL through a pgstash started here.
#
#   run_differential.sh POOL_MODE FUZZ_MODE SECONDS [fuzzer options...]
#
# POOL_MODE is session or transaction (transaction uses pool.size = 2, so that the clients share
# server connections); FUZZ_MODE is normal or malformed. With PGSTASH_FUZZ_CACHE=1 pgstash runs
# with its result cache on: its answers must still be PostgreSQL's. The seed is random and printed first;
# PGSTASH_FUZZ_SEED sets it. Fails if the fuzzer finds a difference, a hang or a crash, if
# pgstash is no longer running afterwards, or if its log holds a sanitizer report.
#
# Needs the integration test environment: PGSTASH_TEST_CLUSTER_DIR, PGSTASH_BIN and
# PGSTASH_SOURCE_DIR, as ctest sets them.
set -euo pipefail

usage() {
  echo "usage: $0 session|transaction normal|malformed SECONDS [fuzzer options...]" >&2
  exit 2
}
(($# >= 3)) || usage
pool_mode=$1 fuzz_mode=$2 seconds=$3
shift 3
case $pool_mode in session | transaction) ;; *) usage ;; esac
case $fuzz_mode in normal | malformed) ;; *) usage ;; esac

: "${PGSTASH_TEST_CLUSTER_DIR:?run through ctest (PGSTASH_TEST_CLUSTER_DIR is not set)}"
# shellcheck disable=SC1091
source "$PGSTASH_TEST_CLUSTER_DIR/env"
src=${PGSTASH_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
instance=$src/tests/lib/pgstash_instance.sh
# shellcheck source=scripts/lib/common.sh
source "$src/scripts/lib/common.sh"

if [[ -n ${PGSTASH_FUZZ_SEED:-} ]]; then
  seed=$PGSTASH_FUZZ_SEED
else
  seed=$((((RANDOM << 15) | RANDOM) + 1))
fi
echo "differential fuzz ($pool_mode pooling, $fuzz_mode${PGSTASH_FUZZ_CACHE:+, cache $PGSTASH_FUZZ_CACHE}): seed $seed"

config=("pool.mode = \"$pool_mode\"")
if [[ $pool_mode == transaction ]]; then
  config+=("pool.size = 2")
fi
if [[ -n ${PGSTASH_FUZZ_LOG_LEVEL:-} ]]; then
  config+=("log.level = \"$PGSTASH_FUZZ_LOG_LEVEL\"")
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/pgstash-differential.XXXXXX")
admin_port=
if [[ ${PGSTASH_FUZZ_CACHE:-0} == 1 ]]; then
  config+=("cache.enabled = true" "cache.path = \"$work/cache\"")
  # The admin port, to report how much the cache answered.
  admin_port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  config+=("admin.port = $admin_port" "admin.token = \"differential-fuzz\"")
fi
pid=
finish() {
  local rc=$?
  set +e
  if [[ -n $pid && $pid != 0 ]] && ! alive "$pid"; then
    echo "FAIL: pgstash (pid $pid) is no longer running" >&2
    rc=1
  fi
  if ((rc != 0)); then export PGSTASH_KEEP_LOG=1; fi
  "$instance" stop "$work" || rc=1
  if ((rc == 0)); then
    rm -rf "$work"
  else
    echo "differential fuzz: FAILED (exit $rc); pgstash config and log kept in $work" >&2
    echo "reproduce: PGSTASH_FUZZ_SEED=$seed PGSTASH_FUZZ_CACHE=${PGSTASH_FUZZ_CACHE:-0}" \
      "$0 $pool_mode $fuzz_mode $seconds $*" >&2
  fi
  exit "$rc"
}
trap finish EXIT

read -r port pid < <("$instance" start "$work" "${config[@]}")
[[ -n $port && -n $pid ]] || {
  echo "FAIL: pgstash did not start" >&2
  exit 1
}

pid_args=()
# pid 0: PGSTASH_DEBUG_DIRECT_TO_POSTGRES, no pgstash to watch.
[[ $pid == 0 ]] || pid_args=(--proxy-pid "$pid")
/usr/bin/python3 "$src/tests/fuzz/differential_fuzz.py" --seed "$seed" --seconds "$seconds" \
  --mode "$fuzz_mode" --pool-mode "$pool_mode" --direct-port "$PGSTASH_PG_PORT" \
  --proxy-port "$port" "${pid_args[@]}" "$@"
if [[ -n $admin_port ]]; then
  /usr/bin/python3 - "$admin_port" <<'PY'
import json, sys, urllib.request
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/cache",
                                 headers={"Authorization": "Bearer differential-fuzz"})
stats = json.load(urllib.request.urlopen(request, timeout=10))
print(f"differential fuzz: the cache answered {stats['hits']} statements, "
      f"missed {stats['misses']}, stored {stats['stores']}; not cached: {stats.get('uncacheable')}")
PY
fi
