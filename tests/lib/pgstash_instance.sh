#!/usr/bin/env bash
# Starts or stops one pgstash for one integration test, in front of the test cluster.
#
#   pgstash_instance.sh start WORKDIR ['section.key = value' ...]
#       Writes WORKDIR/userlist.txt and WORKDIR/pgstash.toml, starts $PGSTASH_BIN in the
#       background (log: WORKDIR/pgstash.log), waits until its port accepts TCP, writes
#       WORKDIR/pid and WORKDIR/port, and prints "PORT PID" on stdout (nothing else goes to
#       stdout). Each extra argument is a full `section.key = value` TOML line that replaces a
#       base key of the same name or adds one (`section.key =` with no value removes the key);
#       `a.b.key = v` goes to section [a.b].
#   pgstash_instance.sh stop WORKDIR
#       TERM, then KILL after 5 s. Prints the last 30 log lines if PGSTASH_KEEP_LOG is set or the
#       process had already died. Exits non-zero if the log holds a sanitizer report.
#
# Needs PGSTASH_TEST_CLUSTER_DIR (with the env file written by scripts/pg_test_cluster.sh) and
# PGSTASH_BIN, as ctest sets them for integration tests.
#
# Debugging aid only, never used by a test: PGSTASH_DEBUG_DIRECT_TO_POSTGRES=1 starts no pgstash
# and prints the cluster's own port (and pid 0), to check a client test against PostgreSQL itself.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

