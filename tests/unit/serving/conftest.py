"""Small real models saved as MLflow model directories (no tracking server needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:  # serving/ is a top-level package next to include/
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.model_examples import save_breast_cancer_model, save_mixed_type_model  # noqa: E402


@pytest.fixture(scope="session")
def lr_model(tmp_path_factory: pytest.TempPathFactory):
    return save_breast_cancer_model(tmp_path_factory.mktemp("lr") / "model", "lr")


@pytest.fixture(scope="session")
def rf_model(tmp_path_factory: pytest.TempPathFactory):
    return save_breast_cancer_model(tmp_path_factory.mktemp("rf") / "model", "rf", n_estimators=20)


@pytest.fixture(scope="session")
def mixed_model(tmp_path_factory: pytest.TempPathFactory):
    return save_mixed_type_model(tmp_path_factory.mktemp("mixed") / "model")


def _tabular(factory: pytest.TempPathFactory, name: str, estimator, **options):
    from tests.support.model_examples import save_tabular_model

    return save_tabular_model(factory.mktemp(name) / "model", estimator, **options)


@pytest.fixture(scope="session")
def hgb_classifier(tmp_path_factory: pytest.TempPathFactory):
    """HGB with native categoricals, 3 string labels, a datetime column in the signature (dropped by the pipeline)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    est = HistGradientBoostingClassifier(max_iter=60, random_state=0)
    return _tabular(tmp_path_factory, "hgb-clf", est, with_datetime=True)


@pytest.fixture(scope="session")
def hgb_regressor(tmp_path_factory: pytest.TempPathFactory):
    from sklearn.ensemble import HistGradientBoostingRegressor

    est = HistGradientBoostingRegressor(max_iter=60, random_state=0)
    return _tabular(tmp_path_factory, "hgb-reg", est, task="regression")


@pytest.fixture(scope="session")
def onehot_logistic(tmp_path_factory: pytest.TempPathFactory):
    from sklearn.linear_model import LogisticRegression

    est = LogisticRegression(max_iter=2000)
    return _tabular(tmp_path_factory, "lr-onehot", est, encoding="onehot", scale=True)


@pytest.fixture(scope="session")
def onehot_ridge(tmp_path_factory: pytest.TempPathFactory):
    from sklearn.linear_model import Ridge

    return _tabular(tmp_path_factory, "ridge", Ridge(), task="regression", encoding="onehot", scale=True)


@pytest.fixture(scope="session")
def forest_bool_labels(tmp_path_factory: pytest.TempPathFactory):
    from sklearn.ensemble import RandomForestClassifier

    est = RandomForestClassifier(n_estimators=15, random_state=0, n_jobs=1)
    return _tabular(tmp_path_factory, "rf-bool", est, task="bool")


@pytest.fixture(scope="session")
def forest_regressor(tmp_path_factory: pytest.TempPathFactory):
    from sklearn.ensemble import RandomForestRegressor

    est = RandomForestRegressor(n_estimators=15, random_state=0, n_jobs=1)
    return _tabular(tmp_path_factory, "rf-reg", est, task="regression")
