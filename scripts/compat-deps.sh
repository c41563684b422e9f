#!/usr/bin/env bash
# Installs the real npm clients used by the compatibility tests (tests/compat), from
# the lock file, only when the lock file changed since the last install.
# --ignore-scripts: node-datachannel's install script downloads a prebuilt binary
# from outside the npm registry; its WebRTC transport is never used here.
set -euo pipefail
cd "$(dirname "$0")/../tests/compat"
stamp=node_modules/.lockstep-installed
if [ -f "$stamp" ] && cmp -s package-lock.json "$stamp"; then
  exit 0
fi
echo "compat: npm ci --ignore-scripts (real @multisynq/client, @croquet/croquet; puppeteer-core for the browser tests)"
PUPPETEER_SKIP_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
cp package-lock.json "$stamp"
