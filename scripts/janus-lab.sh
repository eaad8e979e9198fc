#!/usr/bin/env bash
# Janus (Debian's `janus`, VideoRoom plugin) in a network namespace of its own, for
# `natpass probe sfu --janus` (scripts/bench-sfu.sh, tests/natlab.rs). Janus gathers no loopback
# candidates, so the namespace has one veth (both ends inside it) with 10.77.0.1/24; Janus's
# HTTP API is on http://10.77.0.1:8088/janus and the probe's clients bind 10.77.0.1, so every
# packet stays in the namespace. Needs root.
#
#   scripts/janus-lab.sh up NAME DIR [CORE]   start it (config and log in DIR; pinned to CORE);
#                                             prints Janus's PID when its API answers
#   scripts/janus-lab.sh down NAME DIR        stop it and remove the namespace
#
# `event_loops = 1`: one thread for every peer connection; on one core Janus's cheapest (its
# default, a thread per handle, cost 25-60 % more CPU per packet in our tries).
set -euo pipefail
cmd=${1:?up|down} name=${2:?namespace name} dir=${3:?directory}
case $cmd in
up)
  ip netns add "$name"
  ip -n "$name" link set lo up
  ip -n "$name" link add jv0 type veth peer name jv1
  ip -n "$name" addr add 10.77.0.1/24 dev jv0
  ip -n "$name" link set jv0 up
  ip -n "$name" link set jv1 up
  mkdir -p "$dir/conf" "$dir/plugins" "$dir/transports"
  lib=$(dirname "$(dpkg -L janus | grep -m1 '/plugins/libjanus_videoroom.so$')")/..
  ln -sf "$lib/plugins/libjanus_videoroom.so" "$dir/plugins/"
  ln -sf "$lib/transports/libjanus_http.so" "$dir/transports/"
  cat > "$dir/conf/janus.jcfg" <<EOF
general: { configs_folder = "$dir/conf", plugins_folder = "$dir/plugins",
  transports_folder = "$dir/transports", events_folder = "$dir/none", loggers_folder = "$dir/none",
  debug_level = 3, event_loops = 1, session_timeout = 0 }
media: { rtp_port_range = "20000-40000" }
nat: { ice_enforce_list = "jv0" }
EOF
  echo 'general: { json = "compact", base_path = "/janus", http = true, port = 8088, ip = "10.77.0.1" }' \
    > "$dir/conf/janus.transport.http.jcfg"
  echo 'general: { }' > "$dir/conf/janus.plugin.videoroom.jcfg"
  pin=()
  [ -n "${4:-}" ] && pin=(taskset -c "$4")
  # ip netns exec and taskset exec Janus: $! is Janus's PID.
  "${pin[@]}" ip netns exec "$name" janus -F "$dir/conf" -C "$dir/conf/janus.jcfg" -o \
    > "$dir/log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 100); do
    if ip netns exec "$name" bash -c 'exec 3<>/dev/tcp/10.77.0.1/8088' 2>/dev/null; then
      cat "$dir/pid"
      exit 0
    fi
    sleep 0.1
  done
  echo "janus did not start; its log:" >&2
  cat "$dir/log" >&2
  exit 1
  ;;
down)
  if [ -f "$dir/pid" ]; then
    kill -KILL "$(cat "$dir/pid")" 2>/dev/null || true
  fi
  ip netns del "$name" 2>/dev/null || true
  ;;
*) echo "usage: $0 up|down NAME DIR [CORE]" >&2; exit 2 ;;
esac
