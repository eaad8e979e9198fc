#!/usr/bin/env bash
# Side-by-side relay benchmark on this machine: natpass vs Debian's coturn vs the floor (a
# minimal recvmmsg/sendmmsg UDP echo, benches/floor/echo.c), driven by the same generator
# (`natpass probe load`) with the same settings, in one run. Prints a markdown table.
#
#   scripts/bench-vs-coturn.sh [SECONDS_PER_RUN] [RATE]      (defaults: 5 s, 20000 msg/s)
#   NATPASS_BASELINE=/path/to/older/natpass scripts/bench-vs-coturn.sh   (adds its rows: before/after)
#   MODE=scaling scripts/bench-vs-coturn.sh [SECONDS_PER_RUN]   (throughput vs allocations/threads)
#   MODE=media scripts/bench-vs-coturn.sh [SECONDS_PER_RUN]   (calls' pacing: MEDIA_N allocations
#       of 1.5 Mbit/s video in 1,100-byte packets at 30 frames/s plus 100-byte audio every 20 ms)
#   MODE=streams scripts/bench-vs-coturn.sh [SECONDS_PER_RUN] [RATE]   (TURN over TCP and TLS,
#       and memory per idle TLS connection at IDLE_TLS=10000 connections)
#
# Method: each server gets one core (taskset -c 0, one worker: natpass --threads 1, coturn
# relay-threads=1); the generator and its echo peers run on the other core (taskset -c 1).
# A relayed message is client→server→peer→server→client: two datagram pairs through the
# server. The floor is measured at twice the message rate in plain datagrams, so its CPU per
# message compares like for like. Server CPU comes from /proc/PID/stat (utime+stime) around the
# run; RSS from /proc/PID/status. Every run is bounded by its duration.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
RATE=${2:-20000}
command -v turnserver >/dev/null || { echo "needs coturn (apt-get install coturn)" >&2; exit 1; }
cargo build --release --locked --bin natpass >/dev/null 2>&1
NP=target/release/natpass
source scripts/bench-lib.sh
cc -O2 -o "$TMP/echo" benches/floor/echo.c
NPORT=$(port); CPORT=$(port); FPORT=$(port); NTLS=$(port tcp); CTLS=$(port tcp)
# TURN over TLS on both servers (MODE=streams): one self-signed certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/key.pem" \
  -out "$TMP/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null

# Relay ports apart from coturn's (40000-60000) and from the generator's ephemeral ports
# (32768-60999): one server's leftovers must not take the other's ports.
cat > "$TMP/natpass.toml" <<EOF
users = ["alice:secret"]
relay-ports = "10000-31999"
allow-peers = ["127.0.0.0/8"]
log = "warn"
tls-cert = "$TMP/cert.pem"
tls-key = "$TMP/key.pem"
[quota]
allocations-per-user = 100000
allocations-per-ip = 100000
challenges-per-second = 100000
connections-per-ip = 100000
tls-handshakes = 100000
# The idle-TLS row holds connections that never send a message: keep them past the default 10 s.
first-message-timeout = 300
idle-timeout = 300
EOF
taskset -c 0 "$NP" serve --config "$TMP/natpass.toml" --listen "127.0.0.1:$NPORT" --http 127.0.0.1:0 \
  --tls-listen "127.0.0.1:$NTLS" --threads 1 >/dev/null 2>&1 & PIDS+=($!); NPID=$!
cat > "$TMP/turnserver.conf" <<EOF
listening-ip=127.0.0.1
listening-port=$CPORT
relay-ip=127.0.0.1
relay-threads=1
min-port=40000
max-port=60000
lt-cred-mech
user=alice:secret
realm=natpass
tls-listening-port=$CTLS
cert=$TMP/cert.pem
pkey=$TMP/key.pem
no-dtls
no-cli
allow-loopback-peers
no-software-attribute
userdb=$TMP/turndb
log-file=/dev/null
pidfile=$TMP/turn.pid
EOF
if [ -n "${NATPASS_BASELINE:-}" ]; then
  BPORT=$(port)
  taskset -c 0 "$NATPASS_BASELINE" serve --config "$TMP/natpass.toml" --listen "127.0.0.1:$BPORT" \
    --http 127.0.0.1:0 --threads 1 >/dev/null 2>&1 & PIDS+=($!); BPID=$!
