"""A moto server standing for an AWS account, for the AWS targets' tests (moto emulates the AWS control plane:
nothing real can run it here). Each test module starts its own server on its own port."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parents[2]


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def moto_server(port: int, conn_id: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start `moto_server` on 127.0.0.1:`port` and the Airflow connection `conn_id` to it (an
    AIRFLOW_CONN_* variable); yields the endpoint URL, stops both after. Raises AssertionError when the
    port is taken or the server does not answer in 10 s."""
    assert not _answers(port), f"port {port} is taken: not starting moto there"
    proc = subprocess.Popen(  # moto's server with the sandbox's launch template fix (scripts/aws_sandbox.py)
        [sys.executable, str(ROOT / "scripts" / "aws_sandbox.py"), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        for _ in range(100):
            if _answers(port):
                break
            time.sleep(0.1)
        assert _answers(port), f"moto_server did not answer on {port}"
        endpoint = f"http://127.0.0.1:{port}"
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = connection_json(endpoint)
        yield endpoint
    finally:
        os.environ.pop(f"AIRFLOW_CONN_{conn_id.upper()}", None)
        proc.terminate()
        proc.wait(10)


def connection_json(endpoint: str) -> str:
    """The Airflow AWS connection (JSON) to the moto server at `endpoint`."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": REGION},
        }
    )


def reset(endpoint: str) -> None:
    """Forget every resource (moto's own reset API): a fresh account."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()


def _sandbox() -> Any:
    """scripts/aws_sandbox.py as a module (its moto server, clients and the RUNBOOK's prerequisites)."""
    spec = importlib.util.spec_from_file_location("aws_sandbox", ROOT / "scripts" / "aws_sandbox.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sandbox = _sandbox()
client = sandbox.client  # a plain boto3 client on the moto server (the tests' own setup and checks)


def inject_alb_metrics(endpoint: str, listener: Any, revision: str, requests: int, errors: int) -> None:
    """INJECTED: what the ALB would publish to CloudWatch for the revision's target group (moto's ALB counts
    nothing). `listener`: the backend's alb.WeightedListener (names the target group and the load balancer)."""
    dims = [
        {"Name": "TargetGroup", "Value": listener.tg_arn(revision).split(":")[-1]},
        {"Name": "LoadBalancer", "Value": listener.lb_dimension()},
    ]
    # A few seconds back, as the ALB's published minute lags: moto drops EndTime's microseconds, so a
    # datapoint from the same second as the watcher's query would fall outside it (a CI flake).
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    client(endpoint, "cloudwatch").put_metric_data(
        Namespace="AWS/ApplicationELB",
        MetricData=[
            {"MetricName": "RequestCount", "Dimensions": dims, "Value": requests, "Timestamp": now},
            {"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": dims, "Value": errors, "Timestamp": now},
        ],
    )


def ecr_revision(version: str, replicas: int = 1, **fields: Any) -> Any:
    """A RevisionSpec of model version `version` whose image is pinned by a digest made from it, in ECR;
    `fields` override the rest (env, run_id, scaling, ...)."""
    from flightdeck.deploy.backend import RevisionSpec

    digest = "sha256:" + f"{int(version):064x}"
    return RevisionSpec(
        **{
            "revision": f"v{version}-{digest[7:15]}-r{version}",
            "digest": digest,
            "image": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/flightdeck-model@{digest}",
            "model_name": "flightdeck-model",
            "model_version": version,
            "replicas": replicas,
            "env": {"MODEL_VERSION": version},
            **fields,
        }
    )
