#!/usr/bin/env python3
"""UDP hole punching attempt, for the NAT lab (no third-party modules, no name lookups).

punch.py SERVER_IP SERVER_PORT LOCAL_PORT MY_FILE PEER_FILE RESULT_FILE
Learns its mapped address from a STUN Binding (written to MY_FILE), waits for the peer's
(PEER_FILE), then sends 30 probes to it over 3 s from the same socket while counting the probes
that arrive from the peer. Writes "received N" to RESULT_FILE. Bounded in count and time.
"""
import os, socket, struct, sys, time

server = (sys.argv[1], int(sys.argv[2]))
local_port, me, peer_file, result = int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", local_port))
s.settimeout(0.5)
tid = os.urandom(12)
req = struct.pack("!HHI", 1, 0, 0x2112A442) + tid
mapped = None
for _ in range(6):
    s.sendto(req, server)
    try:
        data, _ = s.recvfrom(2048)
    except socket.timeout:
        continue
    i = 20
    while i + 4 <= len(data):
        t, l = struct.unpack("!HH", data[i:i + 4])
        if t == 0x0020 and l >= 8:
            port = struct.unpack("!H", data[i + 6:i + 8])[0] ^ 0x2112
            ip = struct.unpack("!I", data[i + 8:i + 12])[0] ^ 0x2112A442
            mapped = "%s:%d" % (socket.inet_ntoa(struct.pack("!I", ip)), port)
        i += 4 + ((l + 3) // 4) * 4
    if mapped:
        break
if not mapped:
    open(result, "w").write("error no STUN answer\n")
    sys.exit(1)
open(me + ".tmp", "w").write(mapped)
os.rename(me + ".tmp", me)
deadline = time.time() + 10
while not os.path.exists(peer_file) and time.time() < deadline:
    time.sleep(0.05)
pip, pport = open(peer_file).read().strip().split(":")
peer = (pip, int(pport))
# Open our NAT's mapping first with packets that die one hop past it (TTL 2), so an early
# probe from the peer cannot reach its NAT before that NAT has a mapping of its own (Linux
# conntrack would then take the port and map ours elsewhere). Then both sides fire for real.
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 2)
for _ in range(3):
    s.sendto(b"prime", peer)
time.sleep(1.0)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
got = 0
s.settimeout(0.1)
end = time.time() + 3
sent = 0
while time.time() < end:
    if sent < 30:
        s.sendto(b"punch", peer)
        sent += 1
    try:
        data, frm = s.recvfrom(2048)
        if data == b"punch":
            got += 1
    except socket.timeout:
        pass
open(result, "w").write("received %d mapped %s peer %s:%d\n" % (got, mapped, peer[0], peer[1]))
