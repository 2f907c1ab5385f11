# Flightdeck images: one Dockerfile, one target per image. Classic syntax only (the legacy builder
# builds it: no BuildKit mounts, heredocs or `# syntax=` lines).
#
#   docker build --target serving --build-arg MODEL_DIR=<model dir in the context> \
#       --build-arg MODEL_NAME=... --build-arg MODEL_VERSION=... --build-arg RUN_ID=... \
#       --build-arg DATA_VERSION=... --build-arg GIT_SHA=... -t flightdeck-serving:TAG .
#
# MODEL_DIR is an MLflow model directory as `mlflow.artifacts.download_artifacts("models:/NAME/VERSION")`
# writes it. Without it the image holds no model and fetches MODEL_URI (models:/NAME@champion) from
# MLFLOW_TRACKING_URI at start, which needs `--build-arg WITH_MLFLOW=1` (MLflow client + pandas, a
# bigger image). include/flightdeck/images.py picks WITH_MLFLOW from the model's MLmodel: the lean image
# for sklearn-flavor models (served natively, no pandas), WITH_MLFLOW=1 for pyfunc models and user code. Run-time env: IMAGE_TAG, IMAGE_DIGEST, SERVING_WORKERS, SERVING_THREADS, PORT.

# ---- serving image ----

# Dependencies in a venv; pip and build tools stay in this stage.
FROM python:3.11-slim AS serving-deps
ARG WITH_MLFLOW=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
COPY serving/requirements.txt serving/requirements-mlflow.txt /tmp/req/
# --no-compile + dropping test suites keeps the image small; the warm-up import below writes
# bytecode only for the modules the server actually loads (fast start without shipping all .pyc).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile -r /tmp/req/requirements.txt \
 && if [ "$WITH_MLFLOW" = "1" ]; then /opt/venv/bin/pip install --no-compile -r /tmp/req/requirements-mlflow.txt; fi \
 && /opt/venv/bin/pip uninstall -y -q pip setuptools \
 && find /opt/venv -type d -name tests -prune -exec rm -rf {} + \
 && find /opt/venv -name '*.pyi' -delete
COPY serving /app/serving
RUN cd /app && /opt/venv/bin/python -c "import serving.app, sklearn.linear_model, sklearn.ensemble, sklearn.tree, sklearn.pipeline, sklearn.preprocessing, sklearn.compose, sklearn.impute, skops.io, cloudpickle, gunicorn.workers.gthread" \
 && /opt/venv/bin/python -m compileall -q /app/serving

# The runtime: the base image, the venv, the app and the model. No compilers, not root.
FROM python:3.11-slim AS serving
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin serving
COPY --from=serving-deps /opt/venv /opt/venv
COPY --from=serving-deps /app/serving /app/serving
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    PORT=8080 \
    SERVING_MODEL_DIR=/opt/model \
    SERVING_MODEL_CACHE_DIR=/opt/model-cache \
    SERVING_WORKERS=2 \
    SERVING_THREADS=1
WORKDIR /app
ARG MODEL_DIR=serving/no-model
COPY ${MODEL_DIR} /opt/model
# Load the baked model once at build time: a model the server cannot serve fails the build, not the
# deploy. For sklearn this also stores the estimator as a pickle keyed by the model file's sha256
# (loading skops imports all of sklearn, ~3 s of every start) and compiles the modules it needs.
RUN if [ -f /opt/model/MLmodel ]; then cd /app && PYTHONDONTWRITEBYTECODE= python -m serving.model /opt/model /opt/model-cache; fi
ARG MODEL_NAME=""
ARG MODEL_VERSION=""
ARG RUN_ID=""
ARG DATA_VERSION=""
ARG GIT_SHA=""
LABEL org.opencontainers.image.title="flightdeck-serving" \
      org.opencontainers.image.description="Flightdeck model server (Flask + gunicorn)" \
      org.opencontainers.image.revision="$GIT_SHA" \
      org.opencontainers.image.version="$MODEL_NAME/$MODEL_VERSION" \
      flightdeck.model.name="$MODEL_NAME" \
      flightdeck.model.version="$MODEL_VERSION" \
      flightdeck.run_id="$RUN_ID" \
      flightdeck.data_version="$DATA_VERSION" \
      flightdeck.git_sha="$GIT_SHA"
ENV MODEL_NAME=$MODEL_NAME \
    MODEL_VERSION=$MODEL_VERSION \
    RUN_ID=$RUN_ID \
    DATA_VERSION=$DATA_VERSION \
    GIT_SHA=$GIT_SHA
