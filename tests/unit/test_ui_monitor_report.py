"""The Deployments page's report route serves only monitor reports, sandboxed: a page planted in the data
bucket cannot run script with the viewer's Airflow session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

REPORT = "s3://flightdeck-data/monitoring/m/3/20261207T140000Z/report.html"


@pytest.fixture()
def ui(monkeypatch):
    import flightdeck_ui

    from flightdeck.monitoring import monitor

    served: list[str] = []

    def read_report(s3, uri):
        served.append(uri)
        return b"<html><body><script>alert(1)</script>drift</body></html>"

    monkeypatch.setattr(monitor, "read_report", read_report)
    monkeypatch.setattr("flightdeck.s3.client", lambda conn_id=None: object())
    return flightdeck_ui, served


@pytest.mark.parametrize(
    "uri",
    [
        "s3://flightdeck-data/records/local/x.json",
        "s3://flightdeck-data/monitoring/m/3/20261207T140000Z/report.json",
        "s3://flightdeck-data/monitoring/m/3/../../landing/x/report.html",
        "s3://other-bucket/monitoring/m/3/20261207T140000Z/report.html",
        "s3://flightdeck-data/monitoring/m/3/planted/report.html",
    ],
)
def test_anything_but_a_monitor_report_is_a_404_without_reading_s3(ui, uri):
    module, served = ui
    response = module.monitor_report(uri)
    assert response.status_code == 404 and served == []


def test_a_report_is_served_sandboxed(ui):
    module, served = ui
    response = module.monitor_report(REPORT)
    assert response.status_code == 200 and served == [REPORT]
    policy = response.headers["content-security-policy"]
    assert policy.startswith("sandbox;") and "default-src 'none'" in policy  # no script runs, even if present
    assert response.headers["x-content-type-options"] == "nosniff"
