"""DVC stage entry points (`python -m flightdeck.stages.<stage>`), run by `dvc repro` in a workspace.

Stages read params.yaml and files relative to the working directory DVC gives them, write only their
declared outputs and know nothing about MLflow or Airflow: the pipeline reproduces offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from flightdeck.data.schema import DatasetSchema, Task


def read_params(root: Path | None = None) -> dict[str, Any]:
    """The workspace's params.yaml (`root`, default cwd), as rendered by the sync step."""
    with open((root or Path.cwd()) / "params.yaml") as fh:
        return yaml.safe_load(fh)


def read_schema(root: Path | None = None) -> dict[str, Any]:
    """prepared/schema.json: the dataset schema's params form plus the prepare stage's counts."""
    return json.loads(((root or Path.cwd()) / "prepared" / "schema.json").read_text())


def dataset_schema(params: dict[str, Any]) -> DatasetSchema:
    """The schema the sync step rendered into the workspace's params (`data.schema`)."""
    data = params["data"]
    return DatasetSchema.from_params(
        data["schema"], target=data["target"], task=Task(data["task"]), where="data.schema"
    )
