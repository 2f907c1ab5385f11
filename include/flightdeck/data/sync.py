"""Landing batches -> the DVC-tracked dataset in S3, plus restoring any data version into a folder.

Where things live (data bucket):
    landing/<dataset>/**             new CSV or Parquet batches, under any sub-prefix, by any tool
    processed/<dataset>/<sha>/<path> batches merged into a committed dataset version (or identical to
                                     one), under the first 16 hex digits of their content's sha256
    quarantine/<dataset>/<sha>/<path> rejected batches; the reason is in the object's metadata and in
                                     a `<path>.reason.txt` object beside it
    dvcstore/                        the DVC remote (content-addressed; never rewritten)
    datasets/<dataset>/manifest.json the current version: data_version (DVC md5), holdout_version, batches
    datasets/<dataset>/versions/<md5>.json   every committed manifest (history)
    datasets/<dataset>/schema.yaml   the schema inferred from the first data (when params.yaml declares none)

Batches are identified by content (sha256), never by name: a file landed again under a merged name
with new rows is a new batch; a byte-identical copy of a merged batch is archived, not merged twice.
Every landed file ends merged (processed/), in quarantine/ with its reason, or still in landing/.

The DVC workspace is `<workspace_dir>/<dataset>` (FLIGHTDECK_WORKSPACE_DIR, default `<state_dir>/workspace`;
each Celery worker has its own), a `dvc init --no-scm` repo: the task never touches the project's git
checkout, and the workspace is disposable (cache and scratch only): the state of record is the remote plus
the manifest, so any worker can rebuild it with a pull.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import pandas as pd
import yaml

from flightdeck import settings as settings_mod
from flightdeck.data import generate
from flightdeck.data.schema import DatasetSchema, SchemaError, Task, read_raw, read_typed
from flightdeck.data.schema import infer as infer_schema
from flightdeck.data.store import ObjectStore
from flightdeck.data.validate import validate_batch
from flightdeck.errors import FlightdeckError
from flightdeck.monitoring import batch_check
from flightdeck.monitoring.config import BatchCheckAction, MonitorConfig, monitor_config
from flightdeck.monitoring.drift import Status
from flightdeck.monitoring.report import to_json as report_json
from flightdeck.pipeline_config import DVC_YAML_PATH, DatasetConfig
from flightdeck.reachability import ServiceUnavailable

log = logging.getLogger(__name__)

REMOTE = "storage"
DATASET_FILE = "data/dataset.csv"
HOLDOUT_FILE = "data/holdout.csv"


class RestoreMismatch(FlightdeckError, RuntimeError):
    """A file pulled from the DVC remote does not hash to the md5 it was asked for."""


def md5_file(path: Path) -> str:
    """The file's MD5 as 32 hex digits, read in 1 MiB blocks: the hash DVC names its outputs by."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prefixes(name: str) -> dict[str, str]:
    """Where dataset `name` lives in the data bucket: landing, processed and quarantine prefixes, the
    manifest and schema keys, and the prefix of the per-version manifests."""
    return {
        "landing": f"landing/{name}/",
        "processed": f"processed/{name}/",
        "quarantine": f"quarantine/{name}/",
        "manifest": f"datasets/{name}/manifest.json",
        "schema": f"datasets/{name}/schema.yaml",
        "versions": f"datasets/{name}/versions/",
    }


def remote_url(bucket: str | None = None) -> str:
    """The DVC remote: `s3://<bucket>/dvcstore` (default: the data bucket)."""
    return f"s3://{bucket or settings_mod.load().data_bucket}/dvcstore"


def _dvc_errors() -> tuple[type[BaseException], ...]:
    from dvc.exceptions import DvcException

    return (DvcException,)


def configure_remote(root: Path, store: ObjectStore) -> None:
    """Point a DVC repo at the S3 remote; credentials go to the untracked local config level."""
    from dvc.repo import Repo

    creds = store.credentials()
    with Repo(str(root)) as repo:
        with repo.config.edit("repo") as conf:
            conf["remote"][REMOTE] = {"url": remote_url(store.bucket), "endpointurl": store.endpoint}
            conf["core"]["remote"] = REMOTE
            conf["core"]["autostage"] = False
        with repo.config.edit("local") as conf:
            local: dict[str, Any] = {}
            if creds.access_key:
                local = {"access_key_id": creds.access_key, "secret_access_key": creds.secret_key}
            if creds.token:
                local["session_token"] = creds.token
            conf["remote"][REMOTE] = local


