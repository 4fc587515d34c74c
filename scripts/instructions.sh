#!/usr/bin/env bash
# Instruction counts of render, validate and one send (benches/instructions.rs, run
# under callgrind by gungraun), compared with the committed counts in
# benches/instructions.json: fails when any count is more than 10 % above its
# committed value. Installs valgrind (Debian) and the gungraun runner of the version
# in Cargo.lock (into target/tools) when missing.
#
#   bash scripts/instructions.sh            # run and compare
#   bash scripts/instructions.sh --update   # run and write the counts
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if ! command -v valgrind >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fail "install valgrind (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
version=$(grep -A1 '^name = "gungraun-runner"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
[ -n "$version" ] || fail "gungraun-runner is not in Cargo.lock"
runner="target/tools/gungraun-$version/bin/gungraun-runner"
if [ ! -x "$runner" ]; then
  log "installing gungraun-runner $version"
  cargo install --locked --quiet --version "$version" --root "target/tools/gungraun-$version" gungraun-runner
fi

rm -rf target/gungraun
log "cargo bench --bench instructions (callgrind)"
GUNGRAUN_RUNNER="$PWD/$runner" cargo bench --locked --bench instructions -- --save-summary=json
exec python3 benches/instructions.py "$@"
