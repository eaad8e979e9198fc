#!/usr/bin/env bash
# The XDP fast path against userspace relays, in the namespace lab of scripts/xdp-lab.sh, in
# one run: natpass in userspace, natpass with XDP, coturn, and the floor (benches/floor/echo.c,
# a minimal recvmmsg/sendmmsg UDP echo), 100 B and 1,000 B ChannelData. Prints a markdown
# table. Needs root, coturn, clang, ethtool.
#
#   scripts/bench-xdp.sh [SECONDS_PER_RUN] [RATE]      (defaults: 5 s, 20000 msg/s)
#   SIZES="100" ONLY="unpaced" scripts/bench-xdp.sh    (a subset: payload sizes, rows whose
#                                                       name matches the bash regex ONLY —
#                                                       escape + ( ): ONLY='natpass \+ XDP')
#   MODE=media [MEDIA_N="100 200 400"] scripts/bench-xdp.sh [SECONDS]   (calls: see media_row)
#
# Method. The server side (natpass / coturn / the echo, one worker each) is pinned to core 0;
# the generator (`natpass probe load` in the client namespace) and the echo peer (`natpass
# peer` in the peer namespace) to core 1. A relayed message is client→server→peer→server→
# client: two datagrams through the server each way.
#   - NAPI runs threaded on every veth end (/sys/class/net/*/threaded): natpass's two ends'
#     poll threads (where the XDP program runs, and the redirect's transmit) are pinned to
#     core 0 with the server, the far ends' (the client's and the peer's receive) to core 1.
#   - "server CPU" is the server process's utime+stime (/proc/PID/stat) plus the CPU time of
#     the NAPI threads of natpass's side of the veths: the receive path up to the socket for the
#     userspace servers (an XDP pass program on those ends gives them NAPI threads too), the
#     XDP program and its transmit for the fast path. The per-packet wake-ups of threaded NAPI
#     are in every row alike; scripts/bench-vs-coturn.sh leaves the kernel's receive path out,
#     so its figures are lower.
#   - The XDP program's own run time per packet comes from the kernel's BPF statistics
#     (kernel.bpf_stats_enabled, bpftool prog show), printed under the table.
#   - "machine CPU" is all cores' busy time (/proc/stat) per message: server, generator, echo
#     peer and every kernel path, for the whole-system view.
#   - XDPLAB_NIC=1 runs the same rows with an XDP wire in both links (scripts/xdp-lab.sh):
#     datagrams reach natpass's side as XDP frames in pages, as a NIC's driver hands them up,
#     instead of as the sender's skbs that veth copies on the server's core. The wire's NAPI
#     threads (where that copy now happens) run on core 1.
#   - The floor runs at twice the message rate in plain datagrams (one echo per datagram
#     pair), so its CPU per message compares like for like.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
RATE=${2:-20000}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, XDP)" >&2; exit 1; }
command -v turnserver >/dev/null || { echo "needs coturn (apt-get install coturn)" >&2; exit 1; }
cargo build --release --locked --bin natpass >/dev/null 2>&1
NP=$PWD/target/release/natpass
source scripts/bench-lib.sh
export XDPLAB_PREFIX=npb
P=$XDPLAB_PREFIX
labdown() { cleanup; scripts/xdp-lab.sh down; sysctl -qw kernel.bpf_stats_enabled=0; }
trap labdown EXIT
scripts/xdp-lab.sh up
cc -O2 -o "$TMP/echo" benches/floor/echo.c
clang -O2 -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c tests/xdp/pass.bpf.c -o "$TMP/pass.o"
# The userspace servers' rows run with an XDP pass program on natpass's side of both veths, so
# that their receive path (NAPI, IP, UDP up to the socket) runs in the same pinned NAPI threads
# as the fast path's: every row's "server CPU" is the whole server core's work.
pass_on() { for d in xc xp; do ip -n "$P-srv" link set dev "$d" xdpdrv obj "$TMP/pass.o" sec xdp; done; }
pass_off() { for d in xc xp; do ip -n "$P-srv" link set dev "$d" xdpdrv off; done; }
srv() { ip netns exec "$P-srv" "$@"; }

# Threaded NAPI where it exists (veth ends with an XDP program), pinned: natpass's ends to
# core 0, the far ends to core 1.
napi() {
  srv sh -c 'for d in xc xp; do echo 1 > /sys/class/net/$d/threaded 2>/dev/null || true; done'
  for ns in cli peer; do
    ip netns exec "$P-$ns" sh -c 'echo 1 > /sys/class/net/eth0/threaded' 2>/dev/null || true
  done
  ip netns exec "$P-mid" sh -c 'for d in ca cb pa pb; do echo 1 > /sys/class/net/$d/threaded; done' 2>/dev/null || true
  sleep 0.2
  for pid in $(pgrep '^napi/'); do
    case "$(cat /proc/$pid/comm)" in
      napi/xc-*|napi/xp-*) taskset -p -c 0 "$pid" >/dev/null ;;
      *) taskset -p -c 1 "$pid" >/dev/null ;;
    esac
  done
}
# CPU ticks of natpass's NAPI threads (0 when there are none).
napi_cpu() {
  local t=0 pid
  for pid in $(pgrep '^napi/x[cp]-' || true); do t=$((t + $(cpu "$pid"))); done
  echo "$t"
}
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }

