#!/usr/bin/env bash
# The embedded one-machine platform: platform.sh up|down|status
#   S3 (SeaweedFS) -> MLflow (SQLite + artifacts in S3) -> Docker engine + registry + base image
#   -> local load balancer (HAProxy, if the deploy target's script is present) -> Airflow 3 (scheduler + API server).
# Every service runs in the background in its own process group, logs to $STATE/logs, keeps its data under $STATE.
# `up` twice is safe: a service that already answers is left alone; a port held by something else is an error.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ROOT=$FLIGHTDECK_ROOT
STATE=$FLIGHTDECK_STATE_DIR
source "$ROOT/scripts/lib.sh"
RUN=$STATE/run
LOGS=$STATE/logs
export AIRFLOW_HOME=$STATE/airflow
mkdir -p "$RUN" "$LOGS" "$STATE/s3" "$STATE/mlflow" "$AIRFLOW_HOME"

if [ ! -x "$ROOT/.venv/bin/airflow" ]; then
  echo "no virtualenv with the platform's packages: run 'make install' first" >&2; exit 1
fi

# ---- S3: SeaweedFS ---------------------------------------------------------------------------------------
s3_up() {
  if pid_alive "$RUN/s3.pid"; then echo "s3: running"; return; fi
  port_free "$FLIGHTDECK_S3_PORT" "S3 (SeaweedFS)"
  # weed mini opens many ports (and each +10000 for gRPC); pin them next to the S3 port so a second
  # platform with another S3 port never collides, and they stay clear of Airflow's log servers.
  local p=$FLIGHTDECK_S3_PORT
  setsid weed mini -dir="$STATE/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
    -s3.port="$p" -master.port=$((p + 1)) -volume.port=$((p + 2)) -filer.port=$((p + 3)) \
    -webdav.port=$((p + 4)) -admin.port=$((p + 5)) -debug.port=$((p + 6)) -s3.port.iceberg=0 -s3.port.lance=0 \
    >"$LOGS/s3.log" 2>&1 </dev/null &
  echo $! >"$RUN/s3.pid"
  local deadline=$(( $(date +%s) + 60 ))
  until python -m flightdeck.provisioning buckets >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "S3 did not come up; see $LOGS/s3.log" >&2; tail -5 "$LOGS/s3.log" >&2; exit 1; }
    pid_alive "$RUN/s3.pid" || { echo "S3 (weed) exited; see $LOGS/s3.log" >&2; tail -5 "$LOGS/s3.log" >&2; exit 1; }
    sleep 1
  done
  echo "s3: healthy at $FLIGHTDECK_S3_ENDPOINT"
}

# ---- MLflow tracking server -------------------------------------------------------------------------------
mlflow_up() {
  if pid_alive "$RUN/mlflow.pid"; then echo "mlflow: running"; return; fi
  port_free "$FLIGHTDECK_MLFLOW_PORT" "MLflow"
  MLFLOW_S3_ENDPOINT_URL=$FLIGHTDECK_S3_ENDPOINT setsid mlflow server \
    --backend-store-uri "sqlite:///$STATE/mlflow/mlflow.db" \
    --artifacts-destination "s3://$FLIGHTDECK_MLFLOW_BUCKET/artifacts" \
    --host 127.0.0.1 --port "$FLIGHTDECK_MLFLOW_PORT" --workers 1 \
    >"$LOGS/mlflow.log" 2>&1 </dev/null &
  echo $! >"$RUN/mlflow.pid"
}

