#!/usr/bin/env bash
# The Socket.IO client bundle the call page loads (served by natpass at /socket.io/socket.io.js)
# is a byte copy of the npm package socket.io-client's dist/socket.io.min.js, at the version
# pinned by tests/e2e/package-lock.json, with the package's LICENSE next to it.
#
#   scripts/vendor-socketio.sh           copy it into web-demo/vendor/ (after `npm ci` if needed)
#   scripts/vendor-socketio.sh --check   exit 1 when web-demo/vendor/ differs from the package
#
# To move to another version: `cd tests/e2e && npm i -D -E socket.io-client@X.Y.Z`, then run
# this script without arguments and commit web-demo/vendor/ together with the lockfile.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=copy
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

pkg=tests/e2e/node_modules/socket.io-client
lock=tests/e2e/package-lock.json
vendor=web-demo/vendor
files=("dist/socket.io.min.js:socket.io.min.js" "LICENSE:LICENSE")

# The version the lockfile pins, and the one installed: they must agree, or the copy (or the
# check) would be made against a package the lockfile does not name.
pinned=$(node -e '
  const l = require(process.argv[1]);
  const p = l.packages && l.packages["node_modules/socket.io-client"];
  if (!p || !p.version) { console.error("socket.io-client is not in " + process.argv[1]); process.exit(1); }
  process.stdout.write(p.version);
' "$PWD/$lock")

if [ ! -f "$pkg/package.json" ]; then
  echo "== npm ci (tests/e2e)"
  (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
installed=$(node -p 'require(process.argv[1]).version' "$PWD/$pkg/package.json")
if [ "$installed" != "$pinned" ]; then
  echo "tests/e2e/node_modules has socket.io-client $installed, the lockfile pins $pinned: run npm ci in tests/e2e" >&2
  exit 1
fi

if [ "$mode" = copy ]; then
  mkdir -p "$vendor"
  for f in "${files[@]}"; do
    cp "$pkg/${f%%:*}" "$vendor/${f##*:}"
  done
  echo "web-demo/vendor: socket.io-client $pinned"
  exit 0
fi

status=0
for f in "${files[@]}"; do
  if ! cmp -s "$pkg/${f%%:*}" "$vendor/${f##*:}"; then
    echo "$vendor/${f##*:} is not socket.io-client $pinned's ${f%%:*}: run scripts/vendor-socketio.sh" >&2
    status=1
  fi
done
[ "$status" = 0 ] && echo "web-demo/vendor matches socket.io-client $pinned"
exit "$status"
