#!/usr/bin/env bash
# Run every natpass test. Installs the Debian packages the tests need when they are missing
# (coturn's turnutils_* tools for interop), then: format check, clippy, the whole test suite.
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
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  apt_install "${need[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked
