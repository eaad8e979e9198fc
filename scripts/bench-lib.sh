# Shared by the benchmark scripts (sourced, not run): a temporary directory, the processes they
# start (stopped by PID on exit, whatever happens), free loopback ports, and a process's CPU
# time and RSS.
TMP=$(mktemp -d)
PIDS=()
# SIGKILL: a SIGTERM would start natpass's graceful drain, and a draining server still holding
# thousands of relay ports would make the next invocation's allocations fail with 508.
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do { wait "$p"; } 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
# A free loopback port: `port` (UDP) or `port tcp`.
port() {
  python3 -c 'import socket, sys; s=socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1:] == ["tcp"] else socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$@"
}
# CPU time of PID in clock ticks (utime + stime), its RSS in KiB; ticks per second.
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
# timed FILE CMD...: runs CMD (its output passes through) and writes the CPU seconds it used
# (user + system, with its children) to FILE. On loopback the sender's core also delivers to
# the receiver and wakes it, so a server that sleeps more costs its generator more CPU: the
# media rows report the generator's CPU next to the server's.
timed() {
  python3 -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[2:])
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{u.ru_utime + u.ru_stime}\n")
sys.exit(r.returncode)' "$@"
}
