"""Thin S3 adapter over the Amazon provider's S3Hook (credentials come from an Airflow connection).

Every failure to reach the object store is turned into ServiceUnavailable naming S3 and its endpoint,
so a task log says which service is down instead of a botocore stack trace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from flightdeck import settings as settings_mod
from flightdeck.reachability import ServiceUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    access_key: str | None
    secret_key: str | None
    token: str | None


class ObjectStore:
    """One bucket, reached through S3Hook(aws_conn_id)."""

    def __init__(self, bucket: str | None = None, *, aws_conn_id: str | None = "aws_default") -> None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # heavy import, only when used

        self.settings = settings_mod.load()
        self.bucket = bucket or self.settings.data_bucket
        self.aws_conn_id = aws_conn_id
        self.hook = S3Hook(aws_conn_id=aws_conn_id)

    @property
    def endpoint(self) -> str:
        return self.hook.conn_config.endpoint_url or self.settings.s3_endpoint

    def _unavailable(self, action: str, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(
            "S3", self.endpoint, f"{action} s3://{self.bucket} failed: {type(exc).__name__}: {exc}"
        )

    def ping(self) -> None:
        """Fail fast with a clear message when the store or the bucket is not there."""
        try:
            self.hook.get_conn().head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError, EndpointConnectionError) as exc:
            raise self._unavailable("head_bucket", exc) from exc

    def credentials(self) -> Credentials:
        creds = self.hook.get_credentials()
        return Credentials(creds.access_key, creds.secret_key, creds.token)

    def list(self, prefix: str) -> list[str]:
        try:
            return sorted(self.hook.list_keys(bucket_name=self.bucket, prefix=prefix) or [])
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"list {prefix}", exc) from exc

    def exists(self, key: str) -> bool:
        try:
            return bool(self.hook.check_for_key(key, bucket_name=self.bucket))
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"head {key}", exc) from exc

    def read(self, key: str) -> bytes:
        try:
            obj = self.hook.get_key(key, bucket_name=self.bucket)
            return obj.get()["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"get {key}", exc) from exc

    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        try:
            extra = {"Metadata": metadata} if metadata else None
            self.hook.get_conn().put_object(Bucket=self.bucket, Key=key, Body=data, **(extra or {}))
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"put {key}", exc) from exc

    def metadata(self, key: str) -> dict[str, str]:
        try:
            return dict(self.hook.head_object(key, bucket_name=self.bucket).get("Metadata") or {})
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"head {key}", exc) from exc

    def move(self, src: str, dst: str, metadata: dict[str, str] | None = None) -> None:
        """Copy then delete, so a crash in between leaves the object in both places, never in none."""
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
