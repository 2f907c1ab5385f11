"""Landing the next batch into S3 (what an upstream producer would do; `make land-batch` calls it)."""

from __future__ import annotations

import logging
import re

from flightdeck.data import generate
from flightdeck.data.store import ObjectStore
from flightdeck.data.sync import prefixes
from flightdeck.pipeline_config import DatasetConfig

log = logging.getLogger(__name__)

KINDS = ("good", "degraded", "malformed")
_SEQ = re.compile(r"batch-(\d+)")


def next_seq(store: ObjectStore, name: str) -> int:
    """1 + the highest batch number seen in landing, processed or quarantine (names never repeat)."""
    seen = [0]
    p = prefixes(name)
    for prefix in (p["landing"], p["processed"], p["quarantine"]):
        for key in store.list(prefix):
            match = _SEQ.search(key.rsplit("/", 1)[-1])
            if match:
                seen.append(int(match.group(1)))
    return max(seen) + 1


def land(
    cfg: DatasetConfig,
    store: ObjectStore,
    kind: str = "good",
    malformed_kind: str = "missing_column",
    seq: int | None = None,
) -> str:
    """Write batch number `seq` (default: the next one) of the given kind to the landing prefix."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    seq = seq or next_seq(store, cfg.key)
    if kind == "good":
        payload = generate.to_csv_bytes(generate.good_batch(cfg, seq))
    elif kind == "degraded":
        payload = generate.to_csv_bytes(generate.degraded_batch(cfg, seq))
    else:
        payload = generate.malformed_batch(cfg, seq, malformed_kind)
    key = f"{prefixes(cfg.key)['landing']}batch-{seq:04d}.csv"
    meta = {"kind": kind if kind != "malformed" else f"malformed:{malformed_kind}", "seq": str(seq)}
    store.write(key, payload, metadata=meta)
    log.info("landed s3://%s/%s (%s, %d bytes)", store.bucket, key, meta["kind"], len(payload))
    return key
