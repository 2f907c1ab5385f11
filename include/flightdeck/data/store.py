"""Thin S3 adapter over the Amazon provider's S3Hook, from flightdeck.s3 (credentials come from an Airflow
connection).

Every failure to reach the object store is turned into ServiceUnavailable naming S3 and its endpoint,
so a task log says which service is down instead of a botocore stack trace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from flightdeck import s3
from flightdeck import settings as settings_mod
from flightdeck.reachability import ServiceUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """The connection's resolved AWS keys (what DVC's S3 remote is configured with); token for STS only."""

    access_key: str | None
    secret_key: str | None
    token: str | None


class ObjectStore:
    """One bucket (default: the data bucket), reached through flightdeck.s3.hook(aws_conn_id).

    Every method raises ServiceUnavailable, naming S3 and its endpoint, when the call fails in botocore.
    """

    def __init__(self, bucket: str | None = None, *, aws_conn_id: str | None = "aws_default") -> None:
        self.settings = settings_mod.load()
        self.bucket = bucket or self.settings.data_bucket
        self.aws_conn_id = aws_conn_id
        self.hook = s3.hook(aws_conn_id)

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL: the connection's `endpoint_url`, else FLIGHTDECK_S3_ENDPOINT."""
        return self.hook.conn_config.endpoint_url or self.settings.s3_endpoint

    def _unavailable(self, action: str, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(
            "S3", self.endpoint, f"{action} s3://{self.bucket} failed: {type(exc).__name__}: {exc}"
        )

    def ping(self) -> None:
        """Fail fast with a clear message when the store or the bucket is not there.

        Raises ServiceUnavailable when HeadBucket fails (no server, no bucket, no access)."""
        try:
            self.hook.get_conn().head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError, EndpointConnectionError) as exc:
            raise self._unavailable("head_bucket", exc) from exc

    def credentials(self) -> Credentials:
        """The keys the hook's session resolved from the connection (or the default AWS credential chain)."""
        creds = self.hook.get_credentials()
        return Credentials(creds.access_key, creds.secret_key, creds.token)

    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix`, sorted. Raises ServiceUnavailable when S3 cannot be listed."""
        try:
            return sorted(self.hook.list_keys(bucket_name=self.bucket, prefix=prefix) or [])
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"list {prefix}", exc) from exc

    def exists(self, key: str) -> bool:
        """True when the object `key` exists. Raises ServiceUnavailable when S3 cannot be asked."""
        try:
            return bool(self.hook.check_for_key(key, bucket_name=self.bucket))
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"head {key}", exc) from exc

    def read(self, key: str) -> bytes:
        """The object's whole body. Raises ServiceUnavailable when it cannot be read (missing key included)."""
        try:
            obj = self.hook.get_key(key, bucket_name=self.bucket)
            return obj.get()["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"get {key}", exc) from exc

    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """Put `data` at `key` (replacing it), with user `metadata` (x-amz-meta-*) if given.

        Raises ServiceUnavailable when the put fails."""
        try:
            extra = {"Metadata": metadata} if metadata else None
            self.hook.get_conn().put_object(Bucket=self.bucket, Key=key, Body=data, **(extra or {}))
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"put {key}", exc) from exc

    def metadata(self, key: str) -> dict[str, str]:
        """The object's user metadata (x-amz-meta-* without the prefix). Raises ServiceUnavailable when the
        head fails (missing key included)."""
        try:
            return dict(self.hook.head_object(key, bucket_name=self.bucket).get("Metadata") or {})
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"head {key}", exc) from exc

    def move(self, src: str, dst: str, metadata: dict[str, str] | None = None) -> None:
        """Copy then delete, so a crash in between leaves the object in both places, never in none.

        `metadata` replaces the object's user metadata when given. Raises ServiceUnavailable when either
        call fails."""
        try:
            conn = self.hook.get_conn()
            kwargs: dict[str, object] = {}
            if metadata is not None:
                kwargs = {"Metadata": metadata, "MetadataDirective": "REPLACE"}
            conn.copy_object(Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src}, **kwargs)
            conn.delete_object(Bucket=self.bucket, Key=src)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"move {src} -> {dst}", exc) from exc
        log.info("moved s3://%s/%s -> s3://%s/%s", self.bucket, src, self.bucket, dst)
