"""Serving container logs survive their container: copied to the state folder and to S3 (real Docker engine,
real S3 server). A throw-away container stands in for a serving revision (same labels)."""

from __future__ import annotations

import uuid

import docker
import pytest

from flightdeck import s3 as s3_mod
from flightdeck import serving_logs

pytestmark = pytest.mark.integration


def test_collect_copies_container_logs_to_the_state_folder_and_s3(platform, tmp_path):
    client = docker.from_env()
    target, revision = f"ops-logtest-{uuid.uuid4().hex[:6]}", "v1-test"
    container = client.containers.run(
        "python:3.11-slim",
        ["python", "-c", "import sys; print('hello from serving'); print('oops', file=sys.stderr)"],
        labels={serving_logs.L_TARGET: target, serving_logs.L_REV: revision},
        detach=True,
        name=f"fd-{target}-0",
    )
    s3 = s3_mod.client()
    try:
        assert container.wait(timeout=60)["StatusCode"] == 0
        saved = serving_logs.collect(target, docker_client=client, s3=s3, bucket=platform.logs_bucket, dest=tmp_path)
        assert [(x["container"], x["revision"]) for x in saved] == [(container.name, revision)]
        local = (tmp_path / target / revision / f"{container.name}.log").read_text()
        assert "hello from serving" in local and "oops" in local
        assert local.split(" ", 1)[0].startswith("20")  # docker timestamps on every line
        key = f"serving/{target}/{revision}/{container.name}.log"
        assert saved[0]["s3"] == f"s3://{platform.logs_bucket}/{key}"
        assert s3.get_object(Bucket=platform.logs_bucket, Key=key)["Body"].read().decode() == local
    finally:
        container.remove(force=True)
        s3.delete_object(Bucket=platform.logs_bucket, Key=f"serving/{target}/{revision}/{container.name}.log")