USER 10001:10001
# 8080 serves; 8081 answers health checks from a thread in each worker (serving/health_port.py)
ENV SERVING_HEALTH_PORT=8081
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('SERVING_HEALTH_PORT', '8081'), timeout=2).status != 200)"]
CMD ["gunicorn", "-c", "serving/gunicorn.conf.py", "--no-control-socket", "serving.app:create_app()"]

# ---- train image ----

# The retrain DAG's train step off the worker (params.yaml train.runner: container | ecs): `dvc repro` in a
# workspace rebuilt from S3, then the MLflow run, exactly as the worker does it (flightdeck.train_runner).
# The lock (requirements.txt: the same versions as the worker) in a venv, the package on PYTHONPATH so that
# its REPO_ROOT is /opt/flightdeck (params.yaml, dvc.yaml). No git, compilers or pip in the runtime stage.
# include/flightdeck/images.py builds it content-addressed and pushes it like the serving image.
# It sits before the airflow target: the legacy builder builds every stage above the target, and the
# airflow stage installs apt packages and the lock again.
#   docker build --target train -t flightdeck-train .
FROM python:3.11-slim AS train-deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
COPY requirements.txt /tmp/req/requirements.txt
# setuptools stays (the lock pins it, and MLflow records it in a model's python_env.yaml); pip goes, as in the
# worker's uv-made venv.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile --no-deps -r /tmp/req/requirements.txt \
 && /opt/venv/bin/pip uninstall -y -q pip \
 && find /opt/venv -type d -name tests -prune -exec rm -rf {} + \
 && find /opt/venv -name '*.pyi' -delete

FROM python:3.11-slim AS train
RUN useradd --system --uid 10002 --user-group --create-home --home-dir /home/train --shell /usr/sbin/nologin train
COPY --from=train-deps /opt/venv /opt/venv
COPY params.yaml dvc.yaml /opt/flightdeck/
COPY include /opt/flightdeck/include
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/flightdeck/include \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLIGHTDECK_STATE_DIR=/tmp/flightdeck-state \
    AIRFLOW_HOME=/tmp/airflow \
    OMP_NUM_THREADS=1
LABEL org.opencontainers.image.title="flightdeck-train" \
      org.opencontainers.image.description="Flightdeck train step: dvc repro + the MLflow run (flightdeck.train_runner)"
WORKDIR /opt/flightdeck
USER 10002:10002
ENTRYPOINT ["python", "-m", "flightdeck.train_runner"]
CMD ["--help"]

# ---- airflow image ----

# The platform image: Airflow 3 (api-server, scheduler, dag-processor, triggerer), MLflow and the SeaweedFS S3
# server all run from it in docker-compose.yaml (one lock, requirements.txt). Deploy tasks build and run the
# serving image through the host's Docker socket, and start HAProxy for the local target, so the image carries
# this Dockerfile, serving/ and haproxy. The package is installed editable from /opt/flightdeck so that its
# REPO_ROOT is the project tree (build contexts, params.yaml, dvc.yaml).
#   docker build --target airflow --build-arg GIT_SHA=$(git rev-parse HEAD) -t flightdeck-airflow .
FROM python:3.11-slim AS airflow
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
    DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends haproxy git curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /opt/flightdeck/requirements.txt
# With bytecode: the processes run as uid 50000, which cannot write __pycache__ into the venv, so without .pyc
# files every scheduler, task and MLflow worker process would compile its imports from source at each start.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /opt/flightdeck/requirements.txt
COPY pyproject.toml params.yaml dvc.yaml Dockerfile .dockerignore /opt/flightdeck/
COPY include /opt/flightdeck/include
COPY serving /opt/flightdeck/serving
COPY dags /opt/flightdeck/dags
COPY plugins /opt/flightdeck/plugins
COPY scripts /opt/flightdeck/scripts
RUN /opt/venv/bin/pip install --no-deps -e /opt/flightdeck \
 && useradd --uid 50000 --gid 0 --create-home --home-dir /opt/airflow airflow \
 && mkdir -p /opt/flightdeck/state /opt/airflow/shared /opt/airflow/s3-data && chown -R 50000:0 /opt/flightdeck /opt/airflow
# the commit last: a new GIT_SHA must not invalidate the cached apt and pip layers above
ARG GIT_SHA=""
ENV PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/flightdeck/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/flightdeck/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    FLIGHTDECK_STATE_DIR=/opt/flightdeck/state \
    FLIGHTDECK_GIT_SHA=$GIT_SHA
LABEL org.opencontainers.image.title="flightdeck-airflow" \
      org.opencontainers.image.description="Flightdeck platform: Airflow 3, MLflow, SeaweedFS S3, deploy tooling" \
      org.opencontainers.image.revision="$GIT_SHA"
WORKDIR /opt/flightdeck
USER 50000:0
EXPOSE 8080
CMD ["airflow", "version"]
