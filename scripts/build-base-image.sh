#!/usr/bin/env bash
# Build the offline stand-in for the Dockerfile's base image (image building, not supervision).
#   scripts/build-base-image.sh IMAGE STATE_DIR      e.g. python:3.11-slim .flightdeck
# Docker Hub is unreachable here, so `python:3.11-slim` (the Dockerfile's FROM) is made with debootstrap and
# imported under that same name: the Dockerfile stays the one users use. Takes ~1-2 min; the debootstrap log
# goes to STATE_DIR/logs/debootstrap.log. `python -m flightdeck.supervisor up` runs this when the image is missing.
set -euo pipefail
IMAGE=${1:?usage: $0 IMAGE STATE_DIR}
STATE=${2:?usage: $0 IMAGE STATE_DIR}
mkdir -p "$STATE/logs"
echo "base image: $IMAGE not present and no public registry here; building it offline with debootstrap (~1-2 min)"
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
  | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$IMAGE" >/dev/null
rm -rf "$rootfs"
echo "base image: $IMAGE built offline"
