#!/usr/bin/env bash
# Run every cargo-fuzz target for a bounded time and print executions and coverage.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
# cargo-fuzz needs nightly features; with only a stable toolchain, RUSTC_BOOTSTRAP=1 enables
# them (what these machines have). Seeds: fuzz/seeds/<target>/ (RFC 5769 vectors for STUN).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
targets=(stun_decode core_sequence stream_framer rest_username peer_address config_parse signaling_message)
cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  out=$(cargo fuzz run -O "$t" "fuzz/corpus/$t" "${seeds[@]}" -- -max_total_time="$secs" -print_final_stats=1 2>&1 || true)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' <<<"$out" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' <<<"$out" | tail -1 | grep -o '[0-9]*' || echo '?')
  crash=$(grep -c 'SUMMARY: libFuzzer\|panicked' <<<"$out" || true)
  printf '%-18s %6ss  executions %-10s coverage(edges) %-6s crashes %s\n' "$t" "$secs" "$execs" "$cov" "$crash"
done
