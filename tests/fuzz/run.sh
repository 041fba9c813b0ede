#!/usr/bin/env bash
# Runs every libFuzzer target for a while on a scratch copy of its seed corpus
# (`make fuzz`, .ci/run). Usage: tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
# Each target gets SECONDS of fuzzing, one process at a time. The scratch corpus
# (BUILD_DIR/fuzz-corpus/TARGET) keeps what earlier runs found; crash inputs go
# to BUILD_DIR/fuzz-artifacts/. Exits non-zero as soon as a target crashes (the
# seeds, crash-* regression inputs included, run first).
set -euo pipefail
build=${1:?build dir}
seconds=${2:-60}
shift 2 || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(fuzz_request fuzz_response fuzz_config fuzz_chunk fuzz_tls fuzz_proxyproto fuzz_h2)
fi
src=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$build/fuzz-artifacts"
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/$t"
  corpus="$build/fuzz-corpus/$t"
  log="$build/fuzz-artifacts/$t.log"
  mkdir -p "$corpus"
  cp -n "$src/corpus/$t"/* "$corpus/" 2>/dev/null || true
  echo "fuzz: $t for ${seconds}s (log: $log)"
  # -timeout: one input taking 30 s is a hang (the harness gives up after 5 s);
  # every sanitizer report aborts, and libFuzzer exits non-zero on it.
  if ! "$bin" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-artifacts/$t-" "$corpus" >"$log" 2>&1; then
    echo "fuzz: $t FAILED; last lines of $log:" >&2
    tail -n 60 "$log" >&2
    exit 1
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | tr '\n' ' '
  echo
done
echo "fuzz: ${#targets[@]} passed, 0 failed"
