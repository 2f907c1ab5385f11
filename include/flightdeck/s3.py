"""The one way flightdeck gets an S3 client: the Amazon provider's S3Hook on an Airflow connection.

Inside Airflow the connection (default `aws_default`) comes from Airflow's secrets backends. Outside it
(the CLI, scripts, tests, `python -m flightdeck.provisioning`), `settings.apply_defaults()`,
`provisioning.use_local_aws_default()` or `source scripts/env.sh` put it in the environment as
AIRFLOW_CONN_AWS_DEFAULT, pointing at the embedded S3 server. Either way the endpoint, region and
credentials come from the connection, never from code (DESIGN.md, convention 2).

The hook imports Airflow, which costs about 1.6 s once per process on this machine: measured here,
`python -m flightdeck.provisioning buckets --check` takes 2.0-2.5 s through the hook against 0.4 s with
bare boto3, and `flightdeck history --json` 2.0 s against 0.4 s; a process that polls (the supervisor
waiting for S3) pays it on the first call only (then 0.08 s a call). One way to S3, with the connection's
endpoint, credentials and retries, is worth that; a command line that must stay quiet on stdout uses
Airflow as a library (see cli._library_logs_to_stderr).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

# A client for quick polls (is S3 up yet?): one retry at most (botocore's `max_attempts` counts retries, not
# the first try: botocore Config docs, "retries"), giving up connecting after 3 s and reading after 10 s.
QUICK_POLL: dict[str, Any] = {"retries": {"max_attempts": 1}, "connect_timeout": 3, "read_timeout": 10}


def hook(aws_conn_id: str | None = "aws_default", *, config: dict[str, Any] | None = None) -> S3Hook:
    """The provider's S3Hook on `aws_conn_id`; `config`: botocore Config keywords (e.g. QUICK_POLL), which win
    over the connection's `config_kwargs` extra."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # heavy import, only when used

    return S3Hook(aws_conn_id=aws_conn_id, config=config)


def client(aws_conn_id: str | None = "aws_default", *, config: dict[str, Any] | None = None) -> Any:
    """A boto3 S3 client built by `hook(aws_conn_id, config=config)` (boto3 clients are untyped: Any)."""
    return hook(aws_conn_id, config=config).get_conn()
