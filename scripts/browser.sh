#!/usr/bin/env bash
# Loads the dev outbox in headless Chromium (Debian's, driven by playwright-core)
# after two sends, and checks what a person would see. Screenshots go to
# target/browser/ (kept as CI artifacts).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

BINARY="${SES_CONNECTOR_BINARY:-target/debug/ses-connector}"
LOG_DIR=target/test-logs
mkdir -p "$LOG_DIR" target/browser

if ! command -v chromium >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "error: chromium is missing; install Debian's chromium" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
(cd tests/browser && npm ci --no-audit --no-fund --silent)
[ -x "$BINARY" ] || cargo build --locked

port=$(free_port)
"$BINARY" serve --dev --listen "127.0.0.1:$port" >"$LOG_DIR/browser-service.log" 2>&1 &
service=$!
trap 'kill $service 2>/dev/null || true' EXIT
wait_for "http://127.0.0.1:$port/readyz" || { cat "$LOG_DIR/browser-service.log" >&2; fail "the service did not start"; }

OUTBOX_URL="http://127.0.0.1:$port" SCREENSHOT_DIR="$PWD/target/browser" CHROMIUM="$(command -v chromium)" \
  node tests/browser/outbox.mjs
