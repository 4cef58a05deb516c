#!/usr/bin/env bash
# Throwaway PostgreSQL 15 cluster for tests (the ctest `postgres` fixture).
#
#   pg_test_cluster.sh start DIR   create, configure and start a cluster; write DIR/env
#   pg_test_cluster.sh restart DIR stop it (fast) and start it again on the same port
#   pg_test_cluster.sh stop DIR    stop it, keep its log as DIR/postgres.log, delete its files
#
# PGSTASH_PG_EXTRA_CONF, if set, is appended to postgresql.conf by start (lines such as
# "wal_level = replica").
#
# PostgreSQL refuses to run as root, so the cluster runs as a non-root OS user (`postgres` if it
# exists, else a system user `pgstash-pg` created here). Its data, sockets and certificates live
# in a fresh temporary directory, not in DIR (DIR may sit in a root-owned build tree).
#
# DIR/env holds plain KEY=value lines (no quoting, no spaces), both shell-sourceable and
# trivially parseable:
#   PGSTASH_PG_HOST PGSTASH_PG_PORT PGSTASH_PG_SOCKET_DIR PGSTASH_PG_DATA PGSTASH_PG_LOG
#   PGSTASH_PG_PID PGSTASH_PG_CA PGSTASH_PG_BIN PGSTASH_PG_OSUSER PGSTASH_PG_TMPDIR
#
# Roles: postgres (superuser, trust), pgstash_scram / pgstash_md5 / pgstash_clear with passwords
# scram-secret-1 / md5-secret-1 / clear-secret-1, authenticated over TCP with scram-sha-256 / md5 /
# password respectively. Database pgstash_test, usable by every role.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PG_BIN=/usr/lib/postgresql/15/bin

log() { printf 'pg_test_cluster: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

# Reads KEY from an env file written by start (no sourcing: the file may be stale or partial).
env_get() {
  local file=$1 key=$2 line
  while IFS= read -r line; do
    if [[ $line == "$key="* ]]; then
      printf '%s\n' "${line#*=}"
      return 0
    fi
  done <"$file"
  return 0
}

# True if PID is alive and is a postgres process (guards against a recycled pid of a stale run).
is_postmaster() {
  local pid=$1 comm stat
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ $comm == postgres* ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]] # a zombie is as good as gone
}

pick_os_user() {
  if id -u postgres >/dev/null 2>&1; then
    echo postgres
    return
  fi
  if ! id -u pgstash-pg >/dev/null 2>&1; then
    log "creating system user pgstash-pg"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin pgstash-pg
  fi
  echo pgstash-pg
}

as_pg() {
  # cd first: the caller's cwd may be unreadable for the PostgreSQL user.
  (cd / && runuser -u "$OSUSER" -- "$@")
}

do_stop() {
  local dir=$1
  local envfile=$dir/env
  if [[ ! -f $envfile ]]; then
    log "no $envfile: nothing to stop"
    return 0
  fi
  local pid tmp logfile
  pid=$(env_get "$envfile" PGSTASH_PG_PID)
  tmp=$(env_get "$envfile" PGSTASH_PG_TMPDIR)
  logfile=$(env_get "$envfile" PGSTASH_PG_LOG)

  if is_postmaster "$pid"; then
    log "stopping postmaster $pid (fast shutdown)"
    kill -INT "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do
      is_postmaster "$pid" || break
      sleep 0.1
    done
    if is_postmaster "$pid"; then
      log "postmaster $pid still alive after 30 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        is_postmaster "$pid" || break
        sleep 0.1
      done
    fi
  else
    log "postmaster ${pid:-?} is not running"
  fi

  if [[ -n $logfile && -f $logfile ]]; then
    cp -f "$logfile" "$dir/postgres.log"
    echo "---- last 40 lines of the PostgreSQL log ($dir/postgres.log) ----"
    tail -n 40 "$dir/postgres.log"
    echo "---- end of PostgreSQL log ----"
  fi

  # Only ever delete a directory this script created.
  if [[ -n $tmp && -d $tmp && -f $tmp/.pgstash-test-cluster ]]; then
    rm -rf -- "$tmp"
  fi
  rm -f -- "$envfile"
  log "stopped"
}

