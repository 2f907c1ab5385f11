"""flightdeck.s3: the one way to an S3 client, and provisioning's errors as exit codes."""

from __future__ import annotations

import json

import pytest

from flightdeck import provisioning, s3


@pytest.fixture()
def connection(monkeypatch: pytest.MonkeyPatch) -> str:
    endpoint = "http://127.0.0.1:9"  # discard port: nothing is contacted to build a client
    conn = {
        "conn_type": "aws",
        "login": "k",
        "password": "s",
        "extra": {"endpoint_url": endpoint, "region_name": "eu-west-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    return endpoint


def test_the_client_comes_from_the_connection(connection: str) -> None:
    client = s3.client()
    assert client.meta.endpoint_url == connection
    assert client.meta.region_name == "eu-west-1"


def test_the_quick_poll_config_reaches_the_client(connection: str) -> None:
    config = s3.client(config=s3.QUICK_POLL).meta.config
    assert (config.connect_timeout, config.read_timeout) == (3, 10)
    assert config.retries["total_max_attempts"] == 2  # botocore: max_attempts counts retries, the first try aside


def test_provisioning_errors_become_one_line_on_stderr_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(check_only: bool = False) -> list[str]:
        raise provisioning.ProvisioningError("missing buckets: b1")

    monkeypatch.setattr(provisioning, "ensure_buckets", missing)
    assert provisioning.main(["buckets", "--check"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == "python -m flightdeck.provisioning buckets: missing buckets: b1"
