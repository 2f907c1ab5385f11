#!/usr/bin/env bash
# System packages the embedded platform needs (Debian/Ubuntu, root). Idempotent: installs only what is missing.
#   docker.io + docker-registry: engine and local image registry (no Docker Hub here)
#   debootstrap: builds the offline base image; haproxy: the local deploy target's load balancer; wrk: load generator
#   postgresql + redis-server: the Celery mode's metadata/MLflow database and broker (FLIGHTDECK_EXECUTOR=celery)
set -euo pipefail
need=()
for pair in dockerd:docker.io docker-registry:docker-registry debootstrap:debootstrap haproxy:haproxy wrk:wrk \
            curl:curl chromium:chromium chromedriver:chromium-driver docker-compose:docker-compose; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then echo "system packages: all present"; exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${need[*]} (install them; this script needs root on Debian/Ubuntu)" >&2; exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" ca-certificates >/dev/null
echo "system packages: installed ${need[*]}"