write_certs() {
  local ssl=$1
  local ext=$ssl/server.ext
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$ssl/ca.key" -out "$ssl/ca.crt" -days 3650 -subj "/CN=pgstash test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$ssl/server.key" -out "$ssl/server.csr" -subj "/CN=localhost" 2>/dev/null
  cat >"$ext" <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EOF
  openssl x509 -req -in "$ssl/server.csr" -CA "$ssl/ca.crt" -CAkey "$ssl/ca.key" \
    -CAcreateserial -out "$ssl/server.crt" -days 3650 -extfile "$ext" 2>/dev/null
  rm -f "$ssl/server.csr" "$ext"
  chown -R "$OSUSER:" "$ssl"
  chmod 0755 "$ssl"
  chmod 0600 "$ssl/server.key" "$ssl/ca.key"
  chmod 0644 "$ssl/ca.crt" "$ssl/server.crt"
}

on_start_exit() {
  [[ $START_OK == 1 ]] && return 0
  if [[ -f $START_DIR/env ]]; then
    do_stop "$START_DIR" >&2 || true
  else
    cp -f "$START_TMP/postgres.log" "$START_DIR/postgres.log" 2>/dev/null || true
    rm -rf -- "$START_TMP"
  fi
}

do_start() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)

  # A stale DIR from an aborted run: stop its postmaster and delete its files first.
  if [[ -f $dir/env ]]; then
    log "found a stale cluster in $dir: cleaning it up"
    do_stop "$dir" >/dev/null || true
  fi
  rm -f "$dir/env" "$dir/postgres.log"

  [[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/postgres ]] ||
    die "PostgreSQL 15 binaries not found in $PG_BIN (run scripts/setup)"
  command -v openssl >/dev/null || die "openssl not found (run scripts/setup)"

  OSUSER=$(pick_os_user)
  local tmp
  # Always under /tmp: the PostgreSQL user must be able to reach it, and socket paths must stay short.
  tmp=$(mktemp -d /tmp/pgstash-pg.XXXXXX)
  touch "$tmp/.pgstash-test-cluster"
  # From here on, a failed start stops the postmaster again and deletes the temporary files.
  START_DIR=$dir START_TMP=$tmp START_OK=0
  trap on_start_exit EXIT
  local data=$tmp/data sock=$tmp/sock ssl=$tmp/ssl logfile=$tmp/postgres.log
  mkdir -p "$sock" "$ssl"
  chown -R "$OSUSER:" "$tmp"
  chmod 0755 "$tmp" # other users may need to reach the socket directory and the CA

  local t0=$SECONDS
  log "initdb as $OSUSER in $data"
  if ! as_pg "$PG_BIN/initdb" -D "$data" -A trust --nosync -U postgres -E UTF8 --locale=C \
    >"$tmp/initdb.log" 2>&1; then
    cat "$tmp/initdb.log" >&2
    die "initdb failed"
  fi

  write_certs "$ssl"

  local port
  port=$(free_port)

  cat >>"$data/postgresql.conf" <<EOF

# ---- pgstash test cluster ----
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
ssl = on
ssl_cert_file = '$ssl/server.crt'
ssl_key_file = '$ssl/server.key'
password_encryption = 'scram-sha-256'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
# The result cache's tests count what reaches the server.
shared_preload_libraries = 'pg_stat_statements'
${PGSTASH_PG_EXTRA_CONF:-}
EOF

  cat >"$data/pg_hba.conf" <<'EOF'
# TYPE  DATABASE     USER           ADDRESS        METHOD
local   all          all                           trust
local   replication  all                           trust
host    all          pgstash_md5    127.0.0.1/32   md5
host    all          pgstash_clear  127.0.0.1/32   password
host    all          pgstash_scram  127.0.0.1/32   scram-sha-256
host    all          all            127.0.0.1/32   trust
host    replication  all            127.0.0.1/32   trust
host    all          pgstash_md5    ::1/128        md5
host    all          pgstash_clear  ::1/128        password
host    all          pgstash_scram  ::1/128        scram-sha-256
host    all          all            ::1/128        trust
host    replication  all            ::1/128        trust
EOF
  chown "$OSUSER:" "$data/postgresql.conf" "$data/pg_hba.conf"

  log "starting postmaster on 127.0.0.1:$port"
  if ! as_pg "$PG_BIN/pg_ctl" -D "$data" -w -t 60 -l "$logfile" start >"$tmp/pg_ctl.log" 2>&1; then
    cat "$tmp/pg_ctl.log" >&2
    echo "---- PostgreSQL log ----" >&2
    cat "$logfile" >&2 2>/dev/null || true
    die "PostgreSQL did not start"
  fi

  local pid
  pid=$(head -n 1 "$data/postmaster.pid")

  # Write env now, so that `stop` can clean up even if the rest of start fails.
  cat >"$dir/env.tmp" <<EOF
