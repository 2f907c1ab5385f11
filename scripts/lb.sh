#!/usr/bin/env bash
# The platform's public load balancer (HAProxy) for the local deploy target.
#   scripts/lb.sh start|stop|status
# Listens on FLIGHTDECK_LB_URL (default http://127.0.0.1:8090); runtime API socket and config under
# $FLIGHTDECK_STATE_DIR/deploy/lb (default .flightdeck/deploy/lb). start re-attaches running revisions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
case "${1:-}" in
  start|stop|status) exec "$PY" -m flightdeck.deploy.lb_service "$1" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
