#!/usr/bin/env bash
# natlab: a NAT lab in network namespaces, to see NAT traversal happen on one machine.
#
#   scripts/natlab.sh up [symmetric|cone] [udp-blocked]   build it (needs root)
#   scripts/natlab.sh down                                remove every namespace
#   scripts/natlab.sh exec HOST CMD...                    run CMD in pub, nat1, nat2, h1 or h2
#   scripts/natlab.sh status                              show addresses and NAT rules
#
# Topology (all addresses exist only inside the lab; documentation ranges the default natpass
# policy denies, so natpass runs there with --allow-peer for them):
#
#   h1 10.0.1.2 ── 10.0.1.1 nat1 203.0.113.11 ──┐
#                                               pub 203.0.113.1 + 198.51.100.1 (natpass)
#   h2 10.0.2.2 ── 10.0.2.1 nat2 198.51.100.12 ─┘
#
# nat1/nat2 masquerade their LAN behind their WAN address with stateful filtering (only replies
# come back in). "symmetric" (default) uses `masquerade fully-random`: address-and-port-dependent
# mapping, so hole punching fails and only TURN connects the hosts. "cone" keeps source ports
# (endpoint-independent mapping): the control case where hole punching works. "udp-blocked" also
# drops all UDP from the LAN to the internet, so only TURN over TCP gets through.
# NATLAB_PREFIX (default np) names the namespaces, so several labs can coexist.
set -euo pipefail
P=${NATLAB_PREFIX:-np}
NS=(pub nat1 nat2 h1 h2)

ns() { echo "$P-$1"; }
inns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

down() {
  for n in "${NS[@]}"; do
    if ip netns list | grep -qw "$(ns "$n")"; then
      # Stop whatever still runs in there, then delete it.
      for pid in $(ip netns pids "$(ns "$n")" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$(ns "$n")" 2>/dev/null || true
    fi
  done
}

link() { # link NS1 IF1 NS2 IF2
  ip link add "$P-tmp1" type veth peer name "$P-tmp2"
  ip link set "$P-tmp1" netns "$(ns "$1")"
  ip link set "$P-tmp2" netns "$(ns "$3")"
  inns "$1" ip link set "$P-tmp1" name "$2"
  inns "$3" ip link set "$P-tmp2" name "$4"
  inns "$1" ip link set "$2" up
  inns "$3" ip link set "$4" up
}

nat_rules() { # nat_rules NS MODE UDPBLOCK
  local random="fully-random"
  [ "$2" = cone ] && random=""
  local block=""
  [ "$3" = udp-blocked ] && block='iifname "lan" oifname "wan" meta l4proto udp drop'
  inns "$1" nft -f - <<EOF
flush ruleset
table ip nat {
  chain postrouting { type nat hook postrouting priority 100; oifname "wan" masquerade $random; }
}
table ip filter {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    $block
    iifname "lan" oifname "wan" accept
  }
}
EOF
}

up() {
  local mode=${1:-symmetric} udp=${2:-}
  command -v nft >/dev/null || { echo "natlab: nft (package nftables) is needed" >&2; exit 1; }
  down
  for n in "${NS[@]}"; do
    ip netns add "$(ns "$n")"
    inns "$n" ip link set lo up
  done
  link pub wan1 nat1 wan
  link pub wan2 nat2 wan
  link nat1 lan h1 eth0
  link nat2 lan h2 eth0
  inns pub ip addr add 203.0.113.1/24 dev wan1
  inns pub ip addr add 198.51.100.1/24 dev wan2
  # A default route leading nowhere: sends to unroutable private addresses are silently lost,
  # as on a real server, instead of failing with "Network is unreachable".
  inns pub ip link add null0 type veth peer name null1
  inns pub ip link set null0 up
  inns pub ip link set null1 up
  inns pub ip route add default dev null0
  inns pub sysctl -qw net.ipv4.ip_forward=1
  inns nat1 ip addr add 203.0.113.11/24 dev wan
  inns nat1 ip addr add 10.0.1.1/24 dev lan
  inns nat1 ip route add default via 203.0.113.1
  inns nat2 ip addr add 198.51.100.12/24 dev wan
  inns nat2 ip addr add 10.0.2.1/24 dev lan
  inns nat2 ip route add default via 198.51.100.1
  for n in nat1 nat2; do
    inns "$n" sysctl -qw net.ipv4.ip_forward=1
    nat_rules "$n" "$mode" "$udp"
  done
  inns h1 ip addr add 10.0.1.2/24 dev eth0
  inns h1 ip route add default via 10.0.1.1
  inns h2 ip addr add 10.0.2.2/24 dev eth0
  inns h2 ip route add default via 10.0.2.1
  echo "natlab up ($mode${udp:+, $udp}): h1 10.0.1.2 -> nat1 203.0.113.11; h2 10.0.2.2 -> nat2 198.51.100.12; pub 203.0.113.1, 198.51.100.1"
}

status() {
  for n in "${NS[@]}"; do
    echo "== $(ns "$n")"
    inns "$n" ip -brief addr || true
  done
  for n in nat1 nat2; do echo "== $(ns "$n") nft"; inns "$n" nft list ruleset || true; done
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  exec) shift; h=$1; shift; inns "$h" "$@" ;;
  status) status ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