PGSTASH_PG_HOST=127.0.0.1
PGSTASH_PG_PORT=$port
PGSTASH_PG_SOCKET_DIR=$sock
PGSTASH_PG_DATA=$data
PGSTASH_PG_LOG=$logfile
PGSTASH_PG_PID=$pid
PGSTASH_PG_CA=$ssl/ca.crt
PGSTASH_PG_BIN=$PG_BIN
PGSTASH_PG_OSUSER=$OSUSER
PGSTASH_PG_TMPDIR=$tmp
EOF
  mv -f "$dir/env.tmp" "$dir/env"

  local i ready=0
  for ((i = 0; i < 300; i++)); do
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -U postgres; then
      ready=1
      break
    fi
    is_postmaster "$pid" || break
    sleep 0.1
  done
  if ((!ready)); then
    echo "---- PostgreSQL log ----" >&2
    cat "$logfile" >&2 || true
    die "PostgreSQL is not accepting connections on 127.0.0.1:$port"
  fi

  local psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres)
  if ! "${psql[@]}" -d postgres >"$tmp/seed.log" 2>&1 <<'EOF'; then
SET password_encryption = 'scram-sha-256';
CREATE ROLE pgstash_scram LOGIN PASSWORD 'scram-secret-1';
CREATE ROLE pgstash_clear LOGIN PASSWORD 'clear-secret-1';
ALTER ROLE postgres PASSWORD 'postgres-secret';
SET password_encryption = 'md5';
CREATE ROLE pgstash_md5 LOGIN PASSWORD 'md5-secret-1';
CREATE DATABASE pgstash_test OWNER postgres;
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE pgstash_test TO PUBLIC;
\connect pgstash_test
GRANT ALL ON SCHEMA public TO PUBLIC;
CREATE EXTENSION pg_stat_statements;
EOF
    cat "$tmp/seed.log" >&2
    die "creating the test roles and database failed"
  fi

  # Fail loudly now rather than in every test if the stored password formats are not as expected.
  local formats
  formats=$("${psql[@]}" -d postgres -At -c \
    "SELECT string_agg(rolname || ':' || left(rolpassword, 3), ',' ORDER BY rolname)
       FROM pg_authid WHERE rolname LIKE 'pgstash\_%'")
  [[ $formats == "pgstash_clear:SCR,pgstash_md5:md5,pgstash_scram:SCR" ]] ||
    die "unexpected stored password formats: $formats"

  START_OK=1
  log "ready in $((SECONDS - t0)) s: 127.0.0.1:$port, socket $sock, pid $pid, env in $dir/env"
}

do_restart() {
  local dir=$1 data logfile pid
  [[ -f $dir/env ]] || die "no cluster in $dir"
  data=$(env_get "$dir/env" PGSTASH_PG_DATA)
  logfile=$(env_get "$dir/env" PGSTASH_PG_LOG)
  OSUSER=$(env_get "$dir/env" PGSTASH_PG_OSUSER)
  as_pg "$PG_BIN/pg_ctl" -D "$data" -w -t 60 -m fast -l "$logfile" restart >/dev/null ||
    die "PostgreSQL did not restart"
  pid=$(head -n 1 "$data/postmaster.pid")
  sed -i "s/^PGSTASH_PG_PID=.*/PGSTASH_PG_PID=$pid/" "$dir/env"
  log "restarted: pid $pid"
}

[[ $# -eq 2 ]] || usage
case $1 in
  start) do_start "$2" ;;
  restart) do_restart "$2" ;;
  stop) do_stop "$2" ;;
  *) usage ;;
esac