# ---- Airflow 3: standalone (API server, scheduler, dag processor, triggerer) -------------------------------
airflow_env() {
  export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
  export AIRFLOW__CORE__PLUGINS_FOLDER=$ROOT/plugins
  export AIRFLOW__CORE__LOAD_EXAMPLES=False
  # LocalExecutor that imports the tasks' heavy modules once, before it forks (include/flightdeck/preloading_executor.py)
  export AIRFLOW__CORE__EXECUTOR=flightdeck.preloading_executor.PreloadingLocalExecutor
  # 2 cores: the default parallelism of 32 forks 32 workers.
  export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-4}
  export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
  export AIRFLOW__API__PORT=$FLIGHTDECK_AIRFLOW_PORT
  # Worker and triggerer log servers sit at the defaults (8793/8794) for API port 8080 and move with it.
  export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$((FLIGHTDECK_AIRFLOW_PORT + 713))
  export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=$((FLIGHTDECK_AIRFLOW_PORT + 714))
  export AIRFLOW__API__BASE_URL=http://localhost:$FLIGHTDECK_AIRFLOW_PORT
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$FLIGHTDECK_AIRFLOW_PORT/execution/
  # New DAG files show up within seconds instead of the default 5 minutes.
  export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-15}
  export AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=${AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL:-15}
  # Central task logs: remote logging to the S3 server, read back by the UI and the REST API.
  export AIRFLOW__LOGGING__REMOTE_LOGGING=True
  export AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER=s3://$FLIGHTDECK_LOGS_BUCKET/airflow
  export AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID=aws_default
  # Connections from the environment (no secrets in the metadata DB or the repo).
  # (AIRFLOW_CONN_AWS_DEFAULT comes from env.sh)
  export AIRFLOW_CONN_MLFLOW_DEFAULT="http://${MLFLOW_TRACKING_URI#http://}"
}

airflow_up() {
  airflow_env
  if pid_alive "$RUN/airflow.pid"; then echo "airflow: running"; return; fi
  port_free "$FLIGHTDECK_AIRFLOW_PORT" "Airflow API server"
  # run from AIRFLOW_HOME: standalone writes a few files into its working directory
  cd "$AIRFLOW_HOME"
  setsid airflow standalone >"$LOGS/airflow.log" 2>&1 </dev/null &
  echo $! >"$RUN/airflow.pid"
  cd "$ROOT"
}

# ---- the local deploy target's load balancer (owned by the deploy code) ------------------------------------
lb() { if [ -f "$ROOT/scripts/lb.sh" ]; then bash "$ROOT/scripts/lb.sh" "$1"; fi; }

up() {
  local t0=$SECONDS
  s3_up
  mlflow_up
  bash "$ROOT/scripts/container-engine.sh" up
  airflow_up
  lb start
  wait_http "http://127.0.0.1:$FLIGHTDECK_MLFLOW_PORT/health" "mlflow" 300
  # the API answers before the scheduler and dag processor are ready: wait for every component
  python -m flightdeck.provisioning wait-airflow --timeout 300
  echo "platform up in $((SECONDS - t0)) s"
  urls
}

urls() {
  local pw_file=$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
  echo
  echo "  Airflow UI   $FLIGHTDECK_AIRFLOW_URL   user admin, password: $(python -m flightdeck.provisioning airflow-password 2>/dev/null || echo "see $pw_file")"
  echo "  MLflow UI    $MLFLOW_TRACKING_URI"
  echo "  S3 (Seaweed) $FLIGHTDECK_S3_ENDPOINT   key $AWS_ACCESS_KEY_ID (local-only credentials)"
  echo "  Registry     http://$FLIGHTDECK_REGISTRY/v2/_catalog"
  echo "  Model (LB)   $FLIGHTDECK_LB_URL   (after a deploy)"
  echo "  State        $STATE   logs in $LOGS"
}

down() {
  lb stop
  stop_pidfile "$RUN/airflow.pid" "airflow" 30
  stop_pidfile "$RUN/mlflow.pid" "mlflow"
  bash "$ROOT/scripts/container-engine.sh" down
  stop_pidfile "$RUN/s3.pid" "s3"
}

status() {
  echo "Flightdeck platform (state: $STATE)"
  if pid_alive "$RUN/s3.pid" && python -m flightdeck.provisioning buckets --check >/dev/null 2>&1; then
    say_up "s3" "$FLIGHTDECK_S3_ENDPOINT"; else say_down "s3" "$FLIGHTDECK_S3_ENDPOINT"; fi
  if curl -sf -o /dev/null "http://127.0.0.1:$FLIGHTDECK_MLFLOW_PORT/health"; then
    say_up "mlflow" "$MLFLOW_TRACKING_URI"; else say_down "mlflow" "$MLFLOW_TRACKING_URI"; fi
  if curl -sf -o /dev/null "$FLIGHTDECK_AIRFLOW_URL/api/v2/monitor/health"; then
    say_up "airflow" "$FLIGHTDECK_AIRFLOW_URL"; else say_down "airflow" "$FLIGHTDECK_AIRFLOW_URL"; fi
  bash "$ROOT/scripts/container-engine.sh" status
  lb status
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  urls) urls ;;
  *) echo "usage: $0 up|down|status|urls" >&2; exit 2 ;;
esac
