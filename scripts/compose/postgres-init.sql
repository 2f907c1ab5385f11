-- docker-compose.yaml: MLflow's backend store lives in the same Postgres as Airflow's metadata database.
CREATE DATABASE mlflow OWNER airflow;
