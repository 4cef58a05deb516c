#!/usr/bin/env bash
# Builds the wire decoder fuzz target with clang's libFuzzer and runs it
# for a fixed budget on a scratch copy of the seed corpus. Fails on any
# crash, leak, timeout or sanitizer report.
#
# usage: run_fuzz.sh CLANGXX SOURCE_ROOT BUILD_DIR [SECONDS]
set -euo pipefail
clangxx=$1 src=$2 out=$3 seconds=${4:-20}
here=$src/tests/fuzz
bin=$out/decoder_fuzz
sources=("$here/decoder_fuzz.cpp")
for f in errc framing frontend backend message_writer auth; do sources+=("$src/wire/$f.cpp"); done

# Rebuild only when a source or header is newer than the binary.
mkdir -p "$out"
stale=no
[[ -x $bin ]] || stale=yes
for f in "${sources[@]}" "$src"/wire/*.hpp; do
  if [[ $f -nt $bin ]]; then stale=yes; fi
done
if [[ $stale == yes ]]; then
  "$clangxx" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -I"$src" "${sources[@]}" -lcrypto -o "$bin"
fi

# Run on a copy so the seeds in the source tree stay a small, reviewed set.
corpus=$out/decoder_corpus
rm -rf "$corpus" "$out/artifacts"
mkdir -p "$corpus" "$out/artifacts"
cp "$here"/corpus/decoder/* "$corpus"/
"$bin" -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$out/artifacts/" "$corpus"
