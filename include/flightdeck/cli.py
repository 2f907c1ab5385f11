"""`flightdeck`: ask the platform what serves where, and what changed between deployments.

    flightdeck status [--target local] [--json]     live version, traffic, deployment, model, data, image
    flightdeck diff RUN_A RUN_B [--target T] [--json]   model, data, code, params, metrics, image changes
    flightdeck history [--target local] [--limit N] [--json]   events, newest first (a redeploy and who it replaced)
    flightdeck run DAG_ID [--conf JSON] [--wait] [--timeout S]   trigger a DAG through the REST API (CI/CD)
    flightdeck clear DAG_ID RUN_ID TASK_ID [--downstream] [--wait]   the UI's "Clear" (retry, redeploy, roll back)
    flightdeck logs [--target local] [--no-upload]   save serving container logs (state folder + S3)
    flightdeck monitor [--model NAME] [--json]   the monitor's newest drift verdict and live quality per version
    flightdeck rollback [--target local] [--to RUN_ID] [--wait]   redeploy the previous good deployment by
                                                 clearing its start_new task (with downstream)
    flightdeck dataset init NAME --from FILE --target COLUMN [--task T]   infer the schema, write params.yaml
    flightdeck dataset land NAME FILE [FILE ...] [--namespace NS]   land CSV/Parquet files for the retrain DAG
    flightdeck dataset schema NAME [--namespace NS]   the schema in use (declared, or inferred and stored)
    flightdeck dataset new-holdout NAME [--namespace NS]   cut a new holdout (resets the champion comparison)

RUN_A/RUN_B are deploy DAG run ids (manual__2026-...) or deployment ids (the record file names).
Addresses come from the environment, else the repo's .env, else the embedded platform's defaults
(flightdeck.settings, the same values scripts/env.sh exports): from a plain shell the CLI talks to the
local platform. S3 credentials from AWS_* variables (the local S3's keys while S3 is on this machine);
`run`/`clear`/`rollback` log in as FLIGHTDECK_AIRFLOW_USER (default admin) with FLIGHTDECK_AIRFLOW_PASSWORD
(default: the embedded platform's generated password).
Errors a user can fix (a service down, a setting missing, an unknown name, bad arguments) are one line on
stderr that says what to set or do, never a traceback (FLIGHTDECK_DEBUG=1 shows it).
Exit code: 0 on an answer, 1 when the answer has warnings (status: something disagrees, or the health verdict,
the same as the Deployments page's, is degraded, down or unknown), the lookup failed or the run failed,
2 on bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import urlparse

from flightdeck import lineage
from flightdeck import settings as settings_mod
from flightdeck.deploy import health as health_mod
from flightdeck.deploy import records as rec
from flightdeck.deploy.targets import TARGETS
from flightdeck.errors import FlightdeckError


class CliError(FlightdeckError, RuntimeError):
    """A user-fixable problem: printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _store(s: settings_mod.Settings) -> rec.RecordStore:
    from flightdeck import s3

    return rec.RecordStore(s3.client(), s.deploy_bucket)


def _fmt_kv(d: Mapping[str, Any], indent: str = "    ") -> list[str]:
    return [f"{indent}{k}: {v}" for k, v in sorted(d.items())]


def add_verdict(st: dict[str, Any]) -> health_mod.Verdict:
    """Judge a `lineage.status` answer with the health verdict the Deployments page shows too.

    Sets st["verdict"] ({"state", "reason"}) and adds a warning when the verdict is degraded, down
    or unknown (so `status` exits 1); returns the Verdict. Raises KeyError on a malformed answer.
    """
    verdict = health_mod.of_status(st)
    st["verdict"] = verdict.to_dict()
    bad = (health_mod.HealthVerdict.DEGRADED, health_mod.HealthVerdict.DOWN, health_mod.HealthVerdict.UNKNOWN)
    if verdict.state in bad:
        st["warnings"].append(f"health {verdict.state.value}: {verdict.reason}")
    return verdict


