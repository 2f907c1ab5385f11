"""The Deployments page (plugins/flightdeck_ui.py) in headless Chromium against the running Airflow.

Logs in like the UI does (POST /auth/token, the `_token` cookie), renders /flightdeck/ and checks what
a person sees against the sources: the live version against the load balancer, the history rows against
the deployment records in S3, the run links against MLflow. The Airflow nav entry (/plugin/deployments)
must embed the page. Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
import requests

from flightdeck import s3
from flightdeck.deploy import records as rec
from tests.support.browser import ARTIFACTS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def page(browser, platform):
    from selenium.webdriver.common.by import By

    browser.get(f"{platform.airflow_url}/flightdeck/")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "deployments.png"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Deployments", browser.page_source[:2000]
    return browser


def test_the_page_needs_a_login(platform):
    assert requests.get(f"{platform.airflow_url}/flightdeck/", timeout=30).status_code == 401
    assert requests.get(f"{platform.airflow_url}/flightdeck/api/deployments", timeout=30).status_code == 401


def test_live_version_traffic_and_health_match_the_load_balancer(page, platform):
    from selenium.webdriver.common.by import By

    local = page.find_element(By.ID, "target-local")
    served = requests.get(platform.lb_url + "/version", timeout=5).json()
    live = local.find_element(By.CSS_SELECTOR, "[data-field=live]").text
    assert f"{served['model_name']} v{served['model_version']}" in live and served["run_id"] in live
    assert local.find_element(By.CSS_SELECTOR, "[data-field=health]").text == "healthy"
    rows = local.find_elements(By.CSS_SELECTOR, "[data-field=traffic] tr[data-revision]")
    split = {r.get_attribute("data-revision"): r.find_elements(By.TAG_NAME, "td")[1].text for r in rows}
    assert "100%" in split.values(), split
    serving = [r for r in rows if r.find_elements(By.TAG_NAME, "td")[1].text == "100%"][0]
    healthy, total = serving.find_elements(By.TAG_NAME, "td")[2].text.split("/")
    assert healthy == total and int(total) >= 1
    shot = ARTIFACTS / "deployments.png"
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


def test_history_rows_match_the_deployment_records(page, platform):
    """History is the records' event log, newest first: each row an event of a run, with its detail."""
    from selenium.webdriver.common.by import By

    records = rec.RecordStore(s3.client(), platform.deploy_bucket).list("local")
    assert records, "the history test needs at least one deploy on the local target"
    events = rec.events(records)[:50]
    rows = page.find_elements(By.CSS_SELECTOR, "#target-local tr.history-row")
    # a deploy may write events between rendering and listing: allow for a few of difference
    assert len(rows) >= min(50, len(events)) - 4
    known = {(e.kind.value, r.deployment_id, e.at): (e, r) for e, r in events}
    matched = 0
    for row in rows:
        when = row.find_element(By.TAG_NAME, "td").get_attribute("title")
        found = known.get((row.get_attribute("data-event"), row.get_attribute("data-deployment"), when))
        if found is None:
            continue
        matched += 1
        event, r = found
        link = row.find_element(By.CSS_SELECTOR, "a.dag-run")
        assert link.text == r.run_id
        assert link.get_attribute("href") == f"{platform.airflow_url}/dags/deploy/runs/{quote(r.run_id, safe='')}"
        detail = " ".join(row.find_element(By.CSS_SELECTOR, "td.detail").text.split())
        if event.by:  # replaced: by which run
            assert detail == f"replaced by {event.by_run_id or event.by}"
        elif event.reason:  # rolled back or failed: why
            assert " ".join(event.reason.split())[:60] in detail
        else:
            assert detail == ""
    assert matched >= len(rows) - 4
    times = [row.find_element(By.TAG_NAME, "td").get_attribute("title") for row in rows]
    assert times == sorted(times, reverse=True)  # newest first
    assert any(e.kind is rec.EventKind.ROLLED_BACK for e, _ in events) == bool(
        page.find_elements(By.CSS_SELECTOR, "#target-local tr.history-row[data-event=rolled_back]")
    )


def test_mlflow_links_point_at_existing_runs(page, platform):
    from selenium.webdriver.common.by import By

    links = page.find_elements(By.CSS_SELECTOR, "#target-local a.mlflow-run")
    assert links, "no history row links an MLflow run"
    for href in {a.get_attribute("href") for a in links[:3]}:
        run_id = href.rsplit("/", 1)[1]
        resp = requests.get(f"{platform.mlflow_uri}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=30)
        assert (
            resp.status_code == 200
            and href.split("/#/experiments/")[1].split("/")[0] == resp.json()["run"]["info"]["experiment_id"]
        )


def test_the_airflow_nav_entry_embeds_the_page(browser, platform):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{platform.airflow_url}/plugin/deployments")
    frame = WebDriverWait(browser, 60).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[src*='/flightdeck/']"))
    )
    browser.switch_to.frame(frame)
    WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.ID, "target-local")))
    browser.switch_to.default_content()
    browser.save_screenshot(str(ARTIFACTS / "deployments-in-airflow-nav.png"))