fi
taskset -c 0 turnserver -c "$TMP/turnserver.conf" >/dev/null 2>&1 & PIDS+=($!); CPID=$!
taskset -c 0 "$TMP/echo" 127.0.0.1 "$FPORT" & PIDS+=($!); FPID=$!
sleep 1


# run NAME PID TARGET MSGS_PER_S SIZE EXTRA...  → one table row
run() {
  local name=$1 pid=$2 target=$3 rate=$4 size=$5; shift 5
  local c0 c1 j
  c0=$(cpu "$pid")
  j=$(taskset -c 1 "$NP" probe load "$target" --user alice --password secret --allocations 20 \
      --size "$size" --rate "$rate" --duration "$SECS" --threads 1 --json "$@")
  c1=$(cpu "$pid")
  python3 - "$name" "$c0" "$c1" "$hz" "$(rss "$pid")" "$j" <<'PY'
import json, sys
name, c0, c1, hz, rss, j = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], json.loads(sys.argv[6])
cpu = (c1 - c0) / hz
msgs = max(j["received"], 1)
print(f"| {name} | {j['size']} | {j['offered_rate'] or 'max':>6} | {j['achieved_rate']:,.0f} | {j['loss_percent']:.3f}% | "
      f"{j['latency_us']['p50']} / {j['latency_us']['p99']} | {cpu*1e6/msgs:.1f} | {rss} |")
PY
}

# floor SIZE DATAGRAMS_PER_S PAIRS_PER_MSG MSG_RATE_LABEL  → one table row for the echo floor
floor() {
  local size=$1 rate=$2 per=$3 label=$4 c0 c1 j
  c0=$(cpu "$FPID")
  j=$(taskset -c 1 "$NP" probe load "127.0.0.1:$FPORT" --raw --allocations 20 --size "$size" \
      --rate "$rate" --duration "$SECS" --threads 1 --json)
  c1=$(cpu "$FPID")
  python3 - "$c0" "$c1" "$hz" "$(rss "$FPID")" "$j" "$size" "$label" "$per" <<'PY'
import json, sys
c0, c1, hz, rss, j, size, rate, per = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5]), sys.argv[6], sys.argv[7], int(sys.argv[8])
cpu = (c1 - c0) / hz
msgs = max(j["received"], 1) / per
print(f"| floor (echo ×{per}) | {size} | {rate:>6} | {msgs/ max(j['duration_seconds'],1e-9):,.0f} | {j['loss_percent']:.3f}% | "
      f"{j['latency_us']['p50']} / {j['latency_us']['p99']} | {cpu*1e6/msgs:.1f} | {rss} |")
PY
}

# scaling: unpaced 100-byte ChannelData with N allocations, the load split over generator
# processes of at most 5,000 allocations (each needs two descriptors per allocation and the
# sandbox caps a process at 20,000), all pinned to core 1 and run at once.
scaling_row() {
  local name=$1 pid=$2 target=$3 n=$4 threads=${5:-1} rate=${6:-0} procs per c0 c1 k gp=()
  procs=$(( (n + 4999) / 5000 )); per=$(( n / procs ))
  c0=$(cpu "$pid")
  for k in $(seq "$procs"); do
    taskset -c 1 "$NP" probe load "$target" --user alice --password secret --allocations "$per" \
      --size 100 --rate "$rate" --duration "$SECS" --threads "$threads" --json > "$TMP/s$k.json" & gp+=($!)
  done
  wait "${gp[@]}" || true
  c1=$(cpu "$pid")
  python3 - "$name" "$n" "$c0" "$c1" "$hz" "$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")" "$TMP" "$procs" <<'PY'
import json, sys
name, n, c0, c1, hz, rss, tmp, procs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7], int(sys.argv[8])
js = [json.load(open(f"{tmp}/s{k}.json")) for k in range(1, procs + 1)]
if any("error" in j for j in js):
    print(f"| {name} | {n:,} | error: {[j.get('error') for j in js]} |"); sys.exit()
