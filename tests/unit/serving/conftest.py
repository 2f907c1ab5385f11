"""Small real models saved as MLflow model directories (no tracking server needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:  # serving/ is a top-level package next to include/
    sys.path.insert(0, str(REPO_ROOT))

from serving.examples import save_breast_cancer_model, save_mixed_type_model  # noqa: E402


@pytest.fixture(scope="session")
def lr_model(tmp_path_factory: pytest.TempPathFactory):
    return save_breast_cancer_model(tmp_path_factory.mktemp("lr") / "model", "lr")


@pytest.fixture(scope="session")
def rf_model(tmp_path_factory: pytest.TempPathFactory):
    return save_breast_cancer_model(tmp_path_factory.mktemp("rf") / "model", "rf", n_estimators=20)


@pytest.fixture(scope="session")
def mixed_model(tmp_path_factory: pytest.TempPathFactory):
    return save_mixed_type_model(tmp_path_factory.mktemp("mixed") / "model")
