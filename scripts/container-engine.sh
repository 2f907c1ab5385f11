#!/usr/bin/env bash
# The container side of the embedded platform: a Docker engine, a local image registry, and offline base images.
#   container-engine.sh up|down|status
# Uses an engine that already answers; otherwise starts Debian's dockerd (no systemd here) in its own process group.
# Docker Hub is unreachable here, so `python:3.11-slim` (the Dockerfile's FROM) is built offline with debootstrap
# under that same name: the Dockerfile stays the one users use.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${FLIGHTDECK_STATE_DIR:-$ROOT/.flightdeck}
REGISTRY=${FLIGHTDECK_REGISTRY:-127.0.0.1:5050}
BASE_IMAGE=${FLIGHTDECK_BASE_IMAGE:-python:3.11-slim}
mkdir -p "$STATE/logs" "$STATE/run" "$STATE/registry"
source "$ROOT/scripts/lib.sh"

engine_up() {
  if docker info >/dev/null 2>&1; then echo "docker engine: using the running engine"; return; fi
  command -v dockerd >/dev/null || bash "$ROOT/scripts/install-system.sh"
  echo "docker engine: none running; starting dockerd (Debian docker.io) in the background"
  setsid dockerd >"$STATE/logs/dockerd.log" 2>&1 < /dev/null &
  echo $! >"$STATE/run/dockerd.pid"
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see $STATE/logs/dockerd.log" >&2; tail -5 "$STATE/logs/dockerd.log" >&2; exit 1; }
}

registry_up() {
  if curl -sf -D - -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null | grep -qi 'registry/2.0'; then
    echo "registry: answering on $REGISTRY"; return; fi
  port_free "${REGISTRY##*:}" "image registry"
  cat >"$STATE/registry/config.yml" <<YML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $STATE/registry/data}
  delete: {enabled: true}
http: {addr: "$REGISTRY"}
YML
  setsid docker-registry serve "$STATE/registry/config.yml" >"$STATE/logs/registry.log" 2>&1 < /dev/null &
  echo $! >"$STATE/run/registry.pid"
  wait_http "http://$REGISTRY/v2/" "image registry" 20
}

base_image_up() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then echo "base image: $BASE_IMAGE present"; return; fi
  echo "base image: $BASE_IMAGE not present and no public registry here; building it offline with debootstrap (~1-2 min)"
  local mirror rootfs
  mirror=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -oE 'https?://[^ ]+/debian$|https?://[^ ]+/debian ' | head -n1 | tr -d ' ' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs="$STATE/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates,curl \
    bookworm "$rootfs" "$mirror" >"$STATE/logs/debootstrap.log" 2>&1 \
    || { echo "debootstrap failed; see $STATE/logs/debootstrap.log" >&2; exit 1; }
  # HTTPS leaves this machine through a re-signing proxy: the image must trust the host's extra CAs for pip.
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || true
  tar -C "$rootfs" --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*' -c . \
    | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  echo "base image: $BASE_IMAGE built offline"
}

case "${1:-status}" in
  up) engine_up; registry_up; base_image_up ;;
  down)
    stop_pidfile "$STATE/run/registry.pid" "image registry"
    if [ -f "$STATE/run/dockerd.pid" ]; then
      # containers of ours first, so nothing is left running
      docker ps -q --filter label=flightdeck.managed=true | xargs -r docker rm -f >/dev/null 2>&1 || true
      stop_pidfile "$STATE/run/dockerd.pid" "docker engine" 30
    else
      echo "docker engine: not started by us, left running"
    fi ;;
  status)
    if docker info >/dev/null 2>&1; then say_up "docker engine" "$(docker info --format '{{.ServerVersion}}')"; else say_down "docker engine"; fi
    if curl -sf "http://$REGISTRY/v2/" >/dev/null 2>&1; then say_up "image registry" "http://$REGISTRY"; else say_down "image registry"; fi
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then say_up "base image" "$BASE_IMAGE"; else say_down "base image"; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
