# The embedded platform's environment (sourced by the Makefile's targets, `make up` included, and .ci/run).
# Every value can be overridden from the caller's environment or from a .env file at the repo root
# (.env.example lists them). The defaults live in one place, include/flightdeck/settings.py (`environment()`),
# which prints them here; the `flightdeck` CLI applies the same defaults itself, so it needs no env.sh.
# The S3 keys are local-only credentials for the embedded SeaweedFS server.
FLIGHTDECK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -f "$FLIGHTDECK_ROOT/.env" ]; then set -a; source "$FLIGHTDECK_ROOT/.env"; set +a; fi
export FLIGHTDECK_ROOT
_fd_py="$FLIGHTDECK_ROOT/.venv/bin/python"
[ -x "$_fd_py" ] || _fd_py=python3
# -I: isolated, so the script's folder (include/flightdeck) never shadows a stdlib module.
if _fd_env=$("$_fd_py" -I "$FLIGHTDECK_ROOT/include/flightdeck/settings.py" shell); then
  eval "$_fd_env"
else
  echo "scripts/env.sh: could not read the defaults from include/flightdeck/settings.py with $_fd_py" >&2
  unset _fd_py _fd_env
  return 1 2>/dev/null || exit 1
fi
unset _fd_py _fd_env
export PATH="$FLIGHTDECK_ROOT/.venv/bin:$PATH"
