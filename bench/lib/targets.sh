# shellcheck shell=bash disable=SC2153,SC2034 # variables shared with bench/run
# Starting and stopping the benchmark targets. Sourced by bench/run, which sets:
#   ROOT (repository), WORK (scratch directory, world-readable), PG_BIN, PG_PORT, OSUSER
#   (the unprivileged OS user the cluster runs as), PGSTASH_BIN, POOL_SIZE, MAX_CLIENTS.
# Each start_* function sets <TARGET>_PORT and <TARGET>_PID; each stop_* function stops exactly
# the process(es) its start_* started, by pid, and is safe to call twice.

# shellcheck source=scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"

tcp_accepts() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The pid and all its live descendants, one per line.
pid_tree() {
  local root=$1 pid ppid stat
  alive "$root" || return 0
  declare -A kids=()
  for stat in /proc/[0-9]*/stat; do
    stat=$(cat "$stat" 2>/dev/null) || continue
    pid=${stat%% *}
    stat=${stat##*) }
    read -r _ ppid _ <<<"$stat"
    kids[$ppid]+="$pid "
  done
  local todo=("$root") seen=()
  while ((${#todo[@]})); do
    pid=${todo[-1]}
    unset 'todo[-1]'
    seen+=("$pid")
    # shellcheck disable=SC2206
    [[ -z ${kids[$pid]:-} ]] || todo+=(${kids[$pid]})
  done
  printf '%s\n' "${seen[@]}"
}

# spawn_as_user LOG COMMAND...: starts COMMAND in the background as the unprivileged OS user,
# output to LOG, and sets SPAWNED_PID to its pid (the subshell execs setpriv, which execs
# COMMAND: one process). setpriv keeps this shell's resource limits (it does not go through
# PAM, unlike runuser/su). The subshell resets SIGINT/SIGQUIT, which bash ignores in
# background jobs.
SPAWNED_PID=""
spawn_as_user() {
  local logfile=$1
  shift
  (
    trap - INT QUIT
    cd /
    exec setpriv --reuid="$OSUSER" --regid="$OSUSER" --init-groups -- "$@" </dev/null >"$logfile" 2>&1
  ) &
  SPAWNED_PID=$!
}

# wait_port NAME PORT PID LOG: waits until PORT accepts TCP while PID lives; dies otherwise.
wait_port() {
  local name=$1 port=$2 pid=$3 logfile=$4 i
  for ((i = 0; i < 200; i++)); do
    alive "$pid" || break
    if tcp_accepts "$port"; then
      return 0
    fi
    sleep 0.1
  done
  echo "---- $logfile ----" >&2
  tail -n 40 "$logfile" >&2 || true
  die "$name (pid $pid) did not accept connections on 127.0.0.1:$port"
}

# stop_pids NAME SIGNAL PID...: signals the first pid, waits up to 15 s for all of them to exit,
# then SIGKILLs the survivors. Only pids this script started (or their children) are passed.
stop_pids() {
  local name=$1 sig=$2 main=$3 pid i left
  shift 2
  if alive "$main"; then
    kill "-$sig" "$main" 2>/dev/null || true
  fi
  for ((i = 0; i < 150; i++)); do
    left=0
    for pid in "$@"; do alive "$pid" && left=1; done
    ((left)) || return 0
    sleep 0.1
  done
  log "$name still running 15 s after SIG$sig: SIGKILL"
  for pid in "$@"; do alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
  return 0
}

# ---- PgBouncer ---------------------------------------------------------------------------------
PGBOUNCER_PORT="" PGBOUNCER_PID=""

start_pgbouncer() {
  local dir=$WORK/pgbouncer
  mkdir -p "$dir"
  PGBOUNCER_PORT=$(free_port)
  cat >"$dir/pgbouncer.ini" <<EOF
; written by bench/run
[databases]
* = host=127.0.0.1 port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
max_db_connections = $POOL_SIZE
max_client_conn = $MAX_CLIENTS
server_reset_query =
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
  echo '"postgres" ""' >"$dir/userlist.txt"
  chown -R "$OSUSER:" "$dir"
  # PgBouncer refuses to run as root.
  spawn_as_user "$dir/stdout.log" /usr/sbin/pgbouncer "$dir/pgbouncer.ini"
  PGBOUNCER_PID=$SPAWNED_PID
  wait_port PgBouncer "$PGBOUNCER_PORT" "$PGBOUNCER_PID" "$dir/pgbouncer.log"
}

stop_pgbouncer() {
  [[ -n $PGBOUNCER_PID ]] || return 0
  local pids
  mapfile -t pids < <(pid_tree "$PGBOUNCER_PID")
  ((${#pids[@]})) && stop_pids PgBouncer TERM "${pids[@]}"
  wait "$PGBOUNCER_PID" 2>/dev/null || true
  PGBOUNCER_PID=""
}

# ---- pgpool-II ---------------------------------------------------------------------------------
PGPOOL_PORT="" PGPOOL_PID=""

start_pgpool() {
  local dir=$WORK/pgpool
  rm -rf "$dir"
  mkdir -p "$dir/run" "$dir/log" "$dir/oiddir"
  PGPOOL_PORT=$(free_port)
  local pcp_port
  pcp_port=$(free_port)
  # Raw mode (one backend, no replication), health checks off, no failover: a plain pooler
  # with connection cache and in-memory query cache. num_init_children is pgpool's pool size:
  # one child process per concurrent client, each caching one backend connection (max_pool = 1
  # suffices for one database and user), so at most POOL_SIZE clients are served at once and
  # the others wait in the listen queue.
  cat >"$dir/pgpool.conf" <<EOF
# written by bench/run
backend_clustering_mode = 'raw'
listen_addresses = '127.0.0.1'
port = $PGPOOL_PORT
socket_dir = '$dir/run'
pcp_listen_addresses = '127.0.0.1'
pcp_port = $pcp_port
pcp_socket_dir = '$dir/run'
wd_ipc_socket_dir = '$dir/run'
pid_file_name = '$dir/run/pgpool.pid'
logdir = '$dir/log'
log_destination = 'stderr'
log_min_messages = warning
backend_hostname0 = '127.0.0.1'
backend_port0 = $PG_PORT
backend_weight0 = 1
backend_flag0 = 'DISALLOW_TO_FAILOVER'
enable_pool_hba = off
pool_passwd = ''
num_init_children = $POOL_SIZE
max_pool = 1
connection_cache = on
load_balance_mode = off
health_check_period = 0
sr_check_period = 0
failover_on_backend_error = off
use_watchdog = off
memory_cache_enabled = on
memqcache_method = 'shmem'
memqcache_oiddir = '$dir/oiddir'
EOF
  : >"$dir/pcp.conf"
  chown -R "$OSUSER:" "$dir"
  spawn_as_user "$dir/pgpool.log" /usr/sbin/pgpool -n -f "$dir/pgpool.conf" -F "$dir/pcp.conf"
  PGPOOL_PID=$SPAWNED_PID
  wait_port pgpool-II "$PGPOOL_PORT" "$PGPOOL_PID" "$dir/pgpool.log"
}

stop_pgpool() {
  [[ -n $PGPOOL_PID ]] || return 0
  local pids
  mapfile -t pids < <(pid_tree "$PGPOOL_PID")
  # SIGINT is pgpool's fast shutdown; the main process stops its children.
  ((${#pids[@]})) && stop_pids pgpool-II INT "${pids[@]}"
  wait "$PGPOOL_PID" 2>/dev/null || true
  PGPOOL_PID=""
}

# ---- pgstash -----------------------------------------------------------------------------------
PGSTASH_PORT="" PGSTASH_PID="" PGSTASH_MODE="" PGSTASH_CACHE=0

# The config lines that switch pgstash's result cache on, for the cacheable workloads only (every
# other workload measures pgstash as a pooler, cache off). A pgstash that does not accept them
# (--check-config) runs the cacheable workloads as a plain proxy. The store's directory is added
# by start_pgstash, under the run's work directory.
PGSTASH_CACHE_CONFIG=("cache.enabled = true")

# Sets PGSTASH_MODE: transaction pooling if this pgstash accepts it, else session pooling; and
# PGSTASH_CACHE=1 if it accepts PGSTASH_CACHE_CONFIG.
detect_pgstash_features() {
  printf '[pool]\nmode = "transaction"\n' >"$WORK/probe.toml"
  if "$PGSTASH_BIN" --check-config "$WORK/probe.toml" >"$WORK/probe.log" 2>&1; then
    PGSTASH_MODE=transaction
  else
    PGSTASH_MODE=session
  fi
  local line section key
  : >"$WORK/probe.toml"
  for line in "${PGSTASH_CACHE_CONFIG[@]}"; do
    key=${line%%=*}
    section=${key%.*}
    printf '[%s]\n%s =%s\n' "$section" "${key##*.}" "${line#*=}" >>"$WORK/probe.toml"
  done
  if "$PGSTASH_BIN" --check-config "$WORK/probe.toml" >>"$WORK/probe.log" 2>&1; then
    PGSTASH_CACHE=1
  else
    PGSTASH_CACHE=0
  fi
}

# start_pgstash [cache [LINE...]]: with "cache", the result cache is on, with these config lines
# besides.
start_pgstash() {
  local extra=(
    "listen.max_client_conn = $MAX_CLIENTS"
    "pool.size = $POOL_SIZE"
    "pool.mode = \"$PGSTASH_MODE\""
    'server.tls = "disable"'
    'log.level = "warn"'
  )
  # Session pooling gives each client a server connection for its whole session: client 21
  # waits for one. Make it give up after 3 s instead of the default 2 min, so that the
  # 1,000-client and idle runs fail quickly rather than hang.
  [[ $PGSTASH_MODE == transaction ]] || extra+=("pool.wait_timeout_ms = 3000")
  if [[ ${1:-} == cache ]]; then
    extra+=("${PGSTASH_CACHE_CONFIG[@]}" "cache.path = \"$WORK/pgstash-cache\"" "${@:2}")
  fi
  local out
  out=$(PGSTASH_TEST_CLUSTER_DIR=$WORK/cluster PGSTASH_BIN=$PGSTASH_BIN \
    "$ROOT/tests/lib/pgstash_instance.sh" start "$WORK/pgstash" "${extra[@]}") ||
    die "pgstash did not start"
  read -r PGSTASH_PORT PGSTASH_PID <<<"$out"
}

# Sets PGSTASH_SANITIZER=1 if pgstash's log holds a sanitizer report (a sanitizer build, as in
# the test suite).
PGSTASH_SANITIZER=0
stop_pgstash() {
  [[ -n $PGSTASH_PID ]] || return 0
  "$ROOT/tests/lib/pgstash_instance.sh" stop "$WORK/pgstash" || PGSTASH_SANITIZER=1
  PGSTASH_PID=""
}
