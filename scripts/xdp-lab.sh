#!/usr/bin/env bash
# The XDP lab: natpass's namespace between a client's and a peer's, each behind a veth pair,
# for tests/xdp_lab.rs and scripts/bench-xdp.sh. Needs root, iproute2, ethtool, clang.
#
#   PREFIX-cli  eth0 10.81.1.2 ── xc 10.81.1.1  PREFIX-srv  xp 10.81.2.1 ── eth0 10.81.2.2  PREFIX-peer
#
# natpass listens on 10.81.1.1 and relays from 10.81.2.1 with `xdp-interface = ["xc", "xp"]`.
# The far ends run an XDP pass program (tests/xdp/pass.bpf.c) so that veth delivers the frames
# natpass's program redirects or sends back; TX checksum offload is off on every end, so
# datagrams carry full checksums (XDP sees frames, not the kernel's partial-checksum skbs) and
# every receiver's kernel checks the checksums natpass's program rewrote.
#
# XDPLAB_NIC=1 puts a wire namespace (PREFIX-mid) in both links, same addresses:
#
#   PREFIX-cli eth0 ── ca [wire] cb ── xc PREFIX-srv xp ── pb [wire] pa ── eth0 PREFIX-peer
#
# An XDP program on each wire end (tests/xdp/wire.bpf.c) redirects every frame out of the other
# end, so datagrams reach natpass's side as XDP frames in pages with XDP's headroom — the way a
# NIC's driver hands them to XDP — instead of as the sending socket's skbs, which veth copies
# into such pages on the receiving side first (on the server's core). The copy now happens at
# ca/pa, on the wire's side.
# natpass's ends (xc, xp) must run an XDP program in this mode — natpass's own, or the pass
# program for a userspace server as scripts/bench-xdp.sh attaches it: veth drops redirected
# frames for a device without one (or without GRO on).
#
#   scripts/xdp-lab.sh up|down       (XDPLAB_PREFIX, default npx)
set -euo pipefail
P=${XDPLAB_PREFIX:-npx}
here=$(cd "$(dirname "$0")/.." && pwd)

down() {
  for ns in cli srv peer mid; do ip netns del "$P-$ns" 2>/dev/null || true; done
}

up() {
  down
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  clang -O2 -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$here/tests/xdp/pass.bpf.c" -o "$tmp/pass.o"
  for ns in cli srv peer; do
    ip netns add "$P-$ns"
    ip -n "$P-$ns" link set lo up
  done
  if [ "${XDPLAB_NIC:-0}" = 1 ]; then
    ip netns add "$P-mid"
    ip -n "$P-mid" link set lo up
    ip link add ca netns "$P-mid" type veth peer name eth0 netns "$P-cli"
    ip link add cb netns "$P-mid" type veth peer name xc netns "$P-srv"
    ip link add pa netns "$P-mid" type veth peer name eth0 netns "$P-peer"
    ip link add pb netns "$P-mid" type veth peer name xp netns "$P-srv"
    local from to idx
    for pair in ca:cb cb:ca pa:pb pb:pa; do
      from=${pair%:*} to=${pair#*:}
      idx=$(ip netns exec "$P-mid" cat "/sys/class/net/$to/ifindex")
      clang -O2 -target bpf -DOUT="$idx" -I"/usr/include/$(uname -m)-linux-gnu" \
        -c "$here/tests/xdp/wire.bpf.c" -o "$tmp/wire-$from.o"
      ip netns exec "$P-mid" ethtool -K "$from" tx off >/dev/null
      ip -n "$P-mid" link set dev "$from" xdpdrv obj "$tmp/wire-$from.o" sec xdp
      ip -n "$P-mid" link set "$from" up
    done
  else
    ip link add xc netns "$P-srv" type veth peer name eth0 netns "$P-cli"
    ip link add xp netns "$P-srv" type veth peer name eth0 netns "$P-peer"
  fi
  ip -n "$P-srv" addr add 10.81.1.1/24 dev xc
  ip -n "$P-srv" addr add 10.81.2.1/24 dev xp
  ip -n "$P-cli" addr add 10.81.1.2/24 dev eth0
  ip -n "$P-peer" addr add 10.81.2.2/24 dev eth0
  for ns in cli peer; do
    ip -n "$P-$ns" link set eth0 up
    ip netns exec "$P-$ns" ethtool -K eth0 tx off >/dev/null
    ip -n "$P-$ns" link set dev eth0 xdpdrv obj "$tmp/pass.o" sec xdp
  done
  for dev in xc xp; do
    ip -n "$P-srv" link set "$dev" up
    ip netns exec "$P-srv" ethtool -K "$dev" tx off >/dev/null
  done
  ip -n "$P-cli" route add default via 10.81.1.1
  ip -n "$P-peer" route add default via 10.81.2.1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
