"""Deployment records in a scratch bucket of the local S3 server, for tests whose records must stay
out of the platform's real deploy history."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flightdeck.deploy import records as rec


@contextmanager
def scratch_records(bucket: str) -> Iterator[rec.RecordStore]:
    """A RecordStore on `bucket` (created if missing); the bucket is emptied afterwards."""
    from flightdeck import s3 as s3_mod

    s3 = s3_mod.client()
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)
    try:
        yield rec.RecordStore(s3, bucket)
    finally:
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
