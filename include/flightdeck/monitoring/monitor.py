"""The monitor: each live model version's recent traffic against its baseline, and its live quality on late labels.

One check per watched version (`check`), called by the monitor DAG's mapped task:

1. the captured window (monitoring/capture.read_captures: the last `monitor.window_hours` of requests);
2. the version's baseline, `baseline/profile.json` of the MLflow run that trained it;
3. data quality and drift per feature and on the predictions (monitoring/drift.compare, thresholds from
   params.yaml `monitor.drift`);
4. ground truth: labels under `labels/<model>/` joined to the captures of `monitor.live_quality.lookback_hours`,
   scored against the training run's `gates.thresholds` (monitoring/ground_truth);
5. the report, JSON for machines and HTML for people, written to
   `s3://<data bucket>/monitoring/<model>/<version>/<window end>/report.{json,html}` and logged as an MLflow run
   of the experiment `flightdeck-monitoring` (metrics per feature, the two files as artifacts); the version's
   `monitoring/<model>/<version>/latest.json` points at it (the Deployments page and `flightdeck monitor` read it).

Watched versions: what the deployment records say serves on each target, plus any version of a watched model
with captures in the window (the canary's, the old one's while it drains).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from html import escape
from typing import Any, TypedDict

from flightdeck import settings as settings_mod
from flightdeck.data.schema import Task
from flightdeck.deploy import records as rec
from flightdeck.deploy.targets import TARGETS
from flightdeck.errors import FlightdeckError
from flightdeck.monitoring import capture as capture_mod
from flightdeck.monitoring import drift as drift_mod
from flightdeck.monitoring import ground_truth as gt
from flightdeck.monitoring import report as report_mod
from flightdeck.monitoring.baseline import PROFILE_ARTIFACT, DataProfile
from flightdeck.monitoring.config import MonitorConfig

log = logging.getLogger(__name__)

MONITORING_PREFIX = "monitoring"
EXPERIMENT = "flightdeck-monitoring"


class BaselineMissing(FlightdeckError, LookupError):
    """The model version's training run has no baseline/profile.json (trained before baselines existed)."""


class Verdict(StrEnum):
    """A watched version's overall state in one monitor run."""

    OK = "ok"
    WARN = "warn"  # moderate shifts, nothing over the alert thresholds
    DRIFT = "drift"  # features or predictions drifted, or a data-quality violation
    INSUFFICIENT_DATA = "insufficient_data"  # fewer captured rows than monitor.min_rows
    NO_BASELINE = "no_baseline"


class WatchedVersionDict(TypedDict):
    """WatchedVersion as JSON (XCom between the monitor DAG's tasks)."""

    model_name: str
    model_version: str
    targets: list[str]


