#!/usr/bin/env bash
# The demo: build the example program in a scratch build tree, show what it needs, pack it,
# and, where a Docker engine can run here, load and run the image in a private daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/slimmer-demo.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    grep -o " $work/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

bash examples/hello/build.sh "$work/tree"
echo "== slimmer deps $work/tree/bin/hello"
.venv/bin/slimmer deps "$work/tree/bin/hello"
echo
echo "== slimmer pack $work/tree/bin/hello -o $work/hello.tar"
.venv/bin/slimmer pack "$work/tree/bin/hello" -o "$work/hello.tar" --tag slimmer-demo/hello:latest
echo
if [ "$(id -u)" -eq 0 ] && command -v dockerd >/dev/null && [ -x /usr/bin/docker ]; then
  echo "== loading and running it in a private Docker daemon"
  dockerd --data-root "$work/root" --exec-root "$work/exec" -H "unix://$work/docker.sock" \
    --pidfile "$work/docker.pid" --iptables=false --bridge=none >"$work/dockerd.log" 2>&1 &
  pid=$!
  export DOCKER_HOST="unix://$work/docker.sock"
  for _ in $(seq 150); do /usr/bin/docker version >/dev/null 2>&1 && break; sleep 0.2; done
  /usr/bin/docker load -i "$work/hello.tar"
  /usr/bin/docker images slimmer-demo/hello --format '{{.Repository}}:{{.Tag}} {{.Size}}'
  /usr/bin/docker run --rm --network none slimmer-demo/hello:latest one two
else
  echo "(no Docker engine here: docker load -i hello.tar && docker run --rm slimmer-demo/hello)"
fi