ip netns exec "$P-peer" taskset -c 1 "$NP" peer --listen 10.81.2.2:9 >/dev/null 2>&1 & PIDS+=($!)
cat > "$TMP/natpass.toml" <<EOF
listen = ["10.81.1.1:3478"]
relay-ips = ["10.81.2.1"]
allow-peers = ["10.81.2.0/24"]
users = ["alice:secret"]
log = "warn"
[quota]
allocations-per-user = 100000
allocations-per-ip = 100000
challenges-per-second = 100000
EOF
cat > "$TMP/turnserver.conf" <<EOF
listening-ip=10.81.1.1
listening-port=3479
relay-ip=10.81.2.1
relay-threads=1
min-port=40000
max-port=45000
lt-cred-mech
user=alice:secret
realm=natpass
no-tls
no-dtls
no-cli
no-software-attribute
userdb=$TMP/turndb
log-file=/dev/null
pidfile=$TMP/turn.pid
EOF

# Background servers are started with `ip netns exec … &` directly (never through a shell
# function) so that $! is the server itself: its CPU is read and it is killed by that PID.
# row NAME PID TARGET RATE SIZE [probe args...]
row() {
  local name=$1 pid=$2 target=$3 rate=$4 size=$5; shift 5
  local c0 c1 n0 n1 b0 b1 j
  [[ "$name" =~ ${ONLY:-.} ]] || return 0
  c0=$(cpu "$pid"); n0=$(napi_cpu); b0=$(busy)
  j=$(ip netns exec "$P-cli" taskset -c 1 "$NP" probe load "$target" --user alice --password secret \
      --peer 10.81.2.2:9 --allocations 20 --size "$size" --rate "$rate" --duration "$SECS" --threads 1 --json "$@")
  c1=$(cpu "$pid"); n1=$(napi_cpu); b1=$(busy)
  python3 - "$name" "$((c1 - c0))" "$((n1 - n0))" "$((b1 - b0))" "$hz" "$j" "${PER:-1}" <<'PY'
import json, sys
name, proc, napi, busy, hz, j, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6]), int(sys.argv[7])
if "error" in j:
    print(f"| {name} | error: {j['error']} |"); sys.exit()
msgs = max(j["received"], 1) / per
secs = max(j["duration_seconds"], 1e-9)
server = (proc + napi) / hz
cpu_msg = server * 1e6 / msgs
per_cpu_s = msgs * 2 / server if server > 0 else float("inf")
print(f"| {name} | {j['size']} | {j['offered_rate'] or 'max':>6} | {msgs / secs:,.0f} | {j['loss_percent']:.3f}% | "
      f"{j['latency_us']['p50']} / {j['latency_us']['p99']} | {cpu_msg:.2f} | {per_cpu_s:,.0f} | {busy / hz * 1e6 / msgs:.2f} |")
PY
}

# media_row NAME PID N → one row of N allocations paced like calls (`probe load --media`), the
# server's CPU including its NAPI threads, as in `row`.
media_row() {
  local name=$1 pid=$2 n=$3 c0 c1 n0 n1 b0 b1 j
  c0=$(cpu "$pid"); n0=$(napi_cpu); b0=$(busy)
  j=$(ip netns exec "$P-cli" taskset -c 1 "$NP" probe load 10.81.1.1:"$4" --user alice --password secret \
      --peer 10.81.2.2:9 --allocations "$n" --media 1.5 --size 1100 --duration "$SECS" --threads 1 --json)
  c1=$(cpu "$pid"); n1=$(napi_cpu); b1=$(busy)
  python3 - "$name" "$n" "$((c1 - c0))" "$((n1 - n0))" "$((b1 - b0))" "$hz" "$j" <<'PY'
import json, sys
name, n, proc, napi, busy, hz, j = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), json.loads(sys.argv[7])
if "error" in j:
    print(f"| {name} | {n} | error: {j['error']} |"); sys.exit()
msgs = max(j["received"], 1)
secs = max(j["duration_seconds"], 1e-9)
server = (proc + napi) / hz
print(f"| {name} | {n} | {j['offered_rate']:,.0f} | {j['achieved_rate']:,.0f} | {2 * j['achieved_mbit'] / 1000:.3f} | "
      f"{j['loss_percent']:.3f}% | {j['latency_us']['p50']} / {j['latency_us']['p99']} | {proc / hz * 1e6 / msgs:.2f} | "
      f"{server * 1e6 / msgs:.2f} | {100 * server / secs:.0f}% | {busy / hz * 1e6 / msgs:.2f} |")
