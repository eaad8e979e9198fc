#!/usr/bin/env bash
# The SFU's forwarding cost beside the floor, in one run: `natpass probe sfu` (str0m publishers
# and subscribers over loopback against natpass's own SFU thread, see src/probe/sfu.rs) for
# 1 publisher x N subscribers and N x N rooms, and the floor (benches/floor/echo.c: a minimal
# recvmmsg/sendmmsg UDP echo) driven by `natpass probe load --raw` at the same datagram rate
# and size. Prints a markdown table.
#
#   scripts/bench-sfu.sh [SECONDS_PER_ROW] [FRAMES_PER_S] [BYTES]   (defaults: 5 s, 150, 1000)
#
# Method: the SFU's thread runs on core 0 and the clients on core 1 (`--cores 0,1`); the echo
# on core 0 and its generator on core 1. SFU CPU is its thread's utime+stime around the
# measured window, per packet it forwarded (one datagram out, 1/N of one in, plus SRTP and
# RTCP); floor CPU is the echo's per datagram echoed (one in, one out). 150 frames/s of
# 1,000 B is a 1.2 Mbit/s video stream. Every row is bounded by its duration.
#
# Janus (Debian's `janus`, VideoRoom plugin) on the same load, when it is installed and this
# runs as root (JANUS=0 skips it): the same probe with `--janus` drives it through its HTTP API.
# Janus gathers no loopback candidates: scripts/janus-lab.sh runs it in a network namespace of
# its own (removed on exit), pinned to core 0; natpass's rows run in the same namespace on its
# loopback, so both take the same local path through the kernel. Janus's figure is its whole
# process's CPU per packet its subscribers received.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
FPS=${2:-150}
SIZE=${3:-1000}
cargo build --release --locked --bin natpass >/dev/null 2>&1
NP=target/release/natpass
source scripts/bench-lib.sh
cc -O2 -o "$TMP/echo" benches/floor/echo.c
FPORT=$(port)
taskset -c 0 "$TMP/echo" 127.0.0.1 "$FPORT" & PIDS+=($!); FPID=$!
NS=() JURL=
if [ "${JANUS:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v janus >/dev/null; then
  NSNAME=natpass-sfu-bench-$$
  trap 'scripts/janus-lab.sh down "$NSNAME" "$TMP/janus"; cleanup' EXIT
  JPID=$(scripts/janus-lab.sh up "$NSNAME" "$TMP/janus" 0)
  NS=(ip netns exec "$NSNAME")
  JURL=http://10.77.0.1:8088/janus
fi
sleep 0.5

echo "| room | forwarded packets/s | loss | SFU CPU µs/packet | floor: echoed datagrams/s | floor CPU µs/datagram | SFU ÷ floor | Janus: loss | Janus CPU µs/packet | natpass ÷ Janus |"
echo "|---|---|---|---|---|---|---|---|---|---|"
row() {
  local label=$1 pubs=$2 subs=$3 fps=${4:-$FPS} j rate c0 c1 f jj='{}'
  j=$("${NS[@]}" "$NP" probe sfu --publishers "$pubs" --subscribers "$subs" --rate "$fps" \
      --size "$SIZE" --duration "$SECS" --cores 0,1 --json)
  if [ -n "$JURL" ]; then
    jj=$("${NS[@]}" "$NP" probe sfu --publishers "$pubs" --subscribers "$subs" --rate "$fps" \
        --size "$SIZE" --duration "$SECS" --cores 0,1 --json --janus "$JURL" --janus-pid "$JPID" \
        --bind 10.77.0.1)
  fi
  rate=$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1])["forwarded_per_second"]))' "$j")
  c0=$(cpu "$FPID")
  f=$(taskset -c 1 "$NP" probe load "127.0.0.1:$FPORT" --raw --allocations 20 --size "$SIZE" \
      --rate "$rate" --duration "$SECS" --threads 1 --json)
  c1=$(cpu "$FPID")
  python3 - "$label" "$j" "$f" "$c0" "$c1" "$hz" "$jj" <<'PY'
import json, sys
label, j, f, c0, c1, hz = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
jj = json.loads(sys.argv[7])
floor_dgrams = max(f["received"], 1)
floor_us = (c1 - c0) / hz * 1e6 / floor_dgrams
sfu_us = j["cpu_us_per_forwarded"]
janus = "— | — | —"
if jj:
    janus = f"{jj['loss_percent']:.3f}% | {jj['cpu_us_per_forwarded']:.1f} | {sfu_us / max(jj['cpu_us_per_forwarded'], 1e-9):.2f}×"
print(f"| {label} | {j['forwarded_per_second']:,.0f} | {j['loss_percent']:.3f}% | {sfu_us:.1f} | "
      f"{floor_dgrams / max(f['duration_seconds'], 1e-9):,.0f} | {floor_us:.1f} | {sfu_us / floor_us:.2f}× | {janus} |")
PY
}
for n in 5 10 20 40; do row "1 × $n" 1 "$n"; done
for n in 3 5 8 12; do row "$n × $n" "$n" 0; done
# Per-packet cost rather than per-wake-up cost: the same rooms at higher frame rates.
row "1 × 20, 2,000 frames/s" 1 20 2000
row "10 × 10, 400 frames/s" 10 0 400
# The floor at its best: unpaced (as many datagrams per wake-up as the generator keeps in
# flight), the kernel's own per-datagram cost with no protocol work at all.
c0=$(cpu "$FPID")
f=$(taskset -c 1 "$NP" probe load "127.0.0.1:$FPORT" --raw --allocations 20 --size "$SIZE" \
    --rate 0 --duration "$SECS" --threads 1 --json)
c1=$(cpu "$FPID")
python3 - "$f" "$c0" "$c1" "$hz" <<'PY'
import json, sys
f, c0, c1, hz = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n = max(f["received"], 1)
print(f"| floor alone, unpaced | — | {f['loss_percent']:.3f}% | — | {n / max(f['duration_seconds'], 1e-9):,.0f} | {(c1 - c0) / hz * 1e6 / n:.1f} | — | — | — | — |")
PY