@dataclass(frozen=True)
class WatchedVersion:
    """A model version the monitor checks, and the targets whose records say it serves there."""

    model_name: str
    model_version: str
    targets: tuple[str, ...] = ()

    def to_dict(self) -> WatchedVersionDict:
        """JSON-ready."""
        return WatchedVersionDict(
            model_name=self.model_name, model_version=self.model_version, targets=list(self.targets)
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WatchedVersion:
        """The inverse of to_dict."""
        return cls(str(d["model_name"]), str(d["model_version"]), tuple(d.get("targets") or ()))


@dataclass(frozen=True)
class MonitorSummary:
    """What one check found: the short form the DAG's later tasks, the Deployments page and the CLI show."""

    model_name: str
    model_version: str
    targets: list[str]
    window_start: str  # ISO-8601 UTC
    window_end: str
    rows: int  # captured rows in the window
    verdict: str  # Verdict value
    drifted_features: list[str] = field(default_factory=list)
    prediction_drift: bool = False
    quality_violations: list[str] = field(default_factory=list)  # data-quality findings, one line each
    live_quality: dict[str, Any] | None = None  # ground_truth.LiveQuality.to_dict() of this version
    dataset: str = ""  # the training lineage (params.yaml dataset and namespace) of the version
    namespace: str = ""
    previous_verdict: str = ""  # the verdict of the version's check before this window ("" = its first)
    report_json: str = ""  # s3:// URIs
    report_html: str = ""
    mlflow_run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MonitorSummary:
        """The inverse of to_dict (unknown keys from newer writers ignored)."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def drifted(self) -> bool:
        """True when the window drifted (features, predictions or data quality)."""
        return self.verdict == Verdict.DRIFT

    @property
    def newly_drifted(self) -> bool:
        """True when this window drifted and the window before did not: what alerts and starts a retrain (a
        drift that persists is in every report, but announced once)."""
        return self.drifted and self.previous_verdict != Verdict.DRIFT

    @property
    def below_live_threshold(self) -> bool:
        """True when late labels put a gated metric on the wrong side of its threshold."""
        return bool(self.live_quality and self.live_quality.get("verdict") == "below_threshold")


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def captured_versions(s3: Any, bucket: str, model_name: str) -> list[str]:
    """Versions of `model_name` that have any capture (the `capture/<model>/<version>/` prefixes)."""
    versions = _prefixes(s3, bucket, f"{capture_mod.CAPTURE_PREFIX}/{model_name}/")
    # "unknown": a server that could not tell its version; no registry version to judge it against
    return sorted((v for v in versions if v.isdigit()), key=lambda v: (len(v), v))


def watched_versions(
    store: rec.RecordStore,
    s3: Any,
    bucket: str,
    *,
    model_name: str = "",
    targets: Sequence[str] = TARGETS,
    now: datetime | None = None,
    window: timedelta = timedelta(hours=1),
) -> list[WatchedVersion]:
    """What serves now by the records of `targets` (only `model_name` when given), plus every version of those
    models with captures inside the window ending `now`. Sorted by model name and version."""
    now = now or datetime.now(UTC)
    serving: dict[tuple[str, str], set[str]] = {}
    for target in targets:
        current = store.current(target)
        for served in rec.served_models(current) if current else []:
            if (
                served["name"]
                and served["version"] not in ("", "0")
                and (not model_name or served["name"] == model_name)
            ):
                serving.setdefault((served["name"], str(served["version"])), set()).add(target)
    for name in {n for n, _ in serving} | ({model_name} if model_name else set()):
        for version in captured_versions(s3, bucket, name):
            if (name, version) not in serving and capture_mod.read_captures(
                s3, bucket, capture_mod.CAPTURE_PREFIX, name, version, now - window, now
            ).shape[0]:
                serving[(name, version)] = set()
    return [
        WatchedVersion(name, version, tuple(sorted(t)))
        for (name, version), t in sorted(serving.items(), key=lambda kv: (kv[0][0], len(kv[0][1]), kv[0][1]))
    ]


@dataclass(frozen=True)
class TrainingFacts:
    """What the version's training run says about how to judge it: its task, thresholds and baseline."""

    run_id: str
    task: Task
    thresholds: dict[str, float]
    baseline: DataProfile | None
    dataset: str = ""  # the training run's dataset and namespace: the lineage a drift retrain reruns
    namespace: str = ""


def training_facts(model_name: str, model_version: str, tracking_uri: str) -> TrainingFacts:
    """The training run of the registry version: task (tag flightdeck.task), `gates.thresholds.*` params and
    the baseline artifact (None when the run has none). Raises mlflow's MlflowException for an unknown version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from flightdeck.tracking import TAG_DATASET, TAG_NAMESPACE, TAG_TASK

    client = MlflowClient(tracking_uri=tracking_uri)
    run_id = client.get_model_version(model_name, model_version).run_id
    run = client.get_run(run_id)
    prefix = "gates.thresholds."
    thresholds = {k[len(prefix) :]: float(v) for k, v in run.data.params.items() if k.startswith(prefix)}
    baseline = None
    try:
        import mlflow.artifacts

        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{PROFILE_ARTIFACT}")
        baseline = DataProfile.from_dict(json.loads(text))
    except (MlflowException, OSError) as e:
        log.warning("no baseline for %s v%s (run %s): %s", model_name, model_version, run_id, e)
    task = Task(run.data.tags.get(TAG_TASK) or (baseline.task if baseline else Task.CLASSIFICATION.value))
    return TrainingFacts(
        run_id=run_id,
        task=task,
        thresholds=thresholds,
        baseline=baseline,
        dataset=run.data.tags.get(TAG_DATASET, ""),
        namespace=run.data.tags.get(TAG_NAMESPACE, ""),
    )


def _put(s3: Any, bucket: str, key: str, body: bytes, content_type: str) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    return f"s3://{bucket}/{key}"


def latest_key(model_name: str, model_version: str) -> str:
    """`monitoring/<model>/<version>/latest.json`: the newest MonitorSummary of the version."""
    return f"{MONITORING_PREFIX}/{model_name}/{model_version}/latest.json"


def check(
    watched: WatchedVersion,
    cfg: MonitorConfig,
    *,
    s3: Any,
    settings: settings_mod.Settings | None = None,
    now: datetime | None = None,
    window_hours: float | None = None,
    log_to_mlflow: bool = True,
) -> MonitorSummary:
    """Check one watched version (see the module docstring) and write its report; returns its summary.

    `window_hours` overrides `cfg.window_hours`. Raises what S3 and MLflow raise when they do not answer (the
    task retries); a version without a baseline is reported as `no_baseline`, not raised."""
    s = settings or settings_mod.load()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start = now - timedelta(hours=window_hours or cfg.window_hours)
    name, version = watched.model_name, watched.model_version
    facts = training_facts(name, version, s.mlflow_uri)
    window = capture_mod.read_captures(s3, s.data_bucket, capture_mod.CAPTURE_PREFIX, name, version, start, now)
    log.info("%s v%s: %d captured rows between %s and %s", name, version, len(window), _iso(start), _iso(now))

    lookback_start = now - timedelta(hours=cfg.live_quality.lookback_hours)
    history = (
        window
        if lookback_start >= start
        else capture_mod.read_captures(
            s3, s.data_bucket, capture_mod.CAPTURE_PREFIX, name, version, lookback_start, now
        )
    )
    labels = gt.read_labels(s3, s.data_bucket, name, since=lookback_start)
    joined = gt.join_labels(history, labels)
    quality = gt.live_quality(joined, facts.task, facts.thresholds, cfg.live_quality.min_labeled_rows).get(version)
    log.info(
        "%s v%s: %d labels landed, %d joined to captures%s",
        name,
        version,
        len(labels),
        len(joined),
        f"; live {quality.metrics} ({quality.verdict})" if quality else "",
    )

    base = f"{MONITORING_PREFIX}/{name}/{version}/{_stamp(now)}"
    drift_report = None
    if facts.baseline is None:
        verdict, drifted, prediction_drift, violations = Verdict.NO_BASELINE, [], False, []
    else:
        features = window.drop(columns=[c for c in capture_mod.BASE_COLUMNS if c in window.columns])
        drift_report = drift_mod.compare(features, facts.baseline, cfg.drift, min_rows=cfg.min_rows)
        verdict = Verdict.DRIFT if drift_report.flagged else Verdict(drift_report.status.value)
        drifted = drift_report.drifted_features
        prediction_drift = drift_report.prediction_drifted
        violations = drift_report.quality.violations
    latest = latest_summary(s3, s.data_bucket, name, version)
    summary = MonitorSummary(
        previous_verdict=_previous_verdict(latest, _iso(now)),
        model_name=name,
        model_version=version,
        targets=list(watched.targets),
        window_start=_iso(start),
        window_end=_iso(now),
        rows=len(window),
        verdict=verdict.value,
        drifted_features=drifted,
        prediction_drift=prediction_drift,
        quality_violations=violations,
        live_quality=quality.to_dict() if quality else None,
        dataset=facts.dataset,
        namespace=facts.namespace,
    )
    document = {
        "summary": summary.to_dict(),
        "drift": drift_report.to_dict() if drift_report else None,
        "training_run_id": facts.run_id,
        "thresholds": facts.thresholds,
    }
    html = render_html(summary, drift_report, quality, facts.thresholds)
    json_uri = _put(
        s3, s.data_bucket, f"{base}/report.json", json.dumps(document, indent=1).encode(), "application/json"
    )
    html_uri = _put(s3, s.data_bucket, f"{base}/report.html", html.encode(), "text/html; charset=utf-8")
    run_id = _log_run(summary, drift_report, quality, document, html, s.mlflow_uri) if log_to_mlflow else ""
    final = MonitorSummary.from_dict(
        {**summary.to_dict(), "report_json": json_uri, "report_html": html_uri, "mlflow_run_id": run_id}
    )
    if latest is None or latest.window_end <= final.window_end:  # a late check of an older window leaves it
        _put(s3, s.data_bucket, latest_key(name, version), json.dumps(final.to_dict()).encode(), "application/json")
    log.info(
        "%s v%s: %s%s; report %s",
        name,
        version,
        final.verdict,
        f" (drifted: {', '.join(drifted)})" if drifted else "",
        html_uri,
    )
    return final


def render_html(
    summary: MonitorSummary,
    drift_report: drift_mod.DriftReport | None,
    quality: gt.LiveQuality | None,
    thresholds: Mapping[str, float],
) -> str:
    """The report page: monitoring/report.to_html's drift page for the window, followed by the live-quality
    section (metrics on every joined label, then per hour, against the gates' thresholds)."""
    title = f"{summary.model_name} v{summary.model_version}: {summary.window_start} to {summary.window_end}"
    context = {
        "verdict": summary.verdict,
        "targets": ", ".join(summary.targets) or "none recorded",
        "training lineage": f"{summary.dataset or '?'} (namespace {summary.namespace or 'main'})",
    }
    if drift_report is not None:
        page = report_mod.to_html(drift_report, title=title, context=context)
    else:
        page = (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head>'
            f"<body><h1>{escape(title)}</h1><p>No baseline: the version's training run has no "
            f"{escape(PROFILE_ARTIFACT)}, so its traffic cannot be compared.</p></body></html>"
        )
    return page.replace("</body>", _quality_html(quality, thresholds) + "</body>", 1)


def _previous_verdict(latest: MonitorSummary | None, window_end: str) -> str:
    """The verdict before the window ending `window_end`, from the version's `latest` summary: its verdict, or
    the one it carried forward when it is this same window's (a retried check); "" when the version has none."""
    if latest is None:
        return ""
    return latest.previous_verdict if latest.window_end == window_end else latest.verdict


def _quality_html(quality: gt.LiveQuality | None, thresholds: Mapping[str, float]) -> str:
    if quality is None:
        return '<h2>Live quality</h2><p class="live-quality">No labels joined to this version\'s captures yet.</p>'
    metrics = sorted(quality.metrics)
    head = "".join(f"<th>{escape(m)}{f' (threshold {thresholds[m]})' if m in thresholds else ''}</th>" for m in metrics)
    rows = [("all labels", quality.labeled_rows, quality.metrics)] + [
        (p.hour, p.rows, p.metrics) for p in quality.series
    ]
    body = "".join(
        f"<tr><td>{escape(str(when))}</td><td>{n}</td>"
        + "".join(f"<td>{values.get(m, float('nan')):.4f}</td>" for m in metrics)
        + "</tr>"
        for when, n, values in rows
    )
    below = "".join(
        f"<li>{escape(m)} {v['value']:.4f} is past its threshold {v['threshold']}</li>"
        for m, v in quality.below_threshold.items()
    )
    return (
        f'<h2>Live quality</h2><p class="live-quality">{quality.labeled_rows} labeled rows; verdict '
        f"<b>{escape(quality.verdict)}</b></p>{f'<ul>{below}</ul>' if below else ''}"
        f"<table><tr><th>hour (UTC)</th><th>labels</th>{head}</tr>{body}</table>"
    )


def _log_run(
    summary: MonitorSummary,
    drift_report: drift_mod.DriftReport | None,
    quality: gt.LiveQuality | None,
    document: Mapping[str, Any],
    html: str,
    tracking_uri: str,
) -> str:
    """One MLflow run per check in experiment flightdeck-monitoring: tags for the version, metrics (rows, PSI per
    feature, live metrics), the report files as artifacts. Returns the run id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    metrics: dict[str, float] = {"rows": float(summary.rows), "drifted_features": float(len(summary.drifted_features))}
    if drift_report is not None:
        for feature in drift_report.features:
            if feature.psi is not None:
                metrics[f"psi.{feature.name}"] = float(feature.psi)
    if quality is not None:
        metrics.update({f"live_{k}": float(v) for k, v in quality.metrics.items()})
    run_name = f"{summary.model_name}-v{summary.model_version}-{summary.window_end}"
    tags = {
        "model_name": summary.model_name,
        "model_version": summary.model_version,
        "verdict": summary.verdict,
        "targets": ",".join(summary.targets),
    }
    from mlflow import MlflowClient

    experiment = MlflowClient(tracking_uri).get_experiment_by_name(EXPERIMENT)
    earlier = MlflowClient(tracking_uri).search_runs(
        [experiment.experiment_id],
        f"tags.model_name = '{summary.model_name}' and tags.model_version = '{summary.model_version}' "
        f"and tags.window_end = '{summary.window_end}'",
        max_results=1,
    )
    tags["window_end"] = summary.window_end
    # a retried check of the same window logs into the run its earlier try made, not a second one
    with mlflow.start_run(run_id=earlier[0].info.run_id if earlier else None, run_name=run_name, tags=tags) as run:
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN is not a metric MLflow keeps
        mlflow.log_text(json.dumps(document, indent=1), "report.json")
        mlflow.log_text(html, "report.html")
        return run.info.run_id


def _prefixes(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The names one level below `prefix` (S3 CommonPrefixes with Delimiter "/")."""
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        out += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
    return out


def latest_summary(s3: Any, bucket: str, model_name: str, model_version: str) -> MonitorSummary | None:
    """The newest summary of one version (its latest.json), or None when it has not been checked yet."""
    try:
        body = s3.get_object(Bucket=bucket, Key=latest_key(model_name, model_version))["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return MonitorSummary.from_dict(json.loads(body))


def latest_summaries(s3: Any, bucket: str, model_name: str = "") -> list[MonitorSummary]:
    """The newest summary of every checked version (of `model_name`, or of every model), by name and version.
    Reads one latest.json per version (listing model and version prefixes, never the reports)."""
    names = [model_name] if model_name else _prefixes(s3, bucket, f"{MONITORING_PREFIX}/")
    out = []
    for name in names:
        for version in _prefixes(s3, bucket, f"{MONITORING_PREFIX}/{name}/"):
            summary = latest_summary(s3, bucket, name, version)
            if summary is not None:
                out.append(summary)
    return sorted(out, key=lambda m: (m.model_name, len(m.model_version), m.model_version))


@dataclass(frozen=True)
class MonitorAlert:
    """A notification about a watched version (flightdeck.notify's channels send it like a failure)."""

    dag_id: str
    task_id: str
    run_id: str
    model_name: str
    model_version: str
    kind: str  # "drift" | "live_quality"
    lines: tuple[str, ...]

    @property
    def subject(self) -> str:
        """One line, e.g. `[flightdeck] drift on flightdeck-model v3`."""
        what = "drift" if self.kind == "drift" else "live quality below threshold"
        return f"[flightdeck] {what} on {self.model_name} v{self.model_version}"

    def text(self) -> str:
        """The subject, then one line per finding and the report's address."""
        return "\n".join([self.subject, *self.lines])


def alerts(summaries: Iterable[MonitorSummary], *, dag_id: str, run_id: str) -> list[MonitorAlert]:
    """One alert per version that drifted in this window after a window that did not, and one per version below
    its live-quality threshold."""
    out = []
    for m in summaries:
        where = f"targets {', '.join(m.targets) or '(none recorded)'}; report {m.report_html}"
        if m.newly_drifted:
            lines = [f"drifted features: {', '.join(m.drifted_features) or 'none'}"]
            if m.prediction_drift:
                lines.append("the predictions drifted")
            lines += m.quality_violations
            out.append(MonitorAlert(dag_id, "notify", run_id, m.model_name, m.model_version, "drift", (*lines, where)))
        if m.below_live_threshold and m.live_quality:
            lines = [
                f"{metric} {v['value']:.4f} past threshold {v['threshold']} "
                f"on {m.live_quality['labeled_rows']} labeled rows"
                for metric, v in m.live_quality["below_threshold"].items()
            ]
            out.append(
                MonitorAlert(dag_id, "notify", run_id, m.model_name, m.model_version, "live_quality", (*lines, where))
            )
    return out


def rollback_conf(summaries: Iterable[MonitorSummary]) -> list[dict[str, str]]:
    """Deploy DAG confs that put `previous` back (blue_green) on every target where a version below its
    live-quality threshold serves."""
    confs = []
    for m in summaries:
        if m.below_live_threshold:
            for target in m.targets:
                confs.append(
                    {"model": "previous", "model_name": m.model_name, "target": target, "strategy": "blue_green"}
                )
    return confs


def read_report(s3: Any, uri: str) -> bytes:
    """The bytes of a report written by `check` (an s3://bucket/key URI). Raises ValueError for another URI."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