PY
}

if [ "${MODE:-table}" = media ]; then
  # Calls through the lab: here the kernel's receive path and the wake-up of the receiving
  # process run in the receiving side's NAPI threads (as a NIC's softirq does on a real
  # server), not in the sender's system call as on loopback.
  echo "| server | allocations × 1.5 Mbit/s | offered msg/s | achieved msg/s | relayed payload Gbit/s (both ways) | loss | latency p50 / p99 µs | server process CPU µs/msg | server CPU incl. NAPI µs/msg | server core busy | machine CPU µs/msg |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for n in ${MEDIA_N-100 200 400}; do
    pass_on
    ip netns exec "$P-srv" taskset -c 0 "$NP" serve --config "$TMP/natpass.toml" --threads 1 >/dev/null 2>&1 & PIDS+=($!); NPID=$!
    sleep 1; napi
    media_row "natpass, userspace" "$NPID" "$n" 3478
    kill -KILL "$NPID"; wait "$NPID" 2>/dev/null || true
    ip netns exec "$P-srv" taskset -c 0 turnserver -c "$TMP/turnserver.conf" >/dev/null 2>&1 & PIDS+=($!); CPID=$!
    sleep 1; napi
    media_row coturn "$CPID" "$n" 3479
    kill -KILL "$CPID"; wait "$CPID" 2>/dev/null || true
    pass_off
    ip netns exec "$P-srv" taskset -c 0 "$NP" serve --config "$TMP/natpass.toml" --threads 1 --xdp xc --xdp xp >/dev/null 2>&1 & PIDS+=($!); XPID=$!
    sleep 1; napi
    media_row "natpass + XDP" "$XPID" "$n" 3478
    kill -KILL "$XPID"; wait "$XPID" 2>/dev/null || true
    sleep 0.5
  done
  exit 0
fi

echo "| server | payload B | offered msg/s | achieved msg/s | loss | latency p50 / p99 µs | server CPU µs/msg | relayed packets per server CPU-second | machine CPU µs/msg |"
echo "|---|---|---|---|---|---|---|---|---|"
sysctl -qw kernel.bpf_stats_enabled=1
for size in ${SIZES-100 1000}; do
  pass_on
  # natpass in userspace.
  ip netns exec "$P-srv" taskset -c 0 "$NP" serve --config "$TMP/natpass.toml" --threads 1 >/dev/null 2>&1 & PIDS+=($!); NPID=$!
  sleep 1; napi
  row "natpass, userspace" "$NPID" 10.81.1.1:3478 "$RATE" "$size"
  row "natpass, userspace, unpaced" "$NPID" 10.81.1.1:3478 0 "$size"
  kill -KILL "$NPID"; wait "$NPID" 2>/dev/null || true
  # coturn, the same way.
  ip netns exec "$P-srv" taskset -c 0 turnserver -c "$TMP/turnserver.conf" >/dev/null 2>&1 & PIDS+=($!); CPID=$!
  sleep 1; napi
  row "coturn" "$CPID" 10.81.1.1:3479 "$RATE" "$size"
  row "coturn, unpaced" "$CPID" 10.81.1.1:3479 0 "$size"
  kill -KILL "$CPID"; wait "$CPID" 2>/dev/null || true
  # The floor: one echo per datagram pair, at twice the message rate.
  ip netns exec "$P-srv" taskset -c 0 "$TMP/echo" 10.81.1.1 7000 & PIDS+=($!); FPID=$!
  sleep 0.5; napi
  PER=2 row "floor (C echo, ×2 datagrams)" "$FPID" 10.81.1.1:7000 $((RATE * 2)) "$size" --raw
  PER=2 row "floor, unpaced" "$FPID" 10.81.1.1:7000 0 "$size" --raw
  kill -KILL "$FPID"; wait "$FPID" 2>/dev/null || true
  pass_off
  # natpass with the XDP fast path on both of its interfaces.
  ip netns exec "$P-srv" taskset -c 0 "$NP" serve --config "$TMP/natpass.toml" --threads 1 --xdp xc --xdp xp >/dev/null 2>&1 & PIDS+=($!); XPID=$!
  sleep 1; napi
  row "natpass + XDP" "$XPID" 10.81.1.1:3478 "$RATE" "$size"
  row "natpass + XDP, unpaced" "$XPID" 10.81.1.1:3478 0 "$size"
  bpftool prog show name natpass_relay | awk -v s="$size" '/run_time_ns/ {for (i=1;i<=NF;i++) {if ($i=="run_time_ns") t=$(i+1); if ($i=="run_cnt") c=$(i+1)}} END {if (c) printf "XDP program (%s B rows): %d runs, %.0f ns per run\n", s, c, t/c > "/dev/stderr"}'
  kill -KILL "$XPID"; wait "$XPID" 2>/dev/null || true
  sleep 0.5
done
