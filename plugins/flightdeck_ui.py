"""The Deployments page inside the Airflow UI (Airflow 3 plugin: a FastAPI app + a nav entry).

Per deploy target: the live version (asked through the load balancer), the traffic split and health
(from the target's backend), the monitor's newest verdict on each serving version (drifted features, live
quality, a link to its report), and the deployment history from the records in S3 with outcomes and
rollback reasons, each row linking to its deploy DAG run and to the model's MLflow run. The data
comes from flightdeck.lineage (the same answers as the `flightdeck` CLI). Mounted at /flightdeck/ on
the API server; every route requires a logged-in Airflow user (Bearer token or the UI's cookie).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates

from flightdeck import lineage
from flightdeck import settings as settings_mod
from flightdeck.deploy import health as health_mod
from flightdeck.deploy import records as rec
from flightdeck.deploy.targets import backend_for

log = logging.getLogger(__name__)

AWS_CONN_ID = "aws_default"
HISTORY_LIMIT = 50  # history events shown per target
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates") / "flightdeck"))


def _store() -> rec.RecordStore:
    from flightdeck import s3

    return rec.RecordStore(s3.client(AWS_CONN_ID), settings_mod.load().deploy_bucket)


def _targets(store: rec.RecordStore) -> list[str]:
    """Targets that have records (local first: it always exists on the embedded platform)."""
    found = set()
    for page in store.s3.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix="records/", Delimiter="/"
    ):
        found.update(p["Prefix"].split("/")[1] for p in page.get("CommonPrefixes", []))
    return sorted(found | {"local"}, key=lambda t: (t != "local", t))


def _run_links(rows: list[dict[str, Any]], s: settings_mod.Settings) -> None:
    """MLflow run links for history rows (one get_run per distinct run: the UI needs the experiment)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=s.mlflow_uri)
    experiments: dict[str, str | None] = {}
    for row in rows:
        run_id = row["model_run_id"]
        row["mlflow_run_id"] = run_id
        row["mlflow_url"] = ""
        if not run_id:
            continue
        if run_id not in experiments:
            try:
                experiments[run_id] = client.get_run(run_id).info.experiment_id
            except MlflowException:
                experiments[run_id] = None
        if experiments[run_id] is not None:
            row["mlflow_url"] = lineage.mlflow_run_url(s.mlflow_uri, experiments[run_id], run_id)


def _monitoring(store: rec.RecordStore, target: str, bucket: str) -> list[dict[str, Any]]:
    """The newest monitor summary of each model version the target's current record says serves (none yet: [])."""
    from flightdeck.monitoring import monitor

    current = store.current(target)
    served = sorted({(m["name"], str(m["version"])) for m in (rec.served_models(current) if current else [])})
    out = []
    for name, version in served:
        try:
            summary = monitor.latest_summary(store.s3, bucket, name, version)
        except Exception as e:  # S3 or a malformed latest.json: a note on the row, not a broken page
            log.warning("monitor summary of %s v%s unreadable: %s", name, version, e)
            out.append({"model_name": name, "model_version": version, "error": f"{type(e).__name__}: {e}"})
            continue
        if summary is not None:
            row = summary.to_dict()
            row["report_url"] = "report?" + urlencode({"uri": summary.report_html}) if summary.report_html else ""
            out.append(row)
    return out


def _relative(url: str) -> str:
    """Airflow links relative to the page's host: the page is served by that same API server."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def collect(store: rec.RecordStore | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain data (also served as JSON at /flightdeck/api/deployments)."""
    s = settings_mod.load()
    store = store or _store()
    targets = []
    for target in _targets(store):
        backend = backend_for if target == "local" else None
        st = lineage.status(target, store, settings=s, backend_factory=backend)
        if target != "local" and st["deployment"]:  # no live probe for remote targets: the recorded split
            st["traffic"] = {"weights": st["deployment"]["weights"], "health": {}, "error": None, "recorded": True}
        rows = lineage.history(store, target, s.airflow_url, HISTORY_LIMIT)  # events, newest first
        _run_links(rows, s)
        for row in rows:
            row["airflow_url"] = _relative(row["airflow_url"])
            row["age"] = lineage.age(row["at"])
            row["digest_short"] = re.sub(r"^sha256:", "", row["digest"])[:12]
        verdict = health_mod.of_status(st)  # the same verdict as `flightdeck status`
        st["verdict"] = verdict.to_dict()
        if st["deployment"]:
            st["deployment"]["airflow_url"] = _relative(st["deployment"]["airflow_url"])
        targets.append(
            {
                "name": target,
                "status": st,
                "health": verdict.state.value,
                "health_reason": verdict.reason,
                "history": rows,
                "rollbacks": sum(1 for r in rows if r["event"] == rec.EventKind.ROLLED_BACK),
                "monitoring": _monitoring(store, target, s.data_bucket),
            }
        )
    return {"targets": targets, "mlflow_url": s.mlflow_uri, "generated_at": rec.now_iso()}


app = FastAPI(title="Flightdeck deployments", dependencies=[Depends(requires_authenticated())])


@app.get("/", response_class=HTMLResponse)
def deployments_page(request: Request) -> HTMLResponse:
    """GET /flightdeck/: the Deployments page (templates/flightdeck/deployments.html over `collect()`)."""
    return TEMPLATES.TemplateResponse(request, "deployments.html", collect())


@app.get("/api/deployments")
def deployments_json() -> JSONResponse:
    """GET /flightdeck/api/deployments: what the page shows, as JSON (`collect()`)."""
    return JSONResponse(collect())


# The report is data from S3 served on the Airflow UI's origin: sandboxed (no script, no same-origin access,
# no outside fetches), so a page planted in the bucket cannot act with the viewer's session.
REPORT_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
}
REPORT_KEY = re.compile(r"monitoring/[A-Za-z0-9][A-Za-z0-9._-]*/[0-9]+/[0-9]{8}T[0-9]{6}Z/report\.html")


@app.get("/report", response_class=HTMLResponse)
def monitor_report(uri: str) -> HTMLResponse:
    """GET /flightdeck/report?uri=s3://<data bucket>/monitoring/<model>/<version>/<time>/report.html: a monitor
    report, sandboxed (REPORT_HEADERS); 404 for any other URI or a report that cannot be read."""
    from flightdeck import s3
    from flightdeck.monitoring import monitor

    prefix = f"s3://{settings_mod.load().data_bucket}/"
    if not uri.startswith(prefix) or not REPORT_KEY.fullmatch(uri[len(prefix) :]):
        return HTMLResponse("not a monitor report", status_code=404, headers=REPORT_HEADERS)
    try:
        body = monitor.read_report(s3.client(AWS_CONN_ID), uri).decode("utf-8", errors="replace")
    except Exception as e:  # botocore's NoSuchKey and friends: the page says so
        log.warning("monitor report %s unreadable: %s", uri, e)
        return HTMLResponse("report not found", status_code=404, headers=REPORT_HEADERS)
    return HTMLResponse(body, headers=REPORT_HEADERS)


class FlightdeckUiPlugin(AirflowPlugin):
    name = "flightdeck_ui"
    fastapi_apps = [{"app": app, "url_prefix": "/flightdeck", "name": "Flightdeck deployments"}]
    external_views = [
        {
            "name": "Deployments",
            "href": "/flightdeck/",
            "destination": "nav",
            "category": "browse",
            "url_route": "deployments",
        }
    ]