def _write_if_changed(path: Path, text: str) -> None:
    """Rewrite only on change: DVC compares timestamps/hashes of its inputs."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _write_dvc_file(path: Path, md5: str, size: int | None) -> None:
    out: dict[str, Any] = {"md5": md5, "hash": "md5", "path": path.name.removesuffix(".dvc")}
    if size is not None:
        out["size"] = size
    path.write_text(yaml.safe_dump({"outs": [out]}, sort_keys=False))


def _push(root: Path, targets: list[str], store: ObjectStore) -> None:
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            pushed = repo.push(targets=[str(root / t) for t in targets], remote=REMOTE)
    except _dvc_errors() as exc:
        raise ServiceUnavailable("S3", store.endpoint, f"dvc push to {remote_url(store.bucket)} failed: {exc}") from exc
    log.info("dvc push %s -> %s: %s new object(s)", targets, remote_url(store.bucket), pushed)


def _pull(root: Path, targets: list[str], store: ObjectStore) -> None:
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            repo.pull(targets=[str(root / t) for t in targets], remote=REMOTE, force=True)
    except _dvc_errors() as exc:
        raise ServiceUnavailable(
            "S3", store.endpoint, f"dvc pull from {remote_url(store.bucket)} failed: {exc}"
        ) from exc


def dvc_add(root: Path, target: str) -> tuple[str, int]:
    """`dvc add` a file and return (md5, size) from the .dvc file DVC wrote."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        repo.add(str(root / target))
    out = yaml.safe_load((root / f"{target}.dvc").read_text())["outs"][0]
    return out["md5"], int(out["size"])


def restore(
    data_version: str,
    dest: Path,
    *,
    size: int | None = None,
    filename: str = "dataset.csv",
    store: ObjectStore | None = None,
) -> Path:
    """Restore the exact file with DVC md5 `data_version` from the S3 remote into a clean folder.

    Works from the hash alone (e.g. a model version's `data_version` tag): a `--no-scm` DVC repo is
    created in `dest`, a .dvc file naming the hash is written and `dvc pull` fetches the content.
    Returns the restored file's path. Raises RestoreMismatch when the pulled file's md5 differs, and
    ServiceUnavailable when the remote cannot be reached.
    """
    from dvc.repo import Repo

    store = store or ObjectStore()
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / ".dvc").exists():
        Repo.init(str(dest), no_scm=True).close()
    configure_remote(dest, store)
    _write_dvc_file(dest / f"{filename}.dvc", data_version, size)
    _pull(dest, [f"{filename}.dvc"], store)
    restored = dest / filename
    actual = md5_file(restored)
    if actual != data_version:
        raise RestoreMismatch(f"restored {restored} has md5 {actual}, expected {data_version}")
    return restored


class BatchRecord(TypedDict):
    """One merged batch: where it landed, its content hash, its rows and where it was archived."""

    key: str
    sha256: str
    rows: int
    archive: str


@dataclass
class Manifest:
    dataset: str
    data_version: str | None = None
    size: int | None = None
    holdout_version: str | None = None
    holdout_size: int | None = None
    rows: int = 0
    batches: list[BatchRecord] = field(default_factory=list)
    committed_at: str | None = None
    holdout_cut_at: str | None = None

    @classmethod
    def read(cls, store: ObjectStore, name: str) -> Manifest | None:
        """The dataset's current manifest, or None before its first commit. Raises ServiceUnavailable when
        S3 cannot be read."""
        key = prefixes(name)["manifest"]
        if not store.exists(key):
            return None
        raw = json.loads(store.read(key))
        # Manifests written before batches were identified by content hold base names only.
        raw["batches"] = [
            b if isinstance(b, dict) else BatchRecord(key=b, sha256="", rows=0, archive="")
            for b in raw.get("batches") or []
        ]
        return cls(**raw)

    @property
    def merged_hashes(self) -> dict[str, BatchRecord]:
        """Merged batches by content SHA-256 (batches from before content hashing are left out)."""
        return {b["sha256"]: b for b in self.batches if b["sha256"]}

    def write(self, store: ObjectStore) -> None:
        """Write the manifest, and a copy under versions/<data_version>.json. Raises ServiceUnavailable."""
        body = json.dumps(asdict(self), indent=2, sort_keys=True).encode()
        store.write(prefixes(self.dataset)["manifest"], body)
        if self.data_version:
            store.write(f"{prefixes(self.dataset)['versions']}{self.data_version}.json", body)


