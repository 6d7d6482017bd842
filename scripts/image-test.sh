#!/usr/bin/env bash
# Runs the router image the way a user would and checks it end to end: a test config mounted at
# /etc/router/config.yaml, host networking on a free port; /livez, /metrics and one webhook invocation
# of the bundled example function answer; `podman healthcheck run` passes; PID 1 is tini; and
# `podman stop -t 10` (SIGTERM) ends it with exit code 0 and a clean shutdown in the logs. Then once more
# with the Kubernetes manifests' security settings (read-only root, no capabilities, tmpfs /tmp and state).
# Usage: scripts/image-test.sh   (IMAGE=localhost/router:dev, START_TIMEOUT=60 seconds)
set -euo pipefail
IMAGE=${IMAGE:-localhost/router:dev}
START_TIMEOUT=${START_TIMEOUT:-60}

# Without systemd, podman reports that it cannot set up health-check timers: harmless here, hidden.
podman() { command podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }
fail() { echo "image-test: FAIL: $*" >&2; exit 1; }
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

command -v podman >/dev/null || fail "podman is not installed; see /work/shared/podman.md section 1"
podman image exists "$IMAGE" || fail "image $IMAGE not found; run 'make image' first"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
T=$(mktemp -d)
CID=
cleanup() {
  if [ -n "$CID" ]; then podman rm -f "$CID" >/dev/null 2>&1 || true; fi
  # (a rootless run leaves the state volume's files to a sub-uid: podman unshare removes those)
  rm -rf "$T" 2>/dev/null || podman unshare rm -rf "$T" 2>/dev/null || true
}
trap cleanup EXIT

cat > "$T/config.yaml" <<'EOF'
version: 1
server: {host: 127.0.0.1, port: "${ROUTER_PORT}", shutdown_timeout: 5s}
state: sqlite:////var/lib/router/state.db
logging: {level: info, format: json}
functions:
  hello:
    runtime: python3.11
    handler: app.handler
    code: /app/examples/hello
    timeout: 5s
routes:
  - name: hello
    source: {type: webhook, path: "/hello/{name}", methods: [GET]}
    function: hello
EOF
chmod 0644 "$T/config.yaml"   # the container runs as uid 10001
URL=http://127.0.0.1:$PORT

show_logs() { echo "--- container logs ---" >&2; podman logs "$CID" >&2 || true; echo "---" >&2; }

t0=$(now)
CID=$(podman run -d --network host -e ROUTER_PORT="$PORT" \
  -v "$T/config.yaml:/etc/router/config.yaml:ro" "$IMAGE")
echo "image-test: started $IMAGE as ${CID:0:12} on port $PORT"

# Wait for /livez, with a deadline; give up at once if the container exits.
deadline=$(( ${EPOCHREALTIME%.*} + START_TIMEOUT ))
until curl -fsS -o /dev/null --max-time 2 "$URL/livez" 2>/dev/null; do
  state=$(podman inspect -f '{{.State.Status}}' "$CID")
  if [ "$state" != running ]; then
    show_logs; fail "container is $state before /livez answered"
  fi
  if (( ${EPOCHREALTIME%.*} >= deadline )); then show_logs; fail "/livez did not answer within ${START_TIMEOUT}s"; fi
  sleep 0.05
done
t_live=$(since "$t0")
echo "image-test: /livez answered ${t_live}s after podman run"

# Read the whole page first: `curl | grep -q` fails under pipefail once grep stops reading early
# (curl: (23) Failed writing body) when the page is larger than a pipe buffer.
metrics=$(curl -fsS --max-time 5 "$URL/metrics") || { show_logs; fail "/metrics did not answer"; }
grep -q '^router_build_info{' <<<"$metrics" || { show_logs; fail "/metrics has no router_build_info sample"; }
body=$(curl -fsS --max-time 20 "$URL/hello/image-test") \
  || { show_logs; fail "GET /hello/image-test failed"; }
grep -q 'hello, image-test' <<<"$body" || { show_logs; fail "unexpected /hello answer, got $body"; }
echo "image-test: /metrics and GET /hello/image-test ok"

podman healthcheck run "$CID" 2>/dev/null || { show_logs; fail "podman healthcheck run did not report healthy"; }
pid1=$(podman exec "$CID" cat /proc/1/cmdline | tr '\0' ' ')
[[ $pid1 == tini* || $pid1 == /usr/bin/tini* ]] || fail "PID 1 should be tini, got '$pid1'"
user=$(podman exec "$CID" id -u)
[ "$user" = 10001 ] || fail "the router should run as uid 10001, got $user"
echo "image-test: healthcheck healthy, PID 1 is tini, uid $user"

t1=$(now)
podman stop -t 10 "$CID" >/dev/null
t_stop=$(since "$t1")
code=$(podman inspect -f '{{.State.ExitCode}}' "$CID")
logs=$(podman logs "$CID" 2>&1)
[ "$code" = 0 ] || { show_logs; fail "exit code after SIGTERM should be 0, got $code"; }
grep -q 'router stopped' <<<"$logs" || { show_logs; fail "logs do not show a clean shutdown ('router stopped')"; }
if grep -q 'Traceback' <<<"$logs"; then show_logs; fail "logs contain a traceback"; fi
echo "image-test: stopped with exit code 0 in ${t_stop}s, clean shutdown logged"

# Again as deploy/kubernetes runs it: read-only root filesystem, every capability dropped, no privilege
# escalation, uid/gid 10001, and writable emptyDir-like mounts only at /tmp (the environments' scratch
# dirs) and /var/lib/router (the state); a function must still run (its environment forked from a template).
# (The state volume: a directory of the host owned by 10001, as an emptyDir with fsGroup 10001 is.)
mkdir -p "$T/state" && chmod 0770 "$T/state" && chown 10001:10001 "$T/state" 2>/dev/null || chmod 0777 "$T/state"
CID=$(podman run -d --network host -e ROUTER_PORT="$PORT" --read-only --read-only-tmpfs=false \
  --cap-drop=ALL --security-opt=no-new-privileges --user 10001:10001 \
  --tmpfs /tmp:rw,mode=1777 -v "$T/state:/var/lib/router" \
  -v "$T/config.yaml:/etc/router/config.yaml:ro" "$IMAGE")
deadline=$(( ${EPOCHREALTIME%.*} + START_TIMEOUT ))
until curl -fsS -o /dev/null --max-time 2 "$URL/livez" 2>/dev/null; do
  state=$(podman inspect -f '{{.State.Status}}' "$CID")
  if [ "$state" != running ]; then show_logs; fail "restricted: container is $state before /livez answered"; fi
  if (( ${EPOCHREALTIME%.*} >= deadline )); then show_logs; fail "restricted: /livez did not answer"; fi
  sleep 0.05
done
body=$(curl -fsS --max-time 20 "$URL/hello/restricted") || { show_logs; fail "restricted: GET /hello failed"; }
grep -q 'hello, restricted' <<<"$body" || { show_logs; fail "restricted: unexpected /hello answer, got $body"; }
podman stop -t 10 "$CID" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$CID")
logs=$(podman logs "$CID" 2>&1)
[ "$code" = 0 ] || { show_logs; fail "restricted: exit code after SIGTERM should be 0, got $code"; }
if grep -q 'Traceback' <<<"$logs"; then show_logs; fail "restricted: logs contain a traceback"; fi
echo "image-test: restricted (read-only root, no capabilities, uid 10001) served /hello and stopped with 0"
echo "image-test: PASS (start to /livez ${t_live}s, stop ${t_stop}s)"
