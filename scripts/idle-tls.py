#!/usr/bin/env python3
"""Open N TLS connections to HOST:PORT, complete each handshake, hold them idle for HOLD
seconds, then close them. Prints "connected N" (flushed) once all are up, for a benchmark to
read the server's memory then. No certificate check (a benchmark against a local server).

    scripts/idle-tls.py HOST PORT N HOLD
"""
import socket
import ssl
import sys
import time

host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["stun.turn"])
conns = []
deadline = time.time() + 120
for i in range(n):
    if time.time() > deadline:
        break
    try:
        s = socket.create_connection((host, port), timeout=5)
        conns.append(ctx.wrap_socket(s, server_hostname="localhost"))
    except OSError as e:
        print(f"connection {i}: {e}", file=sys.stderr, flush=True)
        break
print(f"connected {len(conns)}", flush=True)
time.sleep(hold)
alive = 0
for c in conns:
    try:
        c.setblocking(False)
        try:
            alive += 1 if c.recv(1) != b"" else 0
        except ssl.SSLWantReadError:
            alive += 1
        except BlockingIOError:
            alive += 1
    except OSError:
        pass
print(f"alive {alive}", flush=True)