def render_status(st: Mapping[str, Any]) -> str:
    """`flightdeck status` for people: one labelled line per fact of a `lineage.status` answer."""
    lines = [f"target {st['target']}  (checked {st['checked_at']})"]
    if st.get("verdict"):
        lines.append(f"  health    {st['verdict']['state']}  {st['verdict']['reason']}")
    live = st["live"]
    if live["ok"]:
        v = live["version"]
        lines.append(
            f"  live      {v.get('model_name')} v{v.get('model_version')}  run {v.get('run_id')}  via {live['url']}"
        )
    else:
        lines.append(f"  live      unknown ({live['error']})")
    for rev, pct in st["traffic"]["weights"].items():
        h = st["traffic"]["health"].get(rev, {})
        lines.append(
            f"  traffic   {rev}: {pct}%  {h.get('healthy', '?')}/{h.get('total', '?')} healthy  "
            f"requests {h.get('requests', 0)} 5xx {h.get('errors_5xx', 0)}"
            + (f" (retried elsewhere {h['retried']})" if h.get("retried") else "")
        )
    d = st["deployment"]
    if d:
        lines.append(f"  deployed  {d['run_id']}  {d['outcome']}  {d['strategy']}  finished {d['finished_at']}")
        lines.append(f"            {d['airflow_url']}")
        if d["rollback"]:
            lines.append(f"  rollback  {d['rollback']['failed_step']}: {d['rollback']['reason']}")
    m = st["model"]
    if m:
        lines.append(f"  model     {m['name']} v{m['version']}  aliases {', '.join(m['aliases']) or '-'}")
        lines.append(f"  mlflow    run {m['run_id']} ({m['run_name']})  {m['run_url'] or m['url']}")
        lines.append(f"  data      {m['data_version'] or '-'}  dataset {m['dataset'] or '-'}")
        lines.append(f"  code      git {m['git_sha'] or '-'} (training)")
        if m["params"]:
            lines.append("  params")
            lines.extend(_fmt_kv(m["params"]))
        if m["metrics"]:
            lines.append("  metrics")
            lines.extend(_fmt_kv({k: round(v, 5) for k, v in m["metrics"].items()}))
        if m["error"]:
            lines.append(f"  mlflow    error: {m['error']}")
    i = st["image"]
    if i:
        lines.append(f"  image     {i['pinned']}")
        lines.append(
            f"            tag {i['tag']}  registry digest {i['registry_digest'] or i['registry_error']}  "
            f"git {i['git_sha'] or '-'} (image)"
        )
    if st["latest_attempt"]:
        a = st["latest_attempt"]
        lines.append(f"  latest    {a['run_id']}  {a['outcome']}")
    for k, ok in st["checks"].items():
        lines.append(f"  check     {k}: {'ok' if ok else 'MISMATCH'}")
    lines.extend(f"  note      {n}" for n in st.get("notes", []))
    lines.extend(f"  warning   {w}" for w in st["warnings"])
    return "\n".join(lines)


def render_diff(d: Mapping[str, Any]) -> str:
    """`flightdeck diff` for people: the two runs, then each link that differs between them."""
    a, b = d["a"], d["b"]
    lines = [
        f"A {a['run_id']}  {a['model_name']} v{a['model_version']}  {a['outcome']}",
        f"B {b['run_id']}  {b['model_name']} v{b['model_version']}  {b['outcome']}",
    ]
    if d["identical"]:
        lines.append("same model, data, code, params and image")
    for section, changes in d["changes"].items():
        if not changes:
            continue
        lines.append(section)
        for k, v in changes.items():
            delta = f"  ({v['delta']:+.5g})" if v.get("delta") is not None else ""
            lines.append(f"    {k}: {v['a']} -> {v['b']}{delta}")
    lines.extend(f"error: {e}" for e in d["errors"])
    return "\n".join(lines)


def render_history(rows: Sequence[Mapping[str, Any]]) -> str:
    """`lineage.history` rows (events, newest first) as one line each: when, what, which run, why."""
    out = []
    for r in rows:
        why = f"  by {r['by_run_id'] or r['by']}" if r["by"] else (f"  reason: {r['reason']}" if r["reason"] else "")
        out.append(
            f"{r['at'][:19]}  {r['event']:<15} {r['model_name']} v{r['model_version']:<4} "
            f"{r['strategy']:<10} {r['run_id']}{why}"
        )
    return "\n".join(out) or "no deployments"


