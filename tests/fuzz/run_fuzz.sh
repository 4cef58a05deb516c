#!/usr/bin/env bash
# Builds one libFuzzer target with clang and runs it for a fixed budget on a
# scratch copy of its seed corpus. Fails on any crash, leak, timeout or
# sanitizer report.
#
# usage: run_fuzz.sh CLANGXX SOURCE_ROOT BUILD_DIR TARGET [SECONDS]
#   TARGET: decoder (wire/) or relay (proxy/relay with its queue and
#   statement map, over wire/, pool/server_state and invalidation/).
set -euo pipefail
clangxx=$1 src=$2 out=$3 target=$4 seconds=${5:-20}
here=$src/tests/fuzz
bin=$out/${target}_fuzz
sources=("$here/${target}_fuzz.cpp")
headers=("$src"/wire/*.hpp)
libs=(-lcrypto)
for f in errc framing frontend backend message_writer auth random; do sources+=("$src/wire/$f.cpp"); done
case $target in
  decoder) ;;
  relay)
    # Every file of the relay (relay*.cpp), and the parts it is made of.
    sources+=("$src"/proxy/relay*.cpp)
    for f in response_queue statement_map session_state cache_client point_key entry_label result_cache in_flight \
      cache_rules like_pattern; do
      sources+=("$src/proxy/$f.cpp")
    done
    # The relay's cache side links the cache and its analysis, though the fuzzer runs it without.
    sources+=("$src"/invalidation/*.cpp "$src"/cache/*.cpp "$src/pool/server_state.cpp")
    headers+=("$src"/proxy/*.hpp "$src"/invalidation/*.hpp "$src"/cache/*.hpp "$src"/pool/server_state.hpp)
    libs+=(-lpg_query -lxxhash -lpq -llmdb -lzstd -lspdlog -lfmt -lpthread)
    ;;
  *)
    echo "run_fuzz.sh: unknown target $target" >&2
    exit 2
    ;;
esac

# Rebuild only when a source or header is newer than the binary.
mkdir -p "$out"
stale=no
[[ -x $bin ]] || stale=yes
for f in "${sources[@]}" "${headers[@]}"; do
  if [[ $f -nt $bin ]]; then stale=yes; fi
done
if [[ $stale == yes ]]; then
  "$clangxx" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -DSPDLOG_COMPILED_LIB -DSPDLOG_FMT_EXTERNAL -I"$src" \
    -I/usr/include/postgresql "${sources[@]}" "${libs[@]}" -o "$bin"
fi

# Run on a copy so the seeds in the source tree stay a small, reviewed set.
corpus=$out/${target}_corpus
artifacts=$out/${target}_artifacts
rm -rf "$corpus" "$artifacts"
mkdir -p "$corpus" "$artifacts"
cp "$here/corpus/$target"/* "$corpus"/
"$bin" -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$corpus"
