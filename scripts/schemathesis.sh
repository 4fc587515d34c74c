#!/usr/bin/env bash
# Runs schemathesis against the running service's own OpenAPI document, with an
# admin token: no server errors, and every status, content type, header and body
# conforms to the document. Uses the outbox transport (nothing is sent) and turns
# rate limits off so generated sends are not refused as abuse.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

VENV="${SES_CONNECTOR_VENV:-.venv}"
BINARY="${SES_CONNECTOR_BINARY:-target/debug/ses-connector}"
LOG_DIR=target/test-logs
mkdir -p "$LOG_DIR"

"$VENV/bin/python" -c 'import schemathesis' 2>/dev/null \
  || "$VENV/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
[ -x "$BINARY" ] || cargo build --locked

port=$(free_port)
token="schemathesis-admin-$(date +%s%N)"
"$BINARY" init > "$LOG_DIR/schemathesis-config.json" 2>/dev/null
SES_CONNECTOR_ADMIN_TOKENS="$token" SES_CONNECTOR_RATE_LIMIT_RECIPIENT=0 SES_CONNECTOR_RATE_LIMIT_IP=0 \
  SES_CONNECTOR_LOG_LEVEL=warn \
  "$BINARY" serve --config "$LOG_DIR/schemathesis-config.json" --transport outbox --listen "127.0.0.1:$port" \
  >"$LOG_DIR/schemathesis-service.log" 2>&1 &
service=$!
trap 'kill $service 2>/dev/null || true' EXIT
wait_for "http://127.0.0.1:$port/readyz" || { cat "$LOG_DIR/schemathesis-service.log" >&2; fail "the service did not start"; }

"$VENV/bin/st" run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples 60 \
  --seed 20261127 \
  --warnings off