log() { printf 'pgstash_instance: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

usage() {
  echo "usage: $0 start WORKDIR ['section.key = value' ...] | stop WORKDIR" >&2
  exit 2
}

trim() {
  local s=$1
  s=${s#"${s%%[![:space:]]*}"}
  s=${s%"${s##*[![:space:]]}"}
  printf '%s' "$s"
}

tcp_accepts() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

SANITIZER_RE='ERROR: (Address|Leak|Memory|Thread)Sanitizer|runtime error: |SUMMARY: UndefinedBehaviorSanitizer'

# The config: base keys first, then the extra lines replace or add keys.
declare -A VALUES=()
SECTIONS=()
declare -A SECTION_KEYS=()

set_key() {
  local section=$1 key=$2 value=$3
  if [[ -z ${SECTION_KEYS[$section]+x} ]]; then
    SECTIONS+=("$section")
    SECTION_KEYS[$section]=""
  fi
  if [[ -z ${VALUES["$section.$key"]+x} ]]; then
    SECTION_KEYS[$section]+="$key"$'\n'
  fi
  VALUES["$section.$key"]=$value
}

# `section.key = value` (section may itself contain dots: the key is the last component).
apply_line() {
  local line=$1 lhs value section key
  [[ $line == *=* ]] || die "extra config line has no '=': $line"
  lhs=$(trim "${line%%=*}")
  value=$(trim "${line#*=}")
  [[ $lhs == *.* ]] || die "extra config line needs section.key: $line"
  section=${lhs%.*}
  key=${lhs##*.}
  [[ -n $section && -n $key ]] || die "bad extra config line: $line"
  set_key "$section" "$key" "$value"
}

write_config() {
  local out=$1 section key first=1
  {
    echo "# written by tests/lib/pgstash_instance.sh"
    for section in "${SECTIONS[@]}"; do
      ((first)) || echo
      first=0
      echo "[$section]"
      while IFS= read -r key; do
        [[ -n $key ]] || continue
        [[ -n ${VALUES["$section.$key"]} ]] || continue # `section.key =` removes the key
        echo "$key = ${VALUES["$section.$key"]}"
      done <<<"${SECTION_KEYS[$section]}"
    done
  } >"$out"
}

toml_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

do_start() {
  local work=$1
  shift
  : "${PGSTASH_TEST_CLUSTER_DIR:?PGSTASH_TEST_CLUSTER_DIR is not set (run through ctest)}"
  [[ -f $PGSTASH_TEST_CLUSTER_DIR/env ]] ||
    die "$PGSTASH_TEST_CLUSTER_DIR/env not found: is the postgres fixture running?"
  # shellcheck disable=SC1091
  source "$PGSTASH_TEST_CLUSTER_DIR/env"

  mkdir -p "$work"
  work=$(cd "$work" && pwd)

  if [[ ${PGSTASH_DEBUG_DIRECT_TO_POSTGRES:-} == 1 ]]; then
    [[ ${CI:-} != true ]] || die "PGSTASH_DEBUG_DIRECT_TO_POSTGRES is a local debugging aid, refused under CI"
    log "WARNING: PGSTASH_DEBUG_DIRECT_TO_POSTGRES=1: no pgstash, clients talk to PostgreSQL directly"
    echo "$PGSTASH_PG_PORT" >"$work/port"
    echo 0 >"$work/pid"
    echo "$PGSTASH_PG_PORT 0"
    return 0
  fi

  : "${PGSTASH_BIN:?PGSTASH_BIN is not set (run through ctest)}"
  [[ -x $PGSTASH_BIN ]] || die "pgstash binary not found or not executable: $PGSTASH_BIN"

  cat >"$work/userlist.txt" <<'EOF'
"pgstash_scram" "scram-secret-1"
"pgstash_md5" "md5-secret-1"
"pgstash_clear" "clear-secret-1"
"postgres" "postgres-secret"
EOF

  local attempt port pid i
  for attempt in 1 2 3; do
    port=$(free_port)
    VALUES=()
    SECTIONS=()
    SECTION_KEYS=()
    set_key listen host '"127.0.0.1"'
    set_key listen port "$port"
    set_key listen unix_socket_dir '""'  # tests that want the socket give it a directory
    set_key server host '"127.0.0.1"'
    set_key server port "$PGSTASH_PG_PORT"
    set_key auth method '"trust"'
    set_key auth file "$(toml_string "$work/userlist.txt")"
    set_key pool mode '"session"'
    set_key pool size 20
    set_key log level '"info"'
    local extra
    for extra in "$@"; do
      apply_line "$extra"
    done
    # An extra may have set the listen port itself; then a port clash is not worth a retry.
    local fixed_port=0
    [[ ${VALUES[listen.port]} == "$port" ]] || fixed_port=1
    port=${VALUES[listen.port]}
    write_config "$work/pgstash.toml"

    # The subshell resets SIGINT/SIGQUIT, which bash ignores in background jobs, then execs.
    (
      trap - INT QUIT
      exec "$PGSTASH_BIN" --config "$work/pgstash.toml" </dev/null >"$work/pgstash.log" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$work/pid"
    echo "$port" >"$work/port"

    for ((i = 0; i < 200; i++)); do
      if ! alive "$pid"; then
        break
      fi
      if tcp_accepts "$port"; then
        echo "$port $pid"
        return 0
      fi
      sleep 0.1
    done

    if alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      log "pgstash (pid $pid) did not accept connections on 127.0.0.1:$port within 20 s"
      tail -n 50 "$work/pgstash.log" >&2 || true
      exit 1
    fi
    wait "$pid" 2>/dev/null || true
    # Lost a race for the port with another process: try another one.
    if ((attempt < 3 && !fixed_port)) && grep -qiE 'address already in use|EADDRINUSE' "$work/pgstash.log"; then
      log "port $port was taken meanwhile, retrying"
      continue
    fi
    log "pgstash exited during startup; config $work/pgstash.toml:"
    cat "$work/pgstash.toml" >&2
    log "log $work/pgstash.log:"
    tail -n 50 "$work/pgstash.log" >&2 || true
    exit 1
  done
}

do_stop() {
  local work=$1
  if [[ ! -d $work ]]; then
    log "no directory $work: nothing to stop"
    return 0
  fi
  work=$(cd "$work" && pwd)
  if [[ ! -f $work/pid ]]; then
    log "no $work/pid: nothing to stop"
    return 0
  fi
  local pid died=0 i
  pid=$(<"$work/pid")
  if [[ $pid == 0 ]]; then # PGSTASH_DEBUG_DIRECT_TO_POSTGRES
    rm -f "$work/pid"
    return 0
  fi
  # Never signal a recycled pid: the process must be the pgstash started with this WORKDIR.
  local cmdline=""
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || true
  if alive "$pid" && [[ $cmdline == *"$work/pgstash.toml"* ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "pgstash (pid $pid) still alive 5 s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    died=1
    log "pgstash (pid $pid) had already exited before stop"
  fi
  rm -f "$work/pid"

  local sanitizer=0
  if [[ -f $work/pgstash.log ]] && grep -qE "$SANITIZER_RE" "$work/pgstash.log"; then
    sanitizer=1
  fi
  if [[ -n ${PGSTASH_KEEP_LOG:-} ]] || ((died || sanitizer)); then
    if ((sanitizer)); then
      echo "---- sanitizer report in $work/pgstash.log ----" >&2
      grep -E -A40 "$SANITIZER_RE" "$work/pgstash.log" | head -n 120 >&2 || true
    fi
    echo "---- last 30 lines of $work/pgstash.log ----" >&2
    tail -n 30 "$work/pgstash.log" >&2 || true
    echo "---- end of pgstash log ----" >&2
  fi
  if ((sanitizer)); then
    log "ERROR: pgstash reported a sanitizer error"
    return 1
  fi
  return 0
}

[[ $# -ge 2 ]] || usage
cmd=$1
shift
case $cmd in
  start) do_start "$@" ;;
  stop)
    [[ $# -eq 1 ]] || usage
    do_stop "$1"
    ;;
  *) usage ;;
esac
