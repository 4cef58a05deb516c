#!/usr/bin/env bash
# Fails if a pure module includes Boost.Asio: wire/ and conf/ must stay free
# of I/O so they can be unit-tested and fuzzed on their own.
set -euo pipefail
root=${1:?usage: layering_check.sh SOURCE_DIR}
status=0
for dir in wire conf cache; do
  [[ -d $root/$dir ]] || continue
  if grep -rnE '#include[[:space:]]*[<"](boost/asio|pool/|proxy/)' "$root/$dir"; then
    echo "layering: $dir/ must not include Asio, pool/ or proxy/" >&2
    status=1
  fi
done
exit $status
