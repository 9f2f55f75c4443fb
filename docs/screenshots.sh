#!/usr/bin/env bash
# Regenerates the dashboard screenshots the README shows (docs/dashboard-*.png)
# from real runs: the browser test (lab-tests/tests/browser.rs) runs
# `duplicate-load 8 2` with the starter and with the reference fix in a headless
# Chromium and saves what it saw. Also prints the page's weight, its first
# contentful paint and the `/metrics` text after the starter's run.
# Needs redis-server, chromium and promtool (Debian: redis-server chromium prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."
export LAB_SCREENSHOTS_DIR="$PWD/docs"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run -p lab-tests --test browser --no-capture
else
  cargo test -p lab-tests --test browser -- --nocapture
fi
ls -l docs/dashboard-*.png
