# Flightdeck: `make help` lists the targets. Everything runs on the embedded one-machine platform by default.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
ENV := source scripts/env.sh &&
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install up down status urls demo test test-celery test-fast lint lock bench bench-serving bench-serving-tabular bench-retrain bench-deploy bench-data-scale bench-batch-predict bench-serving-capture bench-executors land-batch clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

# --compile-bytecode: every task, DVC stage and test process imports pandas, scikit-learn and MLflow;
# without .pyc files (uv writes none by default, and PYTHONDONTWRITEBYTECODE keeps Python from caching
# them) each of those processes compiles the same sources again, seconds of CPU each.
$(VENV)/.installed: requirements.txt pyproject.toml
	@bash scripts/install-system.sh
	@command -v uv >/dev/null || python3 -m pip install -q uv
	@test -x $(PY) || uv venv -q --python 3.11 $(VENV)
	@echo "installing Python packages from requirements.txt (pinned lock) ..."
	@uv pip install -q --compile-bytecode --python $(PY) -r requirements.txt
	@uv pip install -q --compile-bytecode --python $(PY) --no-deps -e .
	@touch $@

install: $(VENV)/.installed ## system packages (Debian), the venv from the lock, the flightdeck package

up: install ## start the platform (S3, MLflow, Airflow, Docker engine + registry, load balancer); safe to repeat
	@$(ENV) $(PY) -m flightdeck.supervisor up

down: ## stop everything the platform started (data stays in .flightdeck/)
	@$(ENV) $(PY) -m flightdeck.supervisor down

status: ## list the platform's services and whether they answer
	@$(ENV) $(PY) -m flightdeck.supervisor status

urls: ## print the UI links and credentials
	@$(ENV) $(PY) -m flightdeck.supervisor urls

demo: up ## the main job: platform up -> retrain -> deploy -> a live prediction through the load balancer
	@$(ENV) $(PY) scripts/demo.py

# What CI runs (.ci/run): every test on the embedded platform (LocalExecutor), then, when no PYTEST_ARGS narrow
# the run, the Celery mode's CI share (CELERY_CI_TESTS, kept small for CI's time; `make test-celery` and
# `FLIGHTDECK_EXECUTOR=celery make test PYTEST_ARGS=tests/faults` run the rest by hand).
CELERY_CI_TESTS ?= tests/e2e/test_celery_mode.py \
	tests/faults/test_celery_faults.py::test_a_worker_killed_mid_task_is_retried_on_a_live_worker
test: up ## install, start (or reuse) the platform, run every test; then the Celery mode's share (stops the platform)
	@$(ENV) $(PY) -m pytest -p no:cacheprovider -ra --durations=25 --timeout=1200 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): a failure, not a pass" >&2; fi; \
	exit $$rc
	@$(if $(PYTEST_ARGS),true,$(MAKE) --no-print-directory test-celery CELERY_TESTS="$(CELERY_CI_TESTS)")

# Celery mode: the same platform with Airflow on Postgres, Redis and Celery workers (its own state folder,
# the same ports: the embedded platform is stopped first). Runs the retrain and deploy e2e suites there and
# the Celery-only tests (marker celery), then stops that platform.
CELERY_TESTS ?= tests/e2e/test_celery_mode.py tests/e2e/test_retrain.py tests/e2e/test_deploy.py
test-celery: install ## the retrain and deploy e2e suites and the Celery-only tests on FLIGHTDECK_EXECUTOR=celery
	@$(ENV) $(PY) -m flightdeck.supervisor down >/dev/null
	@export FLIGHTDECK_EXECUTOR=celery FLIGHTDECK_STATE_DIR= FLIGHTDECK_WORKSPACE_DIR=; $(ENV) \
	$(PY) -m flightdeck.supervisor up && \
	$(PY) -m pytest -p no:cacheprovider -ra --durations=10 --timeout=1200 $(CELERY_TESTS) $(PYTEST_ARGS); rc=$$?; \
	$(PY) -m flightdeck.supervisor down; exit $$rc

test-fast: install ## the tests that need no running platform (DAG integrity and unit tests)
	@$(ENV) $(PY) -m pytest -p no:cacheprovider -ra tests/dags tests/unit $(PYTEST_ARGS)

lint: install ## ruff check and ruff format --check (the one formatter; `ruff format .` fixes the second)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

lock: ## recompile requirements.txt from requirements.in (uv resolves in seconds; pip would backtrack)
	uv pip compile requirements.in --python-version 3.11 -o requirements.txt

land-batch: up ## land the next batch of raw data in S3 (BATCH=degraded|malformed for the bad ones)
	@$(ENV) $(PY) scripts/land_batch.py $(if $(BATCH),--kind $(BATCH),)

bench: bench-serving bench-serving-tabular bench-retrain bench-deploy bench-data-scale bench-batch-predict bench-serving-capture ## every benchmark (prints figures)

bench-serving: up ## our model server vs `mlflow models serve`
	@$(ENV) $(PY) bench/serving/run.py

bench-serving-tabular: install ## a categorical HistGradientBoosting pipeline: ours vs mlflow serve, MLServer, BentoML
	@$(ENV) $(PY) bench/serving_tabular/run.py

bench-retrain: up ## retrain DAG vs the same steps as a plain script
	@$(ENV) $(PY) bench/retrain/run.py

bench-deploy: up ## requests failed during blue/green, rollback and canary under constant load
	@$(ENV) $(PY) bench/deploy/run.py

bench-data-scale: up ## 10k/100k/1M-row datasets through land -> sync -> check -> train, beside the pandas/fit floor
	@$(ENV) $(PY) bench/data_scale/run.py

bench-batch-predict: up ## batch_predict of 1M rows (Parquet, CSV) from S3: rows/s and peak RSS beside the evaluator alone
	@$(ENV) $(PY) bench/batch_predict/run.py

bench-serving-capture: up ## the model server with capture on vs off at 1 row: the throughput cost
	@$(ENV) $(PY) bench/serving_capture/run.py

bench-executors: install ## N parallel retrains: LocalExecutor vs Celery with 1 and 2 workers (restarts the platform in each mode; leaves it down)
	@$(ENV) $(PY) bench/executors/run.py $(if $(RUNS),--runs $(RUNS),)

.PHONY: compose-e2e
compose-e2e: install ## docker-compose.yaml for real: build, up (healthy), retrain + deploy via its REST API, a prediction, down; phase times
	@$(PY) scripts/compose/e2e.py $(COMPOSE_E2E_ARGS)

clean: down ## stop the platform and delete its state (all local data!)
	rm -rf .flightdeck
