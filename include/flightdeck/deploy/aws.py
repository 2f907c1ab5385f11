"""Thin adapters over the Amazon provider's hooks (the only place deploy code touches AWS clients; S3
clients come from flightdeck.s3)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def client(service: str, aws_conn_id: str | None = "aws_default", region_name: str | None = None) -> Any:
    """A boto3 client built by the provider's AwsBaseHook (connection, endpoint, region, retries)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=aws_conn_id, client_type=service, region_name=region_name).get_conn()


def ecr_login(aws_conn_id: str | None = "aws_default", region_name: str | None = None) -> tuple[str, dict]:
    """(registry host, docker auth_config) from EcrHook's temporary credentials."""
    from airflow.providers.amazon.aws.hooks.ecr import EcrHook

    creds = EcrHook(aws_conn_id=aws_conn_id, region_name=region_name).get_temporary_credentials()[0]
    host = creds.proxy_endpoint.removeprefix("https://").removeprefix("http://")
    return host, {"username": creds.username, "password": creds.password}


def ensure_ecr_repository(name: str, aws_conn_id: str | None = "aws_default", region_name: str | None = None) -> str:
    """Create the repository if needed (immutable tags, scan on push); returns its URI."""
    from airflow.providers.amazon.aws.hooks.ecr import EcrHook

    ecr = EcrHook(aws_conn_id=aws_conn_id, region_name=region_name).conn
    try:
        repo = ecr.create_repository(
            repositoryName=name, imageTagMutability="IMMUTABLE", imageScanningConfiguration={"scanOnPush": True}
        )["repository"]
        log.info("created ECR repository %s (immutable tags, scan on push)", repo["repositoryUri"])
    except ecr.exceptions.RepositoryAlreadyExistsException:
        repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    return repo["repositoryUri"]