def render_monitor(summaries: Sequence[Mapping[str, Any]]) -> str:
    """`flightdeck monitor`: per version its newest window, verdict, drifted features and live quality per hour."""
    if not summaries:
        return "no monitor reports yet (trigger the monitor DAG, or wait for its hourly run)"
    lines: list[str] = []
    for m in summaries:
        targets = ", ".join(m["targets"]) or "not in a deployment record"
        lines.append(f"{m['model_name']} v{m['model_version']}  ({targets})")
        lines.append(f"  window     {m['window_start']} .. {m['window_end']}  {m['rows']} rows")
        drifted = ", ".join(m["drifted_features"]) + (" + predictions" if m["prediction_drift"] else "")
        lines.append(f"  verdict    {m['verdict']}" + (f": {drifted}" if drifted else ""))
        lines += [f"  quality    {v}" for v in m["quality_violations"]]
        quality = m.get("live_quality")
        if quality:
            metrics = "  ".join(f"{k} {v:.4f}" for k, v in sorted(quality["metrics"].items()))
            lines.append(f"  live       {metrics}  ({quality['labeled_rows']} labels, {quality['verdict']})")
            for point in quality["series"]:
                per_hour = "  ".join(f"{k} {v:.4f}" for k, v in sorted(point["metrics"].items()))
                lines.append(f"    {point['hour']}  {point['rows']:>5} labels  {per_hour}")
        else:
            lines.append("  live       no labels joined yet")
        lines.append(f"  report     {m['report_html']}")
    return "\n".join(lines)


def _airflow(s: settings_mod.Settings) -> Any:
    from flightdeck.airflow_client import AirflowClient, AirflowError

    user = os.environ.get("FLIGHTDECK_AIRFLOW_USER", "admin")
    password = os.environ.get("FLIGHTDECK_AIRFLOW_PASSWORD")
    if not password:
        from flightdeck.provisioning import airflow_password

        try:
            password = airflow_password()
        except (OSError, ValueError, KeyError) as exc:
            raise CliError(
                f"no Airflow password: set FLIGHTDECK_AIRFLOW_PASSWORD (the embedded platform's generated one "
                f"is read from {s.state_dir / 'airflow'}, not usable: {type(exc).__name__})",
                2,
            ) from exc
    try:
        return AirflowClient(s.airflow_url, user, password)
    except AirflowError as exc:
        if "login failed" in str(exc):
            raise CliError(
                f"Airflow at {s.airflow_url} refused the login of {user!r}: set FLIGHTDECK_AIRFLOW_USER and "
                "FLIGHTDECK_AIRFLOW_PASSWORD",
                2,
            ) from exc
        raise


def clear_task(
    dag_id: str, run_id: str, task_id: str, downstream: bool, wait: bool, timeout: float, s: settings_mod.Settings
) -> dict:
    """Clear one task of a run (and optionally what follows it), then optionally wait for the run again.
    On the deploy DAG: clearing `start_new` with downstream of an older successful run redeploys exactly
    that run's image digest (a roll back); clearing a failed `rollback` retries it."""
    client = _airflow(s)
    try:
        client.clear_task(dag_id, run_id, task_id, include_downstream=downstream)
        if wait:
            time.sleep(2)  # the cleared run goes back to queued; do not read its old final state
        state = client.wait(dag_id, run_id, timeout=timeout, poll=5) if wait else "queued"
        tasks = client.task_states(dag_id, run_id) if wait else {}
    finally:
        client.close()
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "cleared": task_id,
        "downstream": downstream,
        "state": state,
        "tasks": tasks,
        "url": lineage.airflow_run_url(s.airflow_url, dag_id, run_id),
    }


def rollback_target(store: rec.RecordStore, target: str, to: str | None) -> rec.DeploymentRecord:
    """The deployment to go back to: `to`, else the newest succeeded one not serving now.

    Raises LookupError when there is none."""
    if to:
        return lineage.find_record(store, to, target)
    flow = lineage.traffic(lineage.recorded_backend(target, store))
    live = {r for r, w in flow["weights"].items() if w > 0}
    if not live:
        current = lineage.current_record(store, target)
        live = {current.status.revision} if current else set()
    for r in store.list(target):
        if r.outcome is rec.Outcome.SUCCEEDED and r.status.revision not in live and r.run_id:
            return r
    raise LookupError(f"no earlier succeeded deployment on target {target} to roll back to")


