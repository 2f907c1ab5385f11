"""Provisioning helpers for the embedded platform: flightdeck.supervisor calls them in its own process;
the command line serves docker-compose and shells.

    python -m flightdeck.provisioning buckets [--check]   create (or check) the platform's S3 buckets
    python -m flightdeck.provisioning airflow-password    the generated admin password
    python -m flightdeck.provisioning wait-airflow        wait until scheduler and dag processor report healthy

Runs outside Airflow (before it exists): S3 is reached through flightdeck.s3 on the aws_default connection
that `use_local_aws_default()` puts in the environment. The functions raise ProvisioningError; only
`main()` turns it into a message on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

from flightdeck import s3, settings
from flightdeck.errors import FlightdeckError


class ProvisioningError(FlightdeckError):
    """The platform is not (yet) in the state asked for: buckets missing, Airflow not healthy in time."""


def ensure_buckets(check_only: bool = False) -> list[str]:
    """Create the platform's buckets (settings.Settings.buckets) if missing; return the names created.

    One quick call (s3.QUICK_POLL: connect 3 s, read 10 s, one retry at most), so flightdeck.supervisor can poll
    it while S3 starts. Raises ProvisioningError naming the missing buckets when `check_only`, and
    botocore's errors (EndpointConnectionError, ClientError) when S3 does not answer.
    """
    client = s3.client(config=s3.QUICK_POLL)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    missing = [b for b in settings.load().buckets if b not in existing]
    if check_only:
        if missing:
            raise ProvisioningError(f"missing buckets: {', '.join(missing)}")
        return []
    for bucket in missing:
        client.create_bucket(Bucket=bucket)
    return missing


def aws_connection_json(endpoint_url: str | None = None) -> str:
    """The aws_default connection as Airflow JSON, pointing every AWS client at the local S3 server
    (the Python twin of scripts/env.sh, for processes started without it)."""
    s = settings.load()
    return settings.aws_connection_json(
        os.environ.get("AWS_ACCESS_KEY_ID", settings.LOCAL_S3_ACCESS_KEY),
        os.environ.get("AWS_SECRET_ACCESS_KEY", settings.LOCAL_S3_SECRET_KEY),
        endpoint_url or s.s3_endpoint,
        s.aws_region,
    )


def use_local_aws_default() -> None:
    """Outside Airflow and env.sh (scripts, tests): let the provider's aws_default reach the local S3."""
    os.environ.setdefault("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json())


def airflow_password(airflow_home: Path | None = None) -> str:
    """The generated admin password of Airflow's simple auth manager, read from
    `<airflow_home>/simple_auth_manager_passwords.json.generated` (default: the state dir's airflow/).

    Raises FileNotFoundError before Airflow's first start, KeyError when the file has no admin."""
    home = airflow_home or settings.load().state_dir / "airflow"
    data = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
    return data["admin"]


def wait_airflow(timeout: float) -> None:
    """Block until every Airflow component reports healthy (the API answers before the scheduler is ready).

    Polls /api/v2/monitor/health every 2 s for up to `timeout` seconds; raises ProvisioningError with
    the last answer when metadatabase, scheduler and dag processor are not all healthy by then."""
    url = settings.load().airflow_url + "/api/v2/monitor/health"
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                last = json.load(resp)
            parts = ("metadatabase", "scheduler", "dag_processor")
            if all((last.get(p) or {}).get("status") == "healthy" for p in parts):
                print("airflow: scheduler and dag processor healthy")
                return
        except OSError:
            pass
        time.sleep(2)
    raise ProvisioningError(f"airflow components not healthy after {timeout:.0f} s: {last}")


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring): 0 on success, 1 with the error on stderr."""
    parser = argparse.ArgumentParser(prog="python -m flightdeck.provisioning")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("buckets")
    b.add_argument("--check", action="store_true")
    sub.add_parser("airflow-password")
    w = sub.add_parser("wait-airflow")
    w.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    use_local_aws_default()  # run with or without env.sh (compose, a shell): aws_default goes to the local S3
    try:
        if args.cmd == "buckets":
            created = ensure_buckets(check_only=args.check)
            print("buckets created: " + (", ".join(created) if created else "none (all present)"))
        elif args.cmd == "airflow-password":
            print(airflow_password())
        elif args.cmd == "wait-airflow":
            wait_airflow(args.timeout)
    except ProvisioningError as exc:
        print(f"{parser.prog} {args.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
