# Shared shell helpers for the platform scripts (sourced, not run).

# port_free PORT NAME: fail with a message naming the port and the service if something else holds the port.
port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "port $1 is taken (needed by $2); free it or set the matching FLIGHTDECK_* port variable" >&2
    exit 1
  fi
}

# wait_http URL NAME SECONDS: poll until the URL answers 2xx/3xx.
wait_http() {
  local deadline=$(( $(date +%s) + $3 ))
  until curl -sf -o /dev/null "$1"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "$2 did not become healthy within $3 s ($1)" >&2; return 1; fi
    sleep 1
  done
  echo "$2: healthy at $1"
}

# stop_pidfile FILE NAME [GRACE]: TERM the process group started with setsid, KILL after GRACE seconds.
stop_pidfile() {
  local file=$1 name=$2 grace=${3:-20} pid
  [ -f "$file" ] || { echo "$name: not running"; return 0; }
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((grace * 2))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "$name: stopped"
  else
    echo "$name: not running (stale pid file)"
  fi
  rm -f "$file"
}

# pid_alive FILE: the process in the pid file is running.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

say_up() { printf '  %-16s up    %s\n' "$1" "$2"; }
say_down() { printf '  %-16s DOWN  %s\n' "$1" "${2:-}"; }
