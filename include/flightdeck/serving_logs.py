"""Serving container logs of the local target, kept after the containers are gone.

A container's log lives only as long as the container; the local target removes a revision's containers
when it retires or rolls it back. `collect` copies each serving container's log (docker logs, with
timestamps) into the state folder and into S3 beside the Airflow task logs:

    <state_dir>/logs/serving/<target>/<revision>/<container>.log
    s3://<logs bucket>/serving/<target>/<revision>/<container>.log

(On ECS the awslogs driver sends them to CloudWatch Logs instead.) Run it by hand or on a schedule with
`flightdeck logs --target local`; `save_container` is the hook to call just before removing a container.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flightdeck import settings as settings_mod

log = logging.getLogger(__name__)

L_TARGET, L_REV = "org.flightdeck.target", "org.flightdeck.revision"


def save_container(
    container: Any, target: str, dest: Path, s3: Any | None = None, bucket: str | None = None
) -> dict[str, Any]:
    """Write one container's whole log (docker keeps it all: overwrite, never append) locally and to S3."""
    revision = container.labels.get(L_REV, "unknown")
    body: bytes = container.logs(timestamps=True)
    path = dest / target / revision / f"{container.name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    key = f"serving/{target}/{revision}/{container.name}.log"
    if s3 is not None and bucket:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/plain")
    return {
        "container": container.name,
        "revision": revision,
        "bytes": len(body),
        "path": str(path),
        "s3": f"s3://{bucket}/{key}" if s3 is not None and bucket else "",
    }


def collect(
    target: str = "local",
    *,
    docker_client: Any | None = None,
    s3: Any | None = None,
    bucket: str | None = None,
    dest: Path | None = None,
) -> list[dict[str, Any]]:
    """Save the logs of every serving container of `target` (running or stopped)."""
    import docker

    s = settings_mod.load()
    client = docker_client or docker.from_env()
    dest = dest or s.state_dir / "logs" / "serving"
    bucket = bucket if bucket is not None else s.logs_bucket
    saved = []
    for c in client.containers.list(all=True, filters={"label": [f"{L_TARGET}={target}"]}):
        saved.append(save_container(c, target, dest, s3, bucket))
        log.info("saved %d bytes of %s's log to %s", saved[-1]["bytes"], c.name, saved[-1]["s3"] or saved[-1]["path"])
    return saved
