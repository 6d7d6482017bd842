#!/usr/bin/env bash
# Builds the router image with podman as /work/shared/podman.md describes: local stand-in base image
# when python:3.11-slim is missing, pip index and CA bundle passed as build secrets (never build args).
# Usage: scripts/image-build.sh   (IMAGE=localhost/router:dev, BASE_IMAGE_SCRIPT=../shared/tools/base-image.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/router:dev}
BASE=localhost/python:3.11-slim
BASE_IMAGE_SCRIPT=${BASE_IMAGE_SCRIPT:-../shared/tools/base-image.sh}
HINT="see /work/shared/podman.md section 1 (one-time set-up as root)"

command -v podman >/dev/null || { echo "image: podman is not installed; $HINT" >&2; exit 1; }
podman info >/dev/null 2>&1 || { echo "image: podman does not work here (podman info failed); $HINT" >&2; exit 1; }

if ! podman image exists "$BASE"; then
  [ -x "$BASE_IMAGE_SCRIPT" ] || [ -f "$BASE_IMAGE_SCRIPT" ] || {
    echo "image: base image $BASE is missing and $BASE_IMAGE_SCRIPT was not found;" \
         "set BASE_IMAGE_SCRIPT or build/pull python:3.11-slim first" >&2; exit 1; }
  echo "image: building the stand-in base image $BASE (once, ~1 min)"
  bash "$BASE_IMAGE_SCRIPT"
fi

S=$(mktemp -d)
trap 'rm -rf "$S"' EXIT
pipcfg() { local v; v=$(printenv "$1" || python3 -m pip config get "global.$2" 2>/dev/null || true)
  v=$(tr ' ' '\n' <<<"$v" | grep -E '^https?://' | paste -sd' ' || true); [ -z "$v" ] || echo "$2 = $v"; }
{ echo '[global]'; pipcfg PIP_INDEX_URL index-url; pipcfg PIP_EXTRA_INDEX_URL extra-index-url; } > "$S/pip.conf"
CA=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)}

start=$EPOCHREALTIME
podman build --network host --pull=never --format docker \
  --secret id=pipconf,src="$S/pip.conf" --secret id=cacert,src="$CA" -t "$IMAGE" .
awk -v a="$start" -v b="$EPOCHREALTIME" -v i="$IMAGE" 'BEGIN { printf "image: built %s in %.1fs\n", i, b - a }'
