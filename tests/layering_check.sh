#!/usr/bin/env bash
# Fails if a module includes one above it: wire/, conf/ and cache/ stay free
# of I/O so they can be unit-tested and fuzzed on their own; net/ is the
# transport below pool/ and proxy/ and knows nothing of either.
set -euo pipefail
root=${1:?usage: layering_check.sh SOURCE_DIR}
status=0
check() {
  local dir=$1 forbidden=$2
  [[ -d $root/$dir ]] || return 0
  if grep -rnE "#include[[:space:]]*[<\"]($forbidden)" "$root/$dir"; then
    echo "layering: $dir/ must not include $forbidden" >&2
    status=1
  fi
}
for dir in wire conf cache; do check "$dir" 'boost/asio|net/|pool/|proxy/'; done
check net 'pool/|proxy/'
check pool 'proxy/'
exit $status