class Workspace:
    """The DVC workspace of one dataset under the state dir."""

    def __init__(self, cfg: DatasetConfig, store: ObjectStore, root: Path | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.root = root or settings_mod.load().workspace_dir / cfg.key

    @property
    def dataset_path(self) -> Path:
        """The workspace's DVC-tracked dataset CSV (data/dataset.csv)."""
        return self.root / DATASET_FILE

    @property
    def holdout_path(self) -> Path:
        """The workspace's DVC-tracked holdout CSV (data/holdout.csv)."""
        return self.root / HOLDOUT_FILE

    def ensure(self) -> None:
        """Create or refresh the repo: DVC init, remote, the project's dvc.yaml, rendered params.

        The remote is (re)written only when its settings changed: opening a DVC repo costs seconds
        in every task process, and the gates only need the files, which are usually already there.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        if not (self.root / ".dvc").exists():
            from dvc.repo import Repo

            Repo.init(str(self.root), no_scm=True).close()
            log.info("initialised DVC workspace (no SCM) at %s", self.root)
        creds = self.store.credentials()
        stamp = hashlib.sha256(
            json.dumps(
                [remote_url(self.store.bucket), self.store.endpoint, creds.access_key, creds.secret_key, creds.token]
            ).encode()
        ).hexdigest()
        stamp_file = self.root / ".dvc" / "tmp" / "flightdeck-remote.sha256"
        if not stamp_file.exists() or stamp_file.read_text() != stamp:
            configure_remote(self.root, self.store)
            stamp_file.parent.mkdir(parents=True, exist_ok=True)
            stamp_file.write_text(stamp)
        _write_if_changed(self.root / "dvc.yaml", DVC_YAML_PATH.read_text())
        _write_if_changed(self.root / "params.yaml", yaml.safe_dump(self.cfg.params, sort_keys=True))

    def checkout_file(self, target: str, md5: str, size: int | None) -> None:
        """Make `target` (relative to the workspace) the file with DVC md5 `md5` (`size` in bytes), pulling
        it from the remote unless it is already there. Raises ServiceUnavailable when the pull fails."""
        path = self.root / target
        dvc_file = self.root / f"{target}.dvc"
        if path.exists() and md5_file(path) == md5:
            if not dvc_file.exists() or yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"] != md5:
                _write_dvc_file(dvc_file, md5, size)
            return
        _write_dvc_file(dvc_file, md5, size)
        _pull(self.root, [f"{target}.dvc"], self.store)
        log.info("checked out %s at %s from the remote", target, md5)

    def checkout(
        self,
        data_version: str,
        holdout_version: str,
        size: int | None = None,
        holdout_size: int | None = None,
    ) -> None:
        """Make the workspace's data files exactly the given versions (pulling what is missing)."""
        self.checkout_file(DATASET_FILE, data_version, size)
        self.checkout_file(HOLDOUT_FILE, holdout_version, holdout_size)

    def bootstrap_holdout(self) -> tuple[str, int]:
        """Write the fixed reference holdout (deterministic from the bundled source) and push it."""
        self.holdout_path.write_bytes(generate.to_csv_bytes(generate.holdout(self.cfg)))
        md5, size = dvc_add(self.root, HOLDOUT_FILE)
        _push(self.root, [f"{HOLDOUT_FILE}.dvc"], self.store)
        return md5, size

    def holdout_from_file(self, location: str) -> tuple[str, int]:
        """Use the user's holdout file (`s3://<data bucket>/<key>` or a key in the data bucket), checked
        against the schema like any batch, then frozen and pushed.

        Raises:
            SchemaError: the file fails the schema checks (the message says why).
        """
        assert self.cfg.schema is not None
        key = location.removeprefix(f"s3://{self.store.bucket}/")
        check = validate_batch(key, self.store.read(key), self.cfg.schema)
        if not check.ok or check.frame is None:
            raise SchemaError(f"datasets.{self.cfg.name}.holdout.file {location}: {check.reason}")
        self.holdout_path.write_bytes(dataset_csv(check.frame, header=True))
        md5, size = dvc_add(self.root, HOLDOUT_FILE)
        _push(self.root, [f"{HOLDOUT_FILE}.dvc"], self.store)
        log.info("holdout: %d rows from s3://%s/%s (frozen as %s)", len(check.frame), self.store.bucket, key, md5)
        return md5, size


def archive_key(prefix: str, landing_prefix: str, key: str, sha256: str) -> str:
    """`<prefix><sha16>/<path under landing>`: equal names from different sub-prefixes or with other
    content never collide, and the path the user gave stays readable."""
    return f"{prefix}{sha256[:16]}/{key.removeprefix(landing_prefix)}"


def _quarantine(store: ObjectStore, name: str, key: str, sha256: str, reason: str, detail: str = "") -> str:
    """Move `key` to quarantine: `reason` (one line) in the object's metadata and in `<path>.reason.txt`,
    followed there by `detail` (e.g. a drift report as JSON). Returns the quarantine key."""
    names = prefixes(name)
    dst = archive_key(names["quarantine"], names["landing"], key, sha256)
    meta = {
        "reason": reason[:1500].encode("ascii", "replace").decode(),
        "quarantined-at": datetime.now(UTC).isoformat(),
    }
    store.move(key, dst, metadata=meta)
    store.write(dst + ".reason.txt", (reason + "\n" + (detail + "\n" if detail else "")).encode())
    log.error("QUARANTINED s3://%s/%s -> s3://%s/%s: %s", store.bucket, key, store.bucket, dst, reason)
    return dst


def resolve_schema(cfg: DatasetConfig, store: ObjectStore) -> DatasetSchema | None:
    """The declared schema, else the one stored at the first sync, else one inferred now (and stored).

    Inference reads the bundled table (demo datasets) or the first readable landed file; None when a
    `files` dataset has nothing landed yet. The stored schema is frozen: edit it into params.yaml to
    change it (`flightdeck dataset schema NAME` prints it).
    """
    if cfg.schema is not None:
        return cfg.schema
    key = prefixes(cfg.key)["schema"]
    if store.exists(key):
        block = yaml.safe_load(store.read(key))
        return DatasetSchema.from_params(block["schema"], target=block["target"], task=block["task"], where=key)
    if cfg.bundled:
        schema = infer_schema(generate.load_source(cfg), cfg.target, cfg.task)
        source = cfg.source
    else:
        schema, source = None, ""
        for landed in store.list(prefixes(cfg.key)["landing"]):
            if landed.endswith(("/", ".reason.txt")):
                continue
            try:
                sample = read_raw(landed, store.read(landed))
                schema = infer_schema(sample, cfg.target, cfg.task)
            except SchemaError as exc:
                log.warning("cannot infer the schema from %s: %s", landed, exc)
                continue
            source = landed
            break
        if schema is None:
            return None
    text = (
        f"# Inferred from {source} at {datetime.now(UTC).isoformat(timespec='seconds')}. Review it and\n"
        f"# commit it under params.yaml datasets.{cfg.name} (task/target/schema) to make it yours.\n"
        + yaml.safe_dump(schema.to_params(), sort_keys=False)
    )
    store.write(key, text.encode())
    # A bundled demo table's schema is the table's; the user's files deserve a look before the next batch.
    log.log(
        logging.INFO if cfg.bundled else logging.WARNING,
        "dataset %s declares no schema: inferred one from %s and stored it at s3://%s/%s; review it and commit it "
        "to params.yaml:\n%s",
        cfg.name,
        source,
        store.bucket,
        key,
        text,
    )
    return schema


def _cut_holdout(frame: pd.DataFrame, cfg: DatasetConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(holdout, rest): `holdout.fraction` of the rows, stratified by label for classification."""
    from sklearn.model_selection import train_test_split

    assert cfg.schema is not None
    labels = None
    if cfg.task is Task.CLASSIFICATION:
        counts = frame[cfg.target].value_counts()
        if len(counts) > 1 and counts.min() >= 2:
            labels = frame[cfg.target].astype(str)
    rest, holdout = train_test_split(
        frame,
        test_size=float(cfg.holdout["fraction"]),
        random_state=int(cfg.batches.get("seed", 0)),
        stratify=labels,
    )
    return holdout.reset_index(drop=True), rest.reset_index(drop=True)


def dataset_csv(frame: pd.DataFrame, *, header: bool) -> bytes:
    """The dataset file's encoding: round-trip floats, nulls as empty fields (see `schema.read_typed`)."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False, header=header, lineterminator="\n")
    return buf.getvalue().encode()


class SyncResult(TypedDict):
    """What sync_data hands to the next tasks (XCom)."""

    dataset: str
    namespace: str
    data_version: str | None
    size: int | None
    rows: int
    holdout_version: str | None
    holdout_size: int | None
    holdout_cut: bool
    previous_version: str | None
    new_batches: list[str]
    batches: list[BatchRecord]
    duplicates: list[dict[str, str]]
    quarantined: list[dict[str, str]]
    unseen_categories: dict[str, dict[str, dict[str, int]]]
    drift_reference: str | None  # what valid batches were drift-checked against ("holdout <md5>"), or None
    drifted_batches: list[batch_check.BatchDrift]  # batches the drift check flagged (merged or quarantined)
    schema: dict[str, Any] | None
    params_hash: str
    model_name: str


def sync(
    cfg: DatasetConfig,
    store: ObjectStore | None = None,
    workspace: Workspace | None = None,
    *,
    monitor: MonitorConfig | None = None,
) -> SyncResult:
    """Validate landed batches, append the good ones to a candidate dataset and push it to the remote.

    Cost: each landed file is read and validated once; the candidate is the current file with the new
    rows appended (the history is not parsed), then hashed by DVC and pushed. Malformed batches are
    moved to quarantine at once. The candidate is not yet the dataset's current version: `commit()`
    makes it so after the data checks pass (so a failing candidate changes nothing).

    Each valid batch is then drift-checked against the dataset's holdout (monitoring.batch_check, with
    `monitor`: default params.yaml's `monitor` section): a flagged batch is listed in `drifted_batches` and,
    under `batch_check: quarantine`, moved to quarantine with the drift report as its reason instead of
    being merged. A first sync that cuts the holdout from the landed data has no reference: nothing is
    drift-checked (`drift_reference` None).
    """
    monitor = monitor or monitor_config()
    store = store or ObjectStore()
    store.ping()
    names = prefixes(cfg.key)
    manifest = Manifest.read(store, cfg.key) or Manifest(dataset=cfg.key)
    schema = resolve_schema(cfg, store)
    if schema is not None:
        cfg = cfg.with_schema(schema)
    ws = workspace or Workspace(cfg, store)
    ws.cfg = cfg
    ws.ensure()
    result = SyncResult(
        dataset=cfg.name,
        namespace=cfg.namespace,
        data_version=manifest.data_version,
        size=manifest.size,
        rows=manifest.rows,
        holdout_version=manifest.holdout_version,
        holdout_size=manifest.holdout_size,
        holdout_cut=False,
        previous_version=manifest.data_version,
        new_batches=[],
        batches=[],
        duplicates=[],
        quarantined=[],
        unseen_categories={},
        drift_reference=None,
        drifted_batches=[],
        schema=schema.to_params() if schema else None,
        params_hash=cfg.params_hash,
        model_name=cfg.model_name,
    )
    if schema is None:
        log.warning("dataset %s: nothing landed under s3://%s/%s yet", cfg.name, store.bucket, names["landing"])
        return result
    if manifest.data_version and manifest.holdout_version:
        ws.checkout(manifest.data_version, manifest.holdout_version, manifest.size, manifest.holdout_size)
    elif manifest.holdout_version:
        ws.checkout_file(HOLDOUT_FILE, manifest.holdout_version, manifest.holdout_size)
    elif cfg.bundled:
        result["holdout_version"], result["holdout_size"] = ws.bootstrap_holdout()
    elif cfg.holdout.get("file"):
        result["holdout_version"], result["holdout_size"] = ws.holdout_from_file(str(cfg.holdout["file"]))

    reference = None
    if result["holdout_version"]:
        reference = batch_check.reference_profile(read_typed(ws.holdout_path, schema), schema)
        result["drift_reference"] = f"holdout {result['holdout_version']}"
    else:
        log.info(
            "dataset %s: no holdout yet (it is cut from this data): landed batches are not drift-checked", cfg.name
        )
    merged_before = manifest.merged_hashes
    seen_now: dict[str, str] = {}
    frames: list[pd.DataFrame] = []
    for key in store.list(names["landing"]):
        if key.endswith(("/", ".reason.txt")):
            continue
        payload = store.read(key)
        sha = hashlib.sha256(payload).hexdigest()
        archive = archive_key(names["processed"], names["landing"], key, sha)
        earlier = merged_before.get(sha, {}).get("key") or seen_now.get(sha)
        if earlier:
            # The same bytes were merged already (or a moment ago): archive this copy, do not merge twice.
            log.warning(
                "batch %s is byte-identical to %s (sha256 %s...): archived, not merged again", key, earlier, sha[:16]
            )
            result["duplicates"].append({"key": key, "sha256": sha, "archive": archive, "same_as": earlier})
            continue
        check = validate_batch(key, payload, schema, unseen_categories=cfg.unseen_categories)
        if check.unseen:
            result["unseen_categories"][key] = check.unseen
            log.warning(
                "batch %s: feature values outside the schema's categories (merged, counted): %s", key, check.unseen
            )
        if not check.ok:
            dst = _quarantine(store, cfg.key, key, sha, check.reason)
            result["quarantined"].append({"key": key, "to": dst, "reason": check.reason})
            continue
        assert check.frame is not None
        if reference is not None and result["drift_reference"]:
            report = batch_check.check(check.frame, reference, schema, monitor)
            if report.flagged:
                where = result["drift_reference"]
                result["drifted_batches"].append(batch_check.flagged_entry(key, report, monitor, where))
                if monitor.batch_check is BatchCheckAction.QUARANTINE:
                    reason = batch_check.summary(key, report, where) + " (monitor.batch_check: quarantine)"
                    dst = _quarantine(store, cfg.key, key, sha, reason, detail=report_json(report))
                    result["quarantined"].append({"key": key, "to": dst, "reason": reason})
                    continue
                log.warning("%s (monitor.batch_check: warn: merged)", batch_check.summary(key, report, where))
            elif report.status is Status.INSUFFICIENT_DATA:
                log.warning(
                    "batch %s: %d rows, fewer than monitor.min_rows (%d): merged without a drift check",
                    key,
                    report.rows,
                    report.min_rows,
                )
            else:
                log.info("batch %s: drift check %s against the %s", key, report.status.value, result["drift_reference"])
        log.info("batch %s valid: %d rows (sha256 %s...)", key, len(check.frame), sha[:16])
        seen_now[sha] = key
        frames.append(check.frame)
        result["new_batches"].append(key)
        result["batches"].append(BatchRecord(key=key, sha256=sha, rows=len(check.frame), archive=archive))

    if frames:
        new_rows = pd.concat(frames, ignore_index=True)[schema.names]
        if not result["holdout_version"]:
            holdout, new_rows = _cut_holdout(new_rows, cfg)
            ws.holdout_path.write_bytes(dataset_csv(holdout, header=True))
            result["holdout_version"], result["holdout_size"] = dvc_add(ws.root, HOLDOUT_FILE)
            result["holdout_cut"] = True
            log.warning(
                "dataset %s: cut a holdout of %d rows (%.0f%%%s) from the first data; it is frozen from now on "
                "(`flightdeck dataset new-holdout %s` cuts a new one)",
                cfg.name,
                len(holdout),
                100 * float(cfg.holdout["fraction"]),
                ", stratified by label" if cfg.task is Task.CLASSIFICATION else "",
                cfg.name,
            )
        if manifest.data_version:
            with ws.dataset_path.open("ab") as fh:  # the checked-out current version, byte for byte
                fh.write(dataset_csv(new_rows, header=False))
        else:
            ws.dataset_path.write_bytes(dataset_csv(new_rows, header=True))
        result["data_version"], result["size"] = dvc_add(ws.root, DATASET_FILE)
        _push(ws.root, [f"{DATASET_FILE}.dvc", f"{HOLDOUT_FILE}.dvc"], store)
        result["rows"] = manifest.rows + len(new_rows)
    log.info(
        "sync %s: data_version=%s (previous %s), %d row(s), %d new batch(es), %d duplicate(s), %d quarantined, "
        "%d flagged by the drift check",
        cfg.name,
        result["data_version"],
        manifest.data_version,
        result["rows"],
        len(result["new_batches"]),
        len(result["duplicates"]),
        len(result["quarantined"]),
        len(result["drifted_batches"]),
    )
    return result


def commit(cfg: DatasetConfig, synced: SyncResult, store: ObjectStore | None = None) -> Manifest:
    """Make the synced candidate the dataset's current version and archive its batches (and duplicates)."""
    store = store or ObjectStore()
    names = prefixes(cfg.key)
    manifest = Manifest.read(store, cfg.key) or Manifest(dataset=cfg.key)
    landed = set(store.list(names["landing"]))
    if synced["data_version"] != manifest.data_version:
        known = manifest.merged_hashes
        manifest = Manifest(
            dataset=cfg.key,
            data_version=synced["data_version"],
            size=synced["size"],
            holdout_version=synced["holdout_version"],
            holdout_size=synced["holdout_size"],
            rows=int(synced["rows"]),
            batches=[*manifest.batches, *[b for b in synced["batches"] if b["sha256"] not in known]],
            committed_at=datetime.now(UTC).isoformat(),
            holdout_cut_at=datetime.now(UTC).isoformat() if synced["holdout_cut"] else manifest.holdout_cut_at,
        )
        manifest.write(store)
        log.info(
            "committed %s data_version=%s (%d rows, %d batches)",
            cfg.name,
            manifest.data_version,
            manifest.rows,
            len(manifest.batches),
        )
    for record in [*synced["batches"], *synced["duplicates"]]:
        if record["key"] in landed:
            store.move(record["key"], record["archive"])
    return manifest


def reject(cfg: DatasetConfig, synced: SyncResult, reason: str, store: ObjectStore | None = None) -> list[str]:
    """Quarantine the batches of a candidate that failed the data checks; the dataset stays as it was."""
    store = store or ObjectStore()
    landed = set(store.list(prefixes(cfg.key)["landing"]))
    return [
        _quarantine(store, cfg.key, b["key"], b["sha256"], f"merged dataset failed data checks: {reason}")
        for b in synced["batches"]
        if b["key"] in landed
    ]


def new_holdout(cfg: DatasetConfig, store: ObjectStore | None = None) -> Manifest:
    """Cut a new holdout from the current dataset (the rest stays the dataset): a new data version.

    The champion was trained on rows that may now be in the holdout, so the next champion gate does not
    compare against it: the first model judged on the new holdout is gated on the thresholds alone.

    Raises:
        SchemaError: the dataset has no data yet, or no schema.
    """
    store = store or ObjectStore()
    manifest = Manifest.read(store, cfg.key)
    if manifest is None or not manifest.data_version or not manifest.holdout_version:
        raise SchemaError(f"dataset {cfg.key} has no committed data yet: land a batch and run the retrain DAG first")
    schema = resolve_schema(cfg, store)
    assert schema is not None
    cfg = cfg.with_schema(schema)
    ws = Workspace(cfg, store)
    ws.ensure()
    ws.checkout(manifest.data_version, manifest.holdout_version, manifest.size, manifest.holdout_size)
    holdout, rest = _cut_holdout(read_typed(ws.dataset_path, schema), cfg)
    ws.holdout_path.write_bytes(dataset_csv(holdout, header=True))
    ws.dataset_path.write_bytes(dataset_csv(rest, header=True))
    holdout_version, holdout_size = dvc_add(ws.root, HOLDOUT_FILE)
    data_version, size = dvc_add(ws.root, DATASET_FILE)
    _push(ws.root, [f"{DATASET_FILE}.dvc", f"{HOLDOUT_FILE}.dvc"], store)
    now = datetime.now(UTC).isoformat()
    manifest = replace(
        manifest,
        data_version=data_version,
        size=size,
        holdout_version=holdout_version,
        holdout_size=holdout_size,
        rows=len(rest),
        committed_at=now,
        holdout_cut_at=now,
    )
    manifest.write(store)
    log.warning(
        "dataset %s: new holdout %s (%d rows); data_version %s (%d rows). The champion comparison is reset: the "
        "next model is gated on the thresholds alone",
        cfg.key,
        holdout_version,
        len(holdout),
        data_version,
        len(rest),
    )
    return manifest
