#!/usr/bin/env bash
# Side-by-side signaling benchmark on this machine: natpass's Socket.IO server vs Node's
# socket.io doing the same Zoom-clone relaying (benches/signaling/server.mjs), driven by the same
# generator (benches/signaling/gen.mjs) with the same settings, in one run. Loopback only.
#
#   scripts/bench-signaling.sh                      (defaults: 10,000 clients, about 3 minutes)
#   SIO_CLIENTS=2000 SIO_WINDOW=5 scripts/bench-signaling.sh      (smaller / bigger runs)
#   SIO_CLIENT=raw scripts/bench-signaling.sh       (bare-websocket clients: half the generator CPU)
#   SERVERS=node scripts/bench-signaling.sh         (one server only: natpass, sio-bare, node)
#   SERVERS='natpass sio-bare node' scripts/bench-signaling.sh
#                                                   (with socketioxide alone: the library's floor)
#   NATPASS_BIN=/path/to/natpass NATPASS_ARGS="…" scripts/bench-signaling.sh
#   NATPASS_BASELINE=/path/to/old/natpass SERVERS='natpass-base natpass node' …   (an A/B)
#
# Figures, per server: (1) server RSS per idle websocket client, SIO_CLIENTS clients joined in
# rooms of 8 with `join_room`; (2) `ice` deliveries per server CPU-second at SIO_RATE emits/s;
# (3) saturation (a bounded ramp) and p50/p99 delivery latency at half of it. See gen.mjs for
# every knob. Each server is pinned to core SERVER_CORE (default 0), the generator to GEN_CORE
# (default 1): on a 2-core machine the generator has one core, and it reports its own CPU so a
# generator-bound figure says so. Every process started here is killed by PID on exit; each
# generator run is bounded by SIO_MAX_SECS.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVERS=${SERVERS:-natpass node}
SERVER_CORE=${SERVER_CORE:-0}
GEN_CORE=${GEN_CORE:-1}
command -v node >/dev/null || { echo "needs node (20+)" >&2; exit 1; }
# 10,000 sockets on each side, plus the server's own descriptors.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $(( ${SIO_CLIENTS:-10000} + 1000 )) ]; then
  echo "warning: ulimit -n is $(ulimit -n), below SIO_CLIENTS + 1000" >&2
fi
# natpass keeps three quarters of its descriptors for relaying: HTTP gets a quarter.
if [[ " $SERVERS " == *" natpass "* ]] && [ "$(ulimit -n)" != unlimited ] &&
  [ $(( $(ulimit -n) / 4 )) -lt "${SIO_CLIENTS:-10000}" ]; then
  echo "note: natpass will hold at most $(( $(ulimit -n) / 4 )) signaling connections (a quarter of ulimit -n $(ulimit -n))" >&2
fi
if [ ! -d benches/signaling/node_modules ]; then
  (cd benches/signaling && npm ci --no-audit --no-fund >/dev/null)
fi
NP=${NATPASS_BIN:-target/release/natpass}
if [[ " $SERVERS " == *" natpass "* ]] && [ -z "${NATPASS_BIN:-}" ]; then
  cargo build --release --locked --bin natpass >/dev/null 2>&1
fi
BARE=target/release/examples/sio-bare
if [[ " $SERVERS " == *" sio-bare "* ]]; then
  cargo build --release --locked --example sio-bare >/dev/null 2>&1
fi

source scripts/bench-lib.sh

wait_tcp() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on 127.0.0.1:$1 after 10 s" >&2
  return 1
}

run_one() { # NAME
  local name=$1 http pid
  http=$(port tcp)
  case $name in
    natpass)
      # shellcheck disable=SC2086
      taskset -c "$SERVER_CORE" "$NP" serve --http "127.0.0.1:$http" --listen "127.0.0.1:$(port tcp)" \
        --room-size 8 --log warn ${NATPASS_ARGS:-} >"$TMP/natpass.log" 2>&1 &
      ;;
    natpass-base)
      # shellcheck disable=SC2086
      taskset -c "$SERVER_CORE" "${NATPASS_BASELINE:?set NATPASS_BASELINE}" serve --http "127.0.0.1:$http" \
        --listen "127.0.0.1:$(port tcp)" --room-size 8 --log warn ${NATPASS_ARGS:-} >"$TMP/natpass-base.log" 2>&1 &
      ;;
    sio-bare)
      taskset -c "$SERVER_CORE" "$BARE" "$http" 8 >"$TMP/sio-bare.log" 2>&1 &
      ;;
    node)
      taskset -c "$SERVER_CORE" node benches/signaling/server.mjs "$http" 8 >"$TMP/node.log" 2>&1 &
      ;;
    *) echo "unknown server $name" >&2; return 1 ;;
  esac
  pid=$!
  PIDS+=("$pid")
  wait_tcp "$http"
  if ! taskset -c "$GEN_CORE" node benches/signaling/gen.mjs run --url "http://127.0.0.1:$http" \
      --pid "$pid" --name "$name" --out "$TMP/$name.json"; then
    echo "$name: the generator failed; server log:" >&2
    tail -n 20 "$TMP/$name.log" >&2 || true
  fi
  kill -KILL "$pid" 2>/dev/null || true
  { wait "$pid"; } 2>/dev/null || true
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?'): SERVERS='$SERVERS'" \
  "SIO_CLIENT=${SIO_CLIENT:-sio} SIO_CLIENTS=${SIO_CLIENTS:-10000} SIO_RATE=${SIO_RATE:-5000}" \
  "SIO_WORKERS=${SIO_WORKERS:-4} server core $SERVER_CORE, generator core $GEN_CORE" >&2
for s in $SERVERS; do run_one "$s"; done
# Each server against the last one named (node by default).
set -- $SERVERS
last=${!#}
if [ $# -ge 2 ] && [ -f "$TMP/$last.json" ]; then
  for s in "${@:1:$#-1}"; do
    [ -f "$TMP/$s.json" ] && node benches/signaling/gen.mjs table "$TMP/$s.json" "$TMP/$last.json"
  done
else
  for s in $SERVERS; do [ -f "$TMP/$s.json" ] && cat "$TMP/$s.json"; done
fi
if [ -n "${SIO_KEEP:-}" ]; then
  mkdir -p "$SIO_KEEP" && cp "$TMP"/*.json "$SIO_KEEP"/ 2>/dev/null || true
fi
