#!/usr/bin/env bash
# Run every natpass test. Installs what the tests need when it is missing (Debian: coturn for
# interop, chromium for the browser tests, redis-server, janus for the SFU probe's Janus driver, pebble for ACME,
# clang and ethtool for the XDP fast path and its lab;
# npm: playwright-core from the committed lockfile, never a downloaded browser), then: format
# check, clippy, the Rust suite, the browser suite.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

need=()
command -v turnutils_uclient >/dev/null 2>&1 || need+=(coturn)
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v janus >/dev/null 2>&1 || need+=(janus)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v pebble >/dev/null 2>&1 || need+=(pebble)
# clang builds the XDP program (build.rs) and the lab's pass program; ethtool sets up the lab.
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v ethtool >/dev/null 2>&1 || need+=(ethtool)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  apt_install "${need[@]}"
fi
if [ ! -d tests/e2e/node_modules/playwright-core ] || [ ! -d tests/e2e/node_modules/socket.io-client ] ||
  [ ! -d tests/e2e/node_modules/socket.io-client-3 ]; then
  echo "== npm ci (tests/e2e)"
  (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
echo "== the vendored socket.io-client is the lockfile's"
bash scripts/vendor-socketio.sh --check

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked --lib --bins --tests -- --skip natlab_
echo "== benches, once each (criterion's test mode)"
cargo test --locked --benches
echo "== NAT lab (network namespaces; needs root)"
cargo test --locked --test natlab -- --nocapture
echo "== XDP lab (network namespaces, native XDP on veth; needs root)"
cargo test --locked --test xdp_lab -- --nocapture --test-threads=1
echo "== browser tests (headless chromium)"
cargo build --locked --bin natpass
(cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 NATPASS_BIN="$PWD/../../target/debug/natpass" node --test --test-concurrency=1)
