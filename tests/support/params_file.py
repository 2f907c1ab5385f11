"""Run a block with params.yaml changed as a user would change it, then put the file back byte for byte.

The platform's tasks read the project's params.yaml when they run (the monitor and continuous-deploy settings
included), so an e2e test that needs `monitor.on_drift.retrain` or `continuous_deploy.enabled` on sets it here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import yaml

from flightdeck.pipeline_config import PARAMS_PATH, deep_merge


@contextmanager
def params_changed(changes: Mapping[str, Any]) -> Iterator[None]:
    """params.yaml with `changes` deep-merged in (e.g. {"continuous_deploy": {"enabled": True}}) inside the
    block; the original text (comments included) is restored on the way out, failed or not."""
    original = PARAMS_PATH.read_text()
    try:
        PARAMS_PATH.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(original), dict(changes)), sort_keys=False))
        yield
    finally:
        PARAMS_PATH.write_text(original)