rate = sum(j["achieved_rate"] for j in js)
sent = sum(j["sent"] for j in js); recv = sum(j["received"] for j in js)
loss = (sent - recv) * 100 / max(sent, 1)
p99 = max(j["latency_us"]["p99"] for j in js)
cpu = (c1 - c0) / hz
setup = sum(j["setup_rate"] for j in js)
print(f"| {name} | {n:,} | {setup:,.0f} | {rate:,.0f} | {loss:.3f}% | {p99} | {cpu*1e6/max(recv,1):.2f} | {rss} |")
PY
}
# idle_tls NAME PID PORT → one row: memory per idle TLS connection (no allocation), N at once.
idle_tls() {
  local name=$1 pid=$2 port=$3 n=${IDLE_TLS:-10000} before after up alive
  before=$(rss "$pid")
  coproc IDLE { taskset -c 1 python3 scripts/idle-tls.py 127.0.0.1 "$port" "$n" 5; }
  read -r _ up <&"${IDLE[0]}"
  sleep 2
  after=$(rss "$pid")
  read -r _ alive <&"${IDLE[0]}" || alive="?"
  wait "$IDLE_PID" 2>/dev/null || true
  python3 -c 'import sys; n,b,a,alive,name=int(sys.argv[1]),int(sys.argv[2]),int(sys.argv[3]),sys.argv[4],sys.argv[5]; print(f"| {name} | {n:,} | {alive} | {b:,} | {a:,} | {(a-b)/max(n,1):.1f} |")' \
    "$up" "$before" "$after" "$alive" "$name"
}
# media_row NAME PID TARGET N → one row of N allocations paced like calls.
media_row() {
  local name=$1 pid=$2 target=$3 n=$4 c0 c1 j
  c0=$(cpu "$pid")
  j=$(timed "$TMP/gen-cpu" taskset -c 1 "$NP" probe load "$target" --user alice --password secret \
      --allocations "$n" --media 1.5 --size 1100 --duration "$SECS" --threads 1 --json)
  c1=$(cpu "$pid")
  python3 - "$name" "$n" "$c0" "$c1" "$hz" "$j" "$(cat "$TMP/gen-cpu")" <<'PY'
import json, sys
name, n, c0, c1, hz, j, gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6]), float(sys.argv[7])
if "error" in j:
    print(f"| {name} | {n} | error: {j['error']} |"); sys.exit()
cpu = (c1 - c0) / hz
secs = j["duration_seconds"]
msgs = max(j["received"], 1)
print(f"| {name} | {n} | {j['offered_rate']:,.0f} | {j['achieved_rate']:,.0f} | {2 * j['achieved_rate']:,.0f} | "
      f"{2 * j['achieved_mbit'] / 1000:.3f} | {j['loss_percent']:.3f}% | {j['latency_us']['p50']} / {j['latency_us']['p99']} | "
      f"{cpu * 1e6 / msgs:.1f} | {100 * cpu / secs:.0f}% | {gen * 1e6 / msgs:.1f} | {(cpu + gen) * 1e6 / msgs:.1f} |")
PY
}
if [ "${MODE:-table}" = media ]; then
  echo "| server | allocations × 1.5 Mbit/s | offered msg/s | achieved msg/s | relayed packets/s | relayed payload Gbit/s (both ways) | loss | latency p50 / p99 µs | server CPU µs/msg | server core busy | generator CPU µs/msg | both µs/msg |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for n in ${MEDIA_N-100 200 300 400}; do
    media_row natpass "$NPID" "127.0.0.1:$NPORT" "$n"
    media_row coturn "$CPID" "127.0.0.1:$CPORT" "$n"
  done
  exit 0
fi
if [ "${MODE:-table}" = streams ]; then
  echo "| server | payload B | offered msg/s | achieved msg/s | loss | latency p50 / p99 µs | server CPU µs/msg | RSS KiB |"
  echo "|---|---|---|---|---|---|---|---|"
  for t in tcp tls; do
    np="127.0.0.1:$NPORT"; cp="127.0.0.1:$CPORT"
    [ "$t" = tls ] && { np="127.0.0.1:$NTLS"; cp="127.0.0.1:$CTLS"; }
    for size in 100 1000; do
      run "natpass $t" "$NPID" "$np" "$RATE" "$size" --transport "$t" --insecure
      run "coturn $t" "$CPID" "$cp" "$RATE" "$size" --transport "$t" --insecure
    done
    run "natpass $t, unpaced" "$NPID" "$np" 0 100 --transport "$t" --insecure
    run "coturn $t, unpaced" "$CPID" "$cp" 0 100 --transport "$t" --insecure
    # The same high load on both (what a closed loop cannot show: the unpaced rate depends
    # on how each server batches, which the generator's core feels too).
    run "natpass $t, ${HIGH:-150000} msg/s" "$NPID" "$np" "${HIGH:-150000}" 100 --transport "$t" --insecure
    run "coturn $t, ${HIGH:-150000} msg/s" "$CPID" "$cp" "${HIGH:-150000}" 100 --transport "$t" --insecure
  done
  echo
  echo "| server | idle TLS connections | still open after 5 s | RSS before KiB | RSS with them KiB | KiB per connection |"
  echo "|---|---|---|---|---|---|"
  idle_tls natpass "$NPID" "$NTLS"
  idle_tls coturn "$CPID" "$CTLS"
  exit 0
