"""The drift report rendered for people (one self-contained HTML page) and for machines (JSON)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from flightdeck.data.schema import ColumnSpec, ColumnType, DatasetSchema, Task
from flightdeck.monitoring.baseline import profile_frame
from flightdeck.monitoring.config import DriftThresholds
from flightdeck.monitoring.drift import DriftReport, compare
from flightdeck.monitoring.report import COLOURS, to_html, to_json

EVIL = "<script>alert(1)</script>"
SCHEMA = DatasetSchema(
    columns=(
        ColumnSpec("income", ColumnType.NUMBER),
        ColumnSpec(EVIL, ColumnType.NUMBER),
        ColumnSpec("plan", ColumnType.CATEGORICAL, categories=("basic", "pro")),
        ColumnSpec("label", ColumnType.CATEGORICAL, categories=("no", "yes")),
    ),
    target="label",
    task=Task.CLASSIFICATION,
)


def _frame(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "income": rng.normal(50, 10, rows),
            EVIL: rng.normal(0, 1, rows) + shift,
            "plan": np.where(rng.random(rows) < 0.3, "pro", "basic"),
            "label": np.where(rng.random(rows) < 0.4, "yes", "no"),
        }
    )


@pytest.fixture(scope="module")
def report() -> DriftReport:
    train = _frame(2000, 0)
    profile = profile_frame(train, SCHEMA, train["label"].to_numpy())
    window = _frame(500, 1, shift=1.0).drop(columns="label")
    window.loc[:49, "plan"] = '"><img src=x onerror=alert(2)>'  # an unseen category that is markup too
    return compare(window, profile, DriftThresholds(), predictions=None)


def test_html_names_the_drifted_features_in_the_summary_and_colours_them(report):
    assert report.drifted_features == [EVIL, "plan"]
    page = to_html(report, title="Drift: model x v3", context={"window": "2026-12-07 13:00-14:00"})
    summary = re.search(r"Drifted features: <b>(.*?)</b>", page)
    assert summary and summary.group(1) == "&lt;script&gt;alert(1)&lt;/script&gt;, plan"
    assert page.count(f'background:{COLOURS[report.status]}">drift</span>') == 3  # overall + 2 features
    assert "2026-12-07 13:00-14:00" in page and "income" in page


def test_html_escapes_every_value_from_the_data(report):
    page = to_html(report, title=EVIL, context={EVIL: EVIL})
    assert "<script" not in page and "<img" not in page and "onerror=alert(2)>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page  # the unseen category, shown escaped


def test_html_is_self_contained(report):
    page = to_html(report)
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    assert not re.search(r"<(script|link|img|iframe)\b", page) and "http" not in page


def test_json_is_the_report_for_machines(report):
    text = to_json(report)
    assert DriftReport.from_dict(json.loads(text)) == report
    assert json.loads(text)["drifted_features"] == [EVIL, "plan"]
