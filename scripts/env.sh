# The embedded platform's environment (sourced by the platform scripts, the Makefile's test target and .ci/run).
# Every value can be overridden from the caller's environment or from a .env file at the repo root
# (.env.example lists them). The S3 keys are local-only credentials for the embedded SeaweedFS server.
FLIGHTDECK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -f "$FLIGHTDECK_ROOT/.env" ]; then set -a; source "$FLIGHTDECK_ROOT/.env"; set +a; fi
export FLIGHTDECK_ROOT
export FLIGHTDECK_STATE_DIR=${FLIGHTDECK_STATE_DIR:-$FLIGHTDECK_ROOT/.flightdeck}
export FLIGHTDECK_S3_PORT=${FLIGHTDECK_S3_PORT:-8333}
export FLIGHTDECK_MLFLOW_PORT=${FLIGHTDECK_MLFLOW_PORT:-5001}
export FLIGHTDECK_AIRFLOW_PORT=${FLIGHTDECK_AIRFLOW_PORT:-8080}
export FLIGHTDECK_S3_ENDPOINT=${FLIGHTDECK_S3_ENDPOINT:-http://127.0.0.1:$FLIGHTDECK_S3_PORT}
export FLIGHTDECK_AIRFLOW_URL=${FLIGHTDECK_AIRFLOW_URL:-http://127.0.0.1:$FLIGHTDECK_AIRFLOW_PORT}
export FLIGHTDECK_REGISTRY=${FLIGHTDECK_REGISTRY:-127.0.0.1:5050}
export FLIGHTDECK_LB_URL=${FLIGHTDECK_LB_URL:-http://127.0.0.1:8090}
export FLIGHTDECK_DATA_BUCKET=${FLIGHTDECK_DATA_BUCKET:-flightdeck-data}
export FLIGHTDECK_MLFLOW_BUCKET=${FLIGHTDECK_MLFLOW_BUCKET:-flightdeck-mlflow}
export FLIGHTDECK_LOGS_BUCKET=${FLIGHTDECK_LOGS_BUCKET:-flightdeck-logs}
export FLIGHTDECK_DEPLOY_BUCKET=${FLIGHTDECK_DEPLOY_BUCKET:-flightdeck-deployments}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-flightdeck}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-flightdeck-secret}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-http://127.0.0.1:$FLIGHTDECK_MLFLOW_PORT}
# A missing bucket or a down server makes the MLflow client retry for minutes; fail fast and let Airflow retry.
export MLFLOW_HTTP_REQUEST_MAX_RETRIES=${MLFLOW_HTTP_REQUEST_MAX_RETRIES:-2}
export MLFLOW_HTTP_REQUEST_TIMEOUT=${MLFLOW_HTTP_REQUEST_TIMEOUT:-60}
export PATH="$FLIGHTDECK_ROOT/.venv/bin:$PATH"
# The Amazon provider's aws_default connection for Airflow, tasks, scripts and tests alike: every AWS client
# (S3Hook, DVC-side helpers, remote logging) goes to the local S3 server unless this is overridden.
export AIRFLOW_CONN_AWS_DEFAULT=${AIRFLOW_CONN_AWS_DEFAULT:-"{\"conn_type\": \"aws\", \"login\": \"$AWS_ACCESS_KEY_ID\", \"password\": \"$AWS_SECRET_ACCESS_KEY\", \"extra\": {\"endpoint_url\": \"$FLIGHTDECK_S3_ENDPOINT\", \"region_name\": \"$AWS_DEFAULT_REGION\"}}"}
