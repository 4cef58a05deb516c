#!/usr/bin/env bash
# The Debian package end to end: `cpack -G DEB`, its files and control fields, `dpkg -i` into
# this system, the unit's ExecStart run as the unit's user (with a copy of the packaged config
# pointed at the test cluster), psql through it, the unit's ExecReload, then remove and purge.
#
#   deb_test.sh [BUILD_DIR]    BUILD_DIR defaults to $PGSTASH_BUILD_DIR (set by ctest)
#
# Must run as root (CI does): it installs the package into the real system. Refuses to run if
# a pgstash package is already installed. Needs the `postgres` fixture and dpkg-dev.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/lib/common.sh
source "$src/scripts/lib/common.sh"

ok() { echo "ok - $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# quiet NAME CMD...: runs CMD with its output in $tmp/NAME.log, shown only if CMD fails.
quiet() { "${@:2}" >"$tmp/$1.log" 2>&1 || { cat "$tmp/$1.log" >&2; fail "${*:2}"; }; }

build=${1:-${PGSTASH_BUILD_DIR:-}}
[[ -n $build && -f $build/CPackConfig.cmake ]] ||
  fail "usage: $0 BUILD_DIR (a configured build tree; no CPackConfig.cmake in '$build')"
build=$(cd "$build" && pwd)
((EUID == 0)) || fail "must run as root: this test installs the package with dpkg -i"
: "${PGSTASH_TEST_CLUSTER_DIR:?run through ctest (PGSTASH_TEST_CLUSTER_DIR is not set)}"
# shellcheck disable=SC1091
source "$PGSTASH_TEST_CLUSTER_DIR/env"
for tool in cpack dpkg-deb dpkg-shlibdeps runuser pgrep; do
  command -v "$tool" >/dev/null || fail "$tool not found (dpkg-shlibdeps: apt-get install dpkg-dev)"
done
status=$(dpkg-query -W -f='${db:Status-Status}' pgstash 2>/dev/null || true)
[[ -z $status || $status == not-installed ]] ||
  fail "a pgstash package is already on this system ($status); remove it first: dpkg -P pgstash"

tmp=$(mktemp -d /tmp/pgstash-deb.XXXXXX)
chmod 0755 "$tmp" # the pgstash user reads its config here
installed=0 runner="" pid=""
cleanup() {
  local rc=$?
  set +e
  if [[ -n $runner ]]; then # our runuser and its pgstash child, by pid
    [[ -n $pid ]] || pid=$(pgrep -P "$runner" -x pgstash)
    [[ -n $pid ]] && alive "$pid" && kill -KILL "$pid"
    kill -KILL "$runner" 2>/dev/null
    wait "$runner" 2>/dev/null
  fi
  if ((installed)) && ! dpkg -P pgstash >/dev/null 2>&1; then echo "cleanup: dpkg -P failed" >&2; fi
  if ((rc != 0)) && [[ -f $tmp/pgstash.log ]]; then
    echo "---- last 30 lines of the pgstash log ----" >&2
    tail -n 30 "$tmp/pgstash.log" >&2
  fi
  rm -rf -- "$tmp"
  exit "$rc"
}
trap cleanup EXIT
cd / # runuser's commands must not inherit an unreadable cwd

# --- build and inspect the package ---------------------------------------------------------------
quiet cpack env -C "$build" cpack -G DEB
version=$("${PGSTASH_BIN:-$build/pgstash}" --version)
version=${version#pgstash }
arch=$(dpkg --print-architecture)
deb=$build/pgstash_${version}_${arch}.deb
[[ -f $deb ]] || fail "cpack wrote no $deb"
ok "cpack -G DEB wrote $(basename "$deb")"

listing=$(dpkg-deb -c "$deb")
files=$(awk '$1 !~ /^d/ { p = $NF; sub(/^\.?\//, "", p); print "/" p }' <<<"$listing" |
  LC_ALL=C sort | tr '\n' ' ')
want="/etc/pgstash/pgstash.toml /lib/systemd/system/pgstash.service /usr/bin/pgstash "
want+="/usr/share/doc/pgstash/README.md /usr/share/doc/pgstash/pgstash.example.toml "
[[ $files == "$want" ]] ||
  fail "package files (no test binaries, nothing else):"$'\n'"got  $files"$'\n'"want $want"
[[ -z $(awk '$2 != "root/root"' <<<"$listing") ]] || fail "files not owned by root/root"
grep -q '^-rwxr-xr-x .*usr/bin/pgstash$' <<<"$listing" || fail "/usr/bin/pgstash not 0755"
ok "contents: $files"

field() { dpkg-deb -f "$deb" "$1"; }
got="$(field Package) $(field Version) $(field Architecture)"
[[ $got == "pgstash $version $arch" ]] || fail "Package Version Architecture: $got"
depends=$(field Depends)
[[ $depends == *adduser* && $depends == *libc6* ]] ||
  fail "Depends lacks adduser or dpkg-shlibdeps' libc6: $depends"
for f in Maintainer Section Priority Description; do [[ -n $(field "$f") ]] || fail "no $f"; done
dpkg-deb -e "$deb" "$tmp/control"
[[ $(<"$tmp/control/conffiles") == /etc/pgstash/pgstash.toml ]] || fail "conffiles is wrong"
for s in postinst prerm postrm; do [[ -x $tmp/control/$s ]] || fail "no executable $s"; done
ok "fields: Version $version, Depends $depends; conffiles; postinst, prerm, postrm"

# --- install -------------------------------------------------------------------------------------
installed=1
quiet dpkg dpkg -i "$deb"
[[ $(/usr/bin/pgstash --version) == "pgstash $version" ]] || fail "/usr/bin/pgstash --version"
id -u pgstash >/dev/null || fail "postinst created no pgstash user"
[[ $(stat -c %U /var/lib/pgstash) == pgstash ]] || fail "/var/lib/pgstash is not pgstash's"
[[ $(stat -c '%U:%G %a' /etc/pgstash/userlist.txt) == "root:pgstash 640" ]] ||
  fail "/etc/pgstash/userlist.txt is not root:pgstash 0640"
for conf in /etc/pgstash/pgstash.toml /usr/share/doc/pgstash/pgstash.example.toml; do
  quiet check runuser -u pgstash -- /usr/bin/pgstash --check-config "$conf"
done
ok "dpkg -i: pgstash $version, user, state dir, auth file; packaged and example configs valid"

# --- the unit's ExecStart, as its User, on a copy of the packaged config -------------------------
unit=/lib/systemd/system/pgstash.service
user=$(sed -n 's/^User=//p' "$unit")
port=$(free_port)
mkdir "$tmp/sock" && chown "$user:" "$tmp/sock"
echo '"pgstash_scram" "scram-secret-1"' >"$tmp/userlist.txt"
chown "root:$user" "$tmp/userlist.txt" && chmod 0640 "$tmp/userlist.txt"
# Replaces `key = value` lines of the packaged config, section by section; each must be there.
edits="listen.port=$port;listen.unix_socket_dir=\"$tmp/sock\";server.host=\"$PGSTASH_PG_HOST\""
edits+=";server.port=$PGSTASH_PG_PORT;auth.file=\"$tmp/userlist.txt\";cache.enabled=true"
awk -v edits="$edits" '
  BEGIN {
    n = split(edits, e, ";")
    for (i = 1; i <= n; i++) { j = index(e[i], "="); v[substr(e[i], 1, j - 1)] = substr(e[i], j + 1) }
  }
  /^\[/ { section = $0; sub(/^\[ */, "", section); sub(/ *\].*$/, "", section) }
  /^[a-z_]+ *=/ {
    k = $0; sub(/ *=.*/, "", k); k = section "." k
    if (k in v) { print substr(k, length(section) + 2) " = " v[k]; done[k] = 1; next }
  }
  { print }
  END { for (k in v) if (!(k in done)) { print "packaged config lacks " k > "/dev/stderr"; exit 1 } }
' /etc/pgstash/pgstash.toml >"$tmp/pgstash.toml"

read -ra argv <<<"$(sed -n 's/^ExecStart=//p' "$unit")"
[[ " ${argv[*]} " == *" /etc/pgstash/pgstash.toml "* ]] || fail "ExecStart names no config"
argv=("${argv[@]/#\/etc\/pgstash\/pgstash.toml/$tmp/pgstash.toml}")
runuser -u "$user" -- "${argv[@]}" </dev/null >"$tmp/pgstash.log" 2>&1 &
runner=$!
for ((i = 0; i < 200; i++)); do
  # runuser forks: pgstash is its child (or runuser itself, had it exec'd).
  if [[ -z $pid && $(cat "/proc/$runner/comm" 2>/dev/null) == pgstash ]]; then pid=$runner; fi
  [[ -n $pid ]] || pid=$(pgrep -P "$runner" -x pgstash || true)
  [[ -n $pid ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  alive "$runner" || fail "pgstash exited during startup"
  sleep 0.1
done
((i < 200)) || fail "pgstash did not accept connections on 127.0.0.1:$port within 20 s"
[[ $(stat -c %U "/proc/$pid") == "$user" ]] || fail "pgstash does not run as $user"
grep -q 'result cache on at /var/lib/pgstash/cache' "$tmp/pgstash.log" ||
  fail "the result cache did not open in /var/lib/pgstash/cache"
ok "ExecStart (${argv[*]}) runs as $user, listens on $port, cache in /var/lib/pgstash"

select1() {
  PGPASSWORD=${2:-scram-secret-1} "$PGSTASH_PG_BIN/psql" -X -At -v ON_ERROR_STOP=1 \
    "host=$1 port=$port dbname=pgstash_test user=pgstash_scram connect_timeout=10" -c 'select 1'
}
[[ $(select1 127.0.0.1) == 1 && $(select1 "$tmp/sock") == 1 ]] || fail "select 1 through pgstash"
if select1 127.0.0.1 wrong-password >/dev/null 2>&1; then fail "a wrong password was accepted"; fi
ok "psql through pgstash: select 1 by TCP and by the unix socket (scram-sha-256)"

reload=$(sed -n 's/^ExecReload=//p' "$unit")
read -ra rargv <<<"${reload//\$MAINPID/$pid}"
runuser -u "$user" -- "${rargv[@]}" || fail "ExecReload ($reload) failed"
sleep 1
alive "$pid" || fail "pgstash died on ExecReload ($reload)"
grep -q "config reloaded from $tmp/pgstash.toml" "$tmp/pgstash.log" || fail "ExecReload did not reload"
[[ $(select1 127.0.0.1) == 1 ]] || fail "select 1 after ExecReload"
ok "ExecReload ($reload): the config reloaded, pgstash still serving"

kill -TERM "$pid"
for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
alive "$pid" && fail "pgstash still alive 5 s after SIGTERM"
wait "$runner" || true
pid="" runner=""
ok "SIGTERM stops it"

# --- remove and purge ----------------------------------------------------------------------------
quiet dpkg dpkg -r pgstash
[[ ! -e /usr/bin/pgstash && ! -e $unit ]] || fail "dpkg -r left /usr/bin/pgstash or the unit"
[[ -f /etc/pgstash/pgstash.toml ]] || fail "dpkg -r removed the conffile (only purge may)"
quiet dpkg dpkg -P pgstash
installed=0
[[ ! -e /etc/pgstash && ! -e /var/lib/pgstash ]] || fail "purge left /etc/pgstash or /var/lib/pgstash"
ok "dpkg -r removes the binary and unit, keeps the conffile; dpkg -P removes the rest"
echo "deb_test: all checks passed"
