#!/bin/sh
# The compose stack's Postgres (scripts/compose/Dockerfile, target postgres). On an empty $PGDATA: initdb,
# listen on every address with password auth, create the airflow and mlflow users and databases (passwords
# from AIRFLOW_DB_PASSWORD / MLFLOW_DB_PASSWORD). Then the server runs in the foreground as PID 1, so
# `docker stop` (SIGTERM) is a smart shutdown.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${AIRFLOW_DB_PASSWORD:=airflow}"
: "${MLFLOW_DB_PASSWORD:=mlflow}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "postgres-entrypoint: initdb in $PGDATA"
  initdb -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  # a private server on the Unix socket only: the healthcheck (TCP) stays red until the users exist
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  psql -v ON_ERROR_STOP=1 -U postgres -d postgres -q \
    -v airflow_pw="$AIRFLOW_DB_PASSWORD" -v mlflow_pw="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE USER airflow PASSWORD :'airflow_pw';
CREATE DATABASE airflow OWNER airflow;
CREATE USER mlflow PASSWORD :'mlflow_pw';
CREATE DATABASE mlflow OWNER mlflow;
SQL
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgres-entrypoint: users and databases airflow, mlflow created"
fi
exec postgres -D "$PGDATA"