fi
if [ "${MODE:-table}" = scaling ]; then
  echo "| server | allocations | setup with auth /s | achieved msg/s | loss | p99 µs | server CPU µs/msg | peak RSS KiB |"
  echo "|---|---|---|---|---|---|---|---|"
  for n in ${SCALING_N-1 100 1000 10000}; do
    scaling_row "natpass, 1 thread" "$NPID" "127.0.0.1:$NPORT" "$n"
    scaling_row "coturn, 1 relay thread" "$CPID" "127.0.0.1:$CPORT" "$n"
  done
  # Setup rate with more clients at once (8 per generator process, 16 in all), light load.
  scaling_row "natpass, 16 clients setting up" "$NPID" "127.0.0.1:$NPORT" 10000 8 2000
  scaling_row "coturn, 16 clients setting up" "$CPID" "127.0.0.1:$CPORT" 10000 8 2000
  exit 0
fi

echo "| server | payload B | offered msg/s | achieved msg/s | loss | latency p50 / p99 µs | server CPU µs/msg | RSS KiB |"
echo "|---|---|---|---|---|---|---|---|"
for size in 100 1000; do
  run "natpass channel" "$NPID" "127.0.0.1:$NPORT" "$RATE" "$size"
  [ -n "${BPID:-}" ] && run "natpass (baseline) channel" "$BPID" "127.0.0.1:$BPORT" "$RATE" "$size"
  run "coturn channel" "$CPID" "127.0.0.1:$CPORT" "$RATE" "$size"
  run "natpass Send/Data" "$NPID" "127.0.0.1:$NPORT" "$RATE" "$size" --no-channel
  [ -n "${BPID:-}" ] && run "natpass (baseline) Send/Data" "$BPID" "127.0.0.1:$BPORT" "$RATE" "$size" --no-channel
  run "coturn Send/Data" "$CPID" "127.0.0.1:$CPORT" "$RATE" "$size" --no-channel
  floor "$size" $((RATE * 2)) 2 "$RATE"
done
# STUN Binding: one request in, one answer out per message; the floor at the same datagram rate.
run "natpass Binding" "$NPID" "127.0.0.1:$NPORT" "$RATE" 20 --binding
[ -n "${BPID:-}" ] && run "natpass (baseline) Binding" "$BPID" "127.0.0.1:$BPORT" "$RATE" 20 --binding
run "coturn Binding" "$CPID" "127.0.0.1:$CPORT" "$RATE" 20 --binding
floor 20 "$RATE" 1 "$RATE"
# Highest throughput, unpaced with a bounded window per allocation.
UNPACED=$(run "natpass channel, unpaced" "$NPID" "127.0.0.1:$NPORT" 0 100); echo "$UNPACED"
[ -n "${BPID:-}" ] && run "natpass (baseline) channel, unpaced" "$BPID" "127.0.0.1:$BPORT" 0 100
run "coturn channel, unpaced" "$CPID" "127.0.0.1:$CPORT" 0 100
run "natpass Binding, unpaced" "$NPID" "127.0.0.1:$NPORT" 0 20 --binding
run "coturn Binding, unpaced" "$CPID" "127.0.0.1:$CPORT" 0 20 --binding
# Latency at half of natpass's unpaced capacity.
CAP=$(echo "$UNPACED" | awk -F'|' '{gsub(/[ ,]/, "", $5); print int($5)}')
HALF=$((CAP / 2))
run "natpass channel, 50% of capacity" "$NPID" "127.0.0.1:$NPORT" "$HALF" 100
run "coturn channel, same load" "$CPID" "127.0.0.1:$CPORT" "$HALF" 100
# The generator's and the kernel's own share of that latency: the floor at the same datagrams.
floor 100 $((HALF * 2)) 2 "$HALF"
