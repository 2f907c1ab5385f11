"""First use of one's own data: a params.yaml block from a sample file, and landing local files.

flightdeck dataset init NAME --from FILE --target COLUMN [--task classification|regression]
flightdeck dataset land NAME FILE [FILE ...] [--namespace NS]
flightdeck dataset schema NAME [--namespace NS]      the schema in use (declared or inferred)
flightdeck dataset new-holdout NAME [--namespace NS] cut a new holdout (resets the champion comparison)
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from flightdeck.data.schema import SchemaError, Task, infer, read_raw
from flightdeck.pipeline_config import PARAMS_PATH, ConfigError, read_params

log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


def init_block(
    name: str,
    sample: Path,
    target: str,
    task: str | None = None,
    *,
    entrypoint: str | None = None,
    code_path: str | None = None,
) -> dict[str, Any]:
    """The `datasets.<name>` block for a dataset of the user's files, with the schema inferred from `sample`;
    the model is HistGradientBoosting unless `entrypoint` (`package.module:function`, found under
    `code_path`, a folder relative to the project root) names the user's own training code.

    Raises:
        ConfigError: the name is not usable as a key.
        SchemaError: the sample cannot be read, or has no column `target`.
    """
    if not _NAME.fullmatch(name):
        raise ConfigError(f"dataset name {name!r}: use lowercase letters, digits and '_' (starting with a letter)")
    frame = read_raw(sample.name, sample.read_bytes())
    schema = infer(frame, target, Task(task) if task else None)
    for name in looks_like_datetimes(frame):
        log.warning(
            "column %r holds dates/times: the schema has no datetime type for training yet, so it is a categorical "
            "of its distinct values; derive numbers from it upstream (e.g. days since an event) or drop it",
            name,
        )
    block: dict[str, Any] = {
        "source": "files",
        **schema.to_params(),
        "model_name": f"flightdeck-{name.replace('_', '-')}",
    }
    block["unseen_categories"] = "report"
    block["holdout"] = {"fraction": 0.25, "file": None}
    # Starting bounds a model must clear to be promoted at all: raise them once you know your baseline.
    floors = {"r2": 0.0} if schema.task is Task.REGRESSION else {"f1_macro": 0.5}
    train = {"entrypoint": entrypoint, "code_path": code_path} if entrypoint else {"family": "hist_gradient_boosting"}
    block["overrides"] = {
        "train": {k: v for k, v in train.items() if v},
        "gates": {"data": {"min_rows": max(10, min(100, len(frame) // 2))}, "thresholds": floors},
    }
    return block


def looks_like_datetimes(frame: Any) -> list[str]:
    """Text columns whose every value parses as an ISO 8601 date or timestamp."""
    import pandas as pd

    found = []
    for name in frame.columns:
        values = frame[name].dropna()
        if values.empty or not (values.dtype == object or pd.api.types.is_string_dtype(values)):
            continue
        parsed = pd.to_datetime(values.astype(str), format="ISO8601", errors="coerce", utc=True)
        if parsed.notna().all():
            found.append(str(name))
    return found


def write_block(name: str, block: dict[str, Any], params_path: Path | None = None, *, force: bool = False) -> Path:
    """Insert `block` as `datasets.<name>` in params.yaml, keeping the file's comments and layout.

    Raises:
        ConfigError: the dataset exists already (without `force`), or the file has no `datasets:` key.
    """
    path = params_path or PARAMS_PATH
    raw = read_params(path)
    text = path.read_text()
    if name in (raw.get("datasets") or {}):
        if not force:
            raise ConfigError(f"datasets.{name} exists already in {path}; pick another name or pass --force")
        text = _remove_block(text, name)
    match = re.search(r"^datasets:[ \t]*\n", text, flags=re.MULTILINE)
    if match is None:
        raise ConfigError(f"{path} has no top-level `datasets:` mapping to add {name!r} to")
    body = yaml.safe_dump({name: block}, sort_keys=False, default_flow_style=None)
    indented = "".join(f"  {line}\n" for line in body.splitlines())
    path.write_text(text[: match.end()] + indented + text[match.end() :])
    read_params(path)  # still valid YAML
    return path


def _remove_block(text: str, name: str) -> str:
    lines = text.splitlines(keepends=True)
    out, skipping = [], False
    for line in lines:
        if line.startswith(f"  {name}:"):
            skipping = True
            continue
        if skipping and (line.startswith("    ") or not line.strip()):
            continue
        skipping = False
        out.append(line)
    return "".join(out)


def land_files(cfg: Any, store: Any, files: list[Path]) -> list[str]:
    """Upload local CSV/Parquet files to `landing/<dataset>/` (what any upstream job may do instead).

    A file whose name is already waiting in landing with other content gets its content hash appended,
    so nothing landed earlier is overwritten.

    Raises:
        SchemaError: a file is empty or not CSV/Parquet.
    """
    from flightdeck.data.sync import prefixes

    landing = prefixes(cfg.key)["landing"]
    keys = []
    for path in files:
        payload = path.read_bytes()
        read_raw(path.name, payload)  # fail here, not in quarantine, when it is not a table at all
        key = landing + path.name
        if store.exists(key) and store.read(key) != payload:
            digest = hashlib.sha256(payload).hexdigest()[:8]
            key = f"{landing}{path.stem}-{digest}{path.suffix}"
        store.write(key, payload, metadata={"source": path.name[:200]})
        log.info("landed %s -> s3://%s/%s (%d bytes)", path, store.bucket, key, len(payload))
        keys.append(key)
    return keys


__all__ = ["init_block", "write_block", "land_files", "SchemaError"]