def run_dag(dag_id: str, conf: dict[str, Any], wait: bool, timeout: float, s: settings_mod.Settings) -> dict:
    """Trigger `dag_id` (unpausing it) and optionally wait: what CI does on main."""
    client = _airflow(s)
    try:
        # an unknown DAG id would otherwise wait two minutes for the dag processor to parse it
        known = sorted(d["dag_id"] for d in client.get("/dags", limit=1000).get("dags", []))
        if dag_id not in known:
            raise LookupError(f"unknown DAG {dag_id!r}; Airflow has: {', '.join(known) or 'none'}")
        run_id = client.trigger(dag_id, conf)
        state = client.wait(dag_id, run_id, timeout=timeout, poll=5) if wait else "queued"
        tasks = client.task_states(dag_id, run_id) if wait else {}
    finally:
        client.close()
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": state,
        "tasks": tasks,
        "url": lineage.airflow_run_url(s.airflow_url, dag_id, run_id),
    }


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (what was wrong, where the help is), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def run_conf(text: str) -> dict[str, Any]:
    """`--conf` as a dict: the DAG's params as a JSON object (CliError, exit 2, otherwise)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--conf is not JSON ({exc.msg} at character {exc.pos}): {text!r}", 2) from None
    if not isinstance(value, dict):
        raise CliError(f'--conf must be a JSON object ({{"param": value, ...}}), got {text!r}', 2)
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `flightdeck` argument parser: one subcommand each (status, diff, history, run, clear, rollback, monitor,
    logs, dataset); argument errors exit 2 with one line."""
    parser = _Parser(prog="flightdeck", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_status = sub.add_parser("status", help="what serves on a target now, and where it came from")
    p_status.add_argument("--target", default="local", choices=TARGETS)
    p_diff = sub.add_parser("diff", help="what changed between two deployments")
    p_diff.add_argument("run_a")
    p_diff.add_argument("run_b")
    p_diff.add_argument("--target", default=None, choices=TARGETS)
    p_hist = sub.add_parser(
        "history", help="what happened on a target, newest first: started, restarted, live, replaced, rolled back"
    )
    p_hist.add_argument("--target", default="local", choices=TARGETS)
    p_hist.add_argument("--limit", type=_positive_int, default=20)
    p_run = sub.add_parser("run", help="trigger a DAG through Airflow's REST API (and wait)")
    p_run.add_argument("dag_id")
    p_run.add_argument("--conf", default="{}", help="run conf as JSON (the DAG's params)")
    p_run.add_argument("--wait", action="store_true", help="wait for the run to finish")
    p_run.add_argument("--timeout", type=_seconds, default=3600)
    p_clear = sub.add_parser("clear", help="clear a task of a run (retry it; on deploy: redeploy that run)")
    p_clear.add_argument("dag_id")
    p_clear.add_argument("run_id")
    p_clear.add_argument("task_id")
    p_clear.add_argument("--downstream", action="store_true", help="clear the tasks after it too")
    p_clear.add_argument("--wait", action="store_true", help="wait for the run to finish again")
    p_clear.add_argument("--timeout", type=_seconds, default=3600)
    p_rb = sub.add_parser("rollback", help="redeploy the previous good deployment (clears its start_new task)")
    p_rb.add_argument("--target", default="local", choices=TARGETS)
    p_rb.add_argument("--to", default=None, help="deploy run id to go back to (default: the previous good one)")
    p_rb.add_argument("--wait", action="store_true")
    p_rb.add_argument("--timeout", type=_seconds, default=3600)
    p_logs = sub.add_parser("logs", help="save the target's serving container logs (state folder + S3)")
    p_logs.add_argument("--target", default="local", choices=TARGETS)
    p_logs.add_argument("--no-upload", action="store_true", help="state folder only")
    p_mon = sub.add_parser(
        "monitor", help="the monitor's newest verdict per model version: drift and live quality (late labels)"
    )
    p_mon.add_argument("--model", default="", help="one registered model (default: every watched one)")
    for p in (p_status, p_diff, p_hist, p_run, p_clear, p_rb, p_logs, p_mon):
        p.add_argument("--json", action="store_true", help="machine-readable output")
    p_ds = sub.add_parser("dataset", help="your own data: init a dataset from a file, land files, schema, holdout")
    ds = p_ds.add_subparsers(dest="dataset_cmd", required=True)
    p_init = ds.add_parser("init", help="infer the schema from a CSV/Parquet file and add the dataset to params.yaml")
    p_init.add_argument("name")
    p_init.add_argument("--from", dest="sample", required=True, help="a CSV or Parquet file of the data")
    p_init.add_argument("--target", required=True, help="the column to predict")
    p_init.add_argument(
        "--task",
        choices=["classification", "regression"],
        default=None,
        help="default: inferred from the target column",
    )
    p_init.add_argument("--entrypoint", default=None, help="your training code, package.module:function")
    p_init.add_argument("--code-path", default=None, help="the folder holding it, relative to the project root")
    p_init.add_argument("--params", default=None, help="the params file to edit (default: the project's params.yaml)")
    p_init.add_argument("--force", action="store_true", help="replace an existing block of that name")
    p_land = ds.add_parser("land", help="upload files to the dataset's landing prefix in S3")
    p_land.add_argument("name")
    p_land.add_argument("files", nargs="+")
    p_schema = ds.add_parser("schema", help="print the schema in use (declared, or inferred from the first data)")
    p_schema.add_argument("name")
    p_holdout = ds.add_parser("new-holdout", help="cut a new holdout from the current dataset")
    p_holdout.add_argument("name")
    for p in (p_land, p_schema, p_holdout):
        p.add_argument("--namespace", default=None, help="an isolated lineage (as the retrain DAG's Param)")
    return parser


def dataset_command(args: argparse.Namespace) -> int:
    """`flightdeck dataset ...`: configuration and data errors are one line on stderr, exit 2."""
    from pathlib import Path

    import yaml

    from flightdeck import pipeline_config
    from flightdeck.data import onboard
    from flightdeck.data.schema import SchemaError
    from flightdeck.reachability import ServiceUnavailable

    try:
        if args.dataset_cmd == "init":
            block = onboard.init_block(
                args.name,
                Path(args.sample),
                args.target,
                args.task,
                entrypoint=args.entrypoint,
                code_path=args.code_path,
            )
            path = onboard.write_block(args.name, block, Path(args.params) if args.params else None, force=args.force)
            pipeline_config.load(args.name, path=path)  # the block it wrote must load
            print(yaml.safe_dump({"datasets": {args.name: block}}, sort_keys=False, default_flow_style=None), end="")
            print(
                f"flightdeck: wrote datasets.{args.name} to {path}; review the schema, then commit it", file=sys.stderr
            )
            return 0
        from flightdeck.data import sync as data_sync
        from flightdeck.data.store import ObjectStore
        from flightdeck.provisioning import use_local_aws_default

        use_local_aws_default()
        cfg = pipeline_config.load(args.name, namespace=args.namespace)
        store = ObjectStore()
        if args.dataset_cmd == "land":
            for key in onboard.land_files(cfg, store, [Path(f) for f in args.files]):
                print(f"s3://{store.bucket}/{key}")
        elif args.dataset_cmd == "schema":
            schema = data_sync.resolve_schema(cfg, store)
            if schema is None:
                print(f"flightdeck: dataset {cfg.key} has no schema yet: land a file first", file=sys.stderr)
                return 1
            print(yaml.safe_dump(schema.to_params(), sort_keys=False, default_flow_style=None), end="")
        else:
            manifest = data_sync.new_holdout(cfg, store)
            print(
                f"dataset {cfg.key}: new holdout {manifest.holdout_version}, data_version {manifest.data_version} "
                f"({manifest.rows} rows); the next retrain is gated on the thresholds alone"
            )
        return 0
    except (pipeline_config.ConfigError, SchemaError, FileNotFoundError, IsADirectoryError) as exc:
        print(f"flightdeck: {exc}", file=sys.stderr)
        return 2
    except ServiceUnavailable as exc:
        print(f"flightdeck: {exc} (is the platform up? `make up`)", file=sys.stderr)
        return 1


def _one_line(text: str, limit: int = 400) -> str:
    """A message on one line: whitespace collapsed, a JSON error body reduced to its `detail`."""
    head, sep, body = text.partition(": {")
    if sep:
        try:
            detail = json.loads("{" + body).get("detail")
            if detail:
                text = f"{head}: {detail if isinstance(detail, str) else json.dumps(detail)}"
        except (ValueError, AttributeError):
            pass
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _service_at(url: str, s: settings_mod.Settings) -> tuple[str, str, str]:
    """(service, its address, the variable that sets it) for a URL the CLI called."""
    for name, base, var in (
        ("Airflow", s.airflow_url, "FLIGHTDECK_AIRFLOW_URL"),
        ("MLflow", s.mlflow_uri, "MLFLOW_TRACKING_URI"),
        ("the load balancer", s.lb_url, "FLIGHTDECK_LB_URL"),
        ("the image registry", f"http://{s.registry}", "FLIGHTDECK_REGISTRY"),
        ("S3", s.s3_endpoint, "FLIGHTDECK_S3_ENDPOINT"),
    ):
        if base and url.startswith(base.rstrip("/")):
            return name, base, var
    return "a service", url.split("?")[0], ""


def describe_error(exc: BaseException, s: settings_mod.Settings) -> tuple[str, int]:
    """What went wrong in one line, saying what to set or do, and the exit code (2: configuration)."""
    import botocore.exceptions as bce
    import requests

    from flightdeck.airflow_client import AirflowError
    from flightdeck.reachability import ServiceUnavailable

    up = "start the platform (`make up`)"
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, LookupError) and not isinstance(exc, (KeyError, IndexError)):
        return _one_line(str(exc)), 1
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return (
            f"no AWS credentials for S3 at {s.s3_endpoint}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE)",
            2,
        )
    if isinstance(exc, bce.NoRegionError):
        return "no AWS region: set AWS_DEFAULT_REGION", 2
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectionError, bce.HTTPClientError)):
        url = urlparse(getattr(exc, "kwargs", {}).get("endpoint_url") or s.s3_endpoint)
        endpoint = f"{url.scheme}://{url.netloc}"
        name = "S3" if s.s3_endpoint.rstrip("/") == endpoint else "AWS"
        return f"cannot reach {name} at {endpoint} ({type(exc).__name__}): {up}, or set FLIGHTDECK_S3_ENDPOINT", 1
    if isinstance(exc, bce.ProfileNotFound):
        return f"{exc}: set AWS_PROFILE to a profile of your AWS config, or unset it", 2
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        code, msg = str(err.get("Code", "")), str(err.get("Message", ""))
        if code == "NoSuchBucket":
            bucket = err.get("BucketName") or "a platform bucket"
            return (
                f"S3 bucket {bucket} does not exist at {s.s3_endpoint}: set FLIGHTDECK_DEPLOY_BUCKET (and the "
                "other FLIGHTDECK_*_BUCKET), or create the buckets: python -m flightdeck.provisioning buckets",
                2,
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"):
            return (
                f"S3 at {s.s3_endpoint} refused the credentials ({code}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (the local platform's keys unless you set them: README, Services)",
                2,
            )
        return _one_line(f"AWS {exc.operation_name}: {code}: {msg}"), 1
    if isinstance(exc, requests.RequestException):
        url = exc.request.url if exc.request is not None and exc.request.url else ""
        name, base, var = _service_at(url, s)
        where = f"{up}, or set {var}" if var else up
        return f"cannot reach {name} at {base} ({type(exc).__name__}): {where}", 1
    if isinstance(exc, ServiceUnavailable):
        return f"{exc} ({up})", 1
    if isinstance(exc, AirflowError):
        return _one_line(f"Airflow: {exc}"), 1
    module = type(exc).__module__
    if module.startswith("botocore"):
        return _one_line(f"AWS: {exc} (check AWS_* settings and FLIGHTDECK_S3_ENDPOINT)"), 2
    if module.startswith("mlflow"):
        return _one_line(f"MLflow at {s.mlflow_uri}: {exc} (set MLFLOW_TRACKING_URI)"), 1
    if module.startswith("docker"):
        return _one_line(f"Docker engine: {exc} (start dockerd, or set DOCKER_HOST)"), 1
    if isinstance(exc, OSError):
        return _one_line(str(exc) or type(exc).__name__), 1
    return _one_line(f"unexpected {type(exc).__name__}: {exc} (FLIGHTDECK_DEBUG=1 shows the traceback)"), 1


def _library_logs_to_stderr() -> None:
    """Keep stdout for the answer (`--json` included): the provider's hooks (S3, ECS) import Airflow, which
    would install its log handler on stdout. Outside Airflow, Airflow is used as a library (no logging or
    database set-up at import: `_AIRFLOW__AS_LIBRARY`, read by airflow/__init__.py), so standard logging
    keeps Python's defaults, and structlog (which the hooks log through) writes errors only, to stderr: a
    user error stays the one line main() prints."""
    if "airflow" in sys.modules:
        return
    import logging

    import structlog

    os.environ.setdefault("_AIRFLOW__AS_LIBRARY", "1")
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The `flightdeck` entry point: the local platform's defaults for what is unset, one-line errors."""
    args = build_parser().parse_args(argv)
    settings_mod.apply_defaults()
    _library_logs_to_stderr()
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("flightdeck: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("FLIGHTDECK_DEBUG"):
            raise
        message, code = describe_error(exc, settings_mod.load())
        print(f"flightdeck: {message}", file=sys.stderr)
        return code


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "dataset":
        return dataset_command(args)
    s = settings_mod.load()
    if args.cmd == "rollback":
        try:
            to = rollback_target(_store(s), args.target, args.to)
        except LookupError as e:
            print(f"flightdeck: {e}", file=sys.stderr)
            return 1
        model, image = to.status.model, to.status.image or {}
        print(
            f"rolling back {args.target} to {to.run_id} ({model['name'] if model else None} "
            f"v{model['version'] if model else None}, {image.get('pinned')})",
            file=sys.stderr,
        )
        args.cmd, args.dag_id, args.run_id = "clear", to.spec.dag_id, to.run_id
        args.task_id, args.downstream = "start_new", True
    if args.cmd in ("run", "clear"):
        if args.cmd == "run":
            out = run_dag(args.dag_id, run_conf(args.conf), args.wait, args.timeout, s)
        else:
            out = clear_task(args.dag_id, args.run_id, args.task_id, args.downstream, args.wait, args.timeout, s)
        print(
            json.dumps(out, indent=1, sort_keys=True)
            if args.json
            else f"{out['dag_id']} {out['run_id']}: {out['state']}  {out['url']}"
        )
        return 0 if out["state"] in ("success", "queued") else 1
    if args.cmd == "logs":
        from flightdeck import serving_logs

        saved = serving_logs.collect(
            args.target, s3=None if args.no_upload else _store(s).s3, bucket=None if args.no_upload else s.logs_bucket
        )
        print(
            json.dumps(saved, indent=1)
            if args.json
            else "\n".join(f"{x['container']}: {x['bytes']} bytes -> {x['s3'] or x['path']}" for x in saved)
            or f"no serving containers on target {args.target}"
        )
        return 0
    store = _store(s)
    try:
        if args.cmd == "status":
            result: Any = lineage.status(args.target, store, settings=s)
            add_verdict(result)
            text = render_status(result)
            code = 1 if result["warnings"] else 0
        elif args.cmd == "monitor":
            from flightdeck.monitoring import monitor

            summaries = monitor.latest_summaries(store.s3, s.data_bucket, args.model)
            result = [m.to_dict() for m in summaries]
            text, code = render_monitor(result), 0
        elif args.cmd == "diff":
            result = lineage.diff(args.run_a, args.run_b, store, target=args.target, settings=s)
            text, code = render_diff(result), 0
        else:
            result = lineage.history(store, args.target, s.airflow_url, args.limit)
            text, code = render_history(result), 0
    except LookupError as e:
        print(f"flightdeck: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1, sort_keys=True, default=str) if args.json else text)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
