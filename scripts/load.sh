#!/usr/bin/env bash
# The load harness: installs nginx and wrk (Debian) and oha (cargo install, about
# 9 minutes the first time) when missing, builds the release binary, and runs
# benches/load.py. Loopback only; every run is bounded in time.
#
#   bash scripts/load.sh [--seconds N] [--generator oha|wrk] [--burst N] [--logto] [--redis] [--pacing] [--json target/load.json]
#
# --logto also measures Logto's AWS SES connector (benches/logto: the npm package
# behind a minimal Node HTTP server) against the same stand-in; it needs Node.js.
# --redis also measures the service with its limits on, state in memory and then in
# a local Redis (redis-server from Debian, installed when missing). --pacing also
# measures pacing at a rate far above the load against pacing off.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [[ " $* " == *" --redis "* ]]; then
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
fi
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "error: install ${missing[*]} (Debian packages)" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ " $* " != *" --generator wrk "* ]] && ! command -v oha >/dev/null 2>&1; then
  cargo install oha --locked
fi
if [[ " $* " == *" --logto "* ]]; then
  command -v npm >/dev/null 2>&1 || { echo "error: --logto needs Node.js and npm" >&2; exit 1; }
  (cd benches/logto && npm ci --no-audit --no-fund --silent)
fi
cargo build --release --locked
exec python3 benches/load.py "$@"
