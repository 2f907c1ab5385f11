"""Model-endpoint API keys reach the serving containers only through a secret, and only when configured."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from flightdeck import settings
from flightdeck.deploy.backend import RevisionSpec
from flightdeck.deploy.ecs import EcsBackend, EcsConfig

SPEC = RevisionSpec(
    revision="v1-abc", image="123.dkr.ecr.us-east-1.amazonaws.com/m@sha256:ab", model_name="m", model_version="1"
)


@pytest.fixture()
def aws(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield lambda service: boto3.client(service, region_name="us-east-1")


def _container(aws, secret_arn: str) -> dict:
    cfg = EcsConfig(cluster="c", listener_arn="", vpc_id="", network_mode="bridge", api_keys_secret_arn=secret_arn)
    arn = EcsBackend(cfg, aws).register(SPEC)
    return aws("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]["containerDefinitions"][0]


def test_ecs_task_gets_the_keys_from_secrets_manager_when_configured(aws):
    secret = aws("secretsmanager").create_secret(Name="flightdeck/serving-api-keys", SecretString="k1\nk2")["ARN"]
    container = _container(aws, secret)
    assert container["secrets"] == [{"name": "SERVING_API_KEYS", "valueFrom": secret}]
    assert all("KEY" not in e["name"] for e in container.get("environment", []))  # never a plain value


def test_ecs_task_has_no_secret_by_default(aws):
    assert "secrets" not in _container(aws, "")


def test_the_ecs_secret_setting_comes_from_settings(monkeypatch):
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:flightdeck/serving-api-keys-AbCdEf"
    monkeypatch.setenv("FLIGHTDECK_SERVING_API_KEYS_SECRET_ARN", arn)
    assert settings.load().serving_api_keys_secret_arn == arn
    assert EcsConfig.from_env().api_keys_secret_arn == arn
    monkeypatch.delenv("FLIGHTDECK_SERVING_API_KEYS_SECRET_ARN")
    assert EcsConfig.from_env().api_keys_secret_arn == ""


def test_client_header_is_the_key_files_first_key(tmp_path, monkeypatch):
    monkeypatch.delenv("FLIGHTDECK_SERVING_API_KEYS_FILE", raising=False)
    assert settings.serving_client_headers() == {}
    keys = tmp_path / "keys"
    keys.write_text("# rotation: new key first\nnew-key\nold-key\n")
    monkeypatch.setenv("FLIGHTDECK_SERVING_API_KEYS_FILE", str(keys))
    assert settings.serving_client_headers() == {"Authorization": "Bearer new-key"}
