"""An ObjectStore on the platform's real S3 with a private state folder (for the DVC workspace), for tests
that run the data sync in their own namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flightdeck.data.store import ObjectStore


def private_store(state_dir: Path) -> Iterator[ObjectStore]:
    """Yield an ObjectStore with FLIGHTDECK_STATE_DIR set to `state_dir` while it is in use; fails (never
    skips) when S3 does not answer."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTDECK_STATE_DIR", str(state_dir))
        store = ObjectStore()
        store.ping()
        yield store
