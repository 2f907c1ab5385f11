"""Landing batches -> the DVC-tracked dataset in S3, plus restoring any data version into a folder.

Where things live (data bucket):
    landing/<dataset>/*.csv          new batches (scripts/land_batch.py fills it)
    processed/<dataset>/*.csv        batches merged into a committed dataset version
    quarantine/<dataset>/*.csv       rejected batches; the reason is in the object's metadata and in
                                     a `<name>.reason.txt` object beside it
    dvcstore/                        the DVC remote (content-addressed; never rewritten)
    datasets/<dataset>/manifest.json the current version: data_version (DVC md5), holdout_version, batches
    datasets/<dataset>/versions/<md5>.json   every committed manifest (history)

The DVC workspace is `<state_dir>/workspace/<dataset>`, a `dvc init --no-scm` repo: the task never
touches the project's git checkout, and the workspace is disposable (cache and scratch only): the state
of record is the remote plus the manifest, so any worker can rebuild it with a pull.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from flightdeck import settings as settings_mod
from flightdeck.data import generate
from flightdeck.data.store import ObjectStore
from flightdeck.data.validate import validate_batch
from flightdeck.pipeline_config import DVC_YAML_PATH, DatasetConfig
from flightdeck.services import ServiceUnavailable

log = logging.getLogger(__name__)

REMOTE = "storage"
DATASET_FILE = "data/dataset.csv"
HOLDOUT_FILE = "data/holdout.csv"


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prefixes(name: str) -> dict[str, str]:
    return {
        "landing": f"landing/{name}/",
        "processed": f"processed/{name}/",
        "quarantine": f"quarantine/{name}/",
        "manifest": f"datasets/{name}/manifest.json",
        "versions": f"datasets/{name}/versions/",
    }


def remote_url(bucket: str | None = None) -> str:
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
        raise RuntimeError(f"restored {restored} has md5 {actual}, expected {data_version}")
    return restored


@dataclass
class Manifest:
    dataset: str
    data_version: str | None = None
    size: int | None = None
    holdout_version: str | None = None
    holdout_size: int | None = None
    rows: int = 0
    batches: list[str] = field(default_factory=list)
    committed_at: str | None = None

    @classmethod
    def read(cls, store: ObjectStore, name: str) -> Manifest | None:
        key = prefixes(name)["manifest"]
        if not store.exists(key):
            return None
        return cls(**json.loads(store.read(key)))

    def write(self, store: ObjectStore) -> None:
        body = json.dumps(asdict(self), indent=2, sort_keys=True).encode()
        store.write(prefixes(self.dataset)["manifest"], body)
        if self.data_version:
            store.write(f"{prefixes(self.dataset)['versions']}{self.data_version}.json", body)


class Workspace:
    """The DVC workspace of one dataset under the state dir."""

    def __init__(self, cfg: DatasetConfig, store: ObjectStore, root: Path | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.root = root or settings_mod.load().state_dir / "workspace" / cfg.key

    @property
    def dataset_path(self) -> Path:
        return self.root / DATASET_FILE

    @property
    def holdout_path(self) -> Path:
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


def _quarantine(store: ObjectStore, name: str, key: str, reason: str) -> str:
    dst = prefixes(name)["quarantine"] + key.rsplit("/", 1)[-1]
    meta = {"reason": reason[:1500], "quarantined-at": datetime.now(UTC).isoformat()}
    store.move(key, dst, metadata=meta)
    store.write(dst + ".reason.txt", (reason + "\n").encode())
    log.error("QUARANTINED s3://%s/%s -> s3://%s/%s: %s", store.bucket, key, store.bucket, dst, reason)
    return dst


def sync(cfg: DatasetConfig, store: ObjectStore | None = None, workspace: Workspace | None = None) -> dict[str, Any]:
    """Validate landed batches, merge the good ones into a candidate dataset and push it to the remote.

    Malformed batches are moved to quarantine at once. The candidate is not yet the dataset's current
    version: `commit()` makes it so after the data checks pass (so a failing candidate changes nothing).
    """
    store = store or ObjectStore()
    store.ping()
    ws = workspace or Workspace(cfg, store)
    ws.ensure()
    names = prefixes(cfg.key)
    manifest = Manifest.read(store, cfg.key) or Manifest(dataset=cfg.key)
    if manifest.data_version and manifest.holdout_version:
        ws.checkout(manifest.data_version, manifest.holdout_version, manifest.size, manifest.holdout_size)
        holdout_version, holdout_size = manifest.holdout_version, manifest.holdout_size
        current = pd.read_csv(ws.dataset_path)
    else:
        holdout_version, holdout_size = ws.bootstrap_holdout()
        current = None
    reference = pd.read_csv(ws.holdout_path)
    features = [c for c in reference.columns if c != cfg.target]
    classes = sorted(int(c) for c in reference[cfg.target].unique())

    merged: list[str] = []
    quarantined: list[dict[str, str]] = []
    frames = [current] if current is not None else []
    for key in store.list(names["landing"]):
        base = key.rsplit("/", 1)[-1]
        if base.endswith(".reason.txt") or key.endswith("/"):
            continue
        if base in manifest.batches:
            # Merged by a run that died before moving it: finish the move, do not merge twice.
            store.move(key, names["processed"] + base)
            continue
        check = validate_batch(key, store.read(key), features, cfg.target, classes)
        if not check.ok:
            quarantined.append(
                {"key": key, "to": _quarantine(store, cfg.key, key, check.reason), "reason": check.reason}
            )
            continue
        assert check.frame is not None
        log.info("batch %s valid: %s", key, generate.describe(check.frame, cfg.target))
        frames.append(check.frame)
        merged.append(key)

    if merged:
        candidate = pd.concat(frames, ignore_index=True)[[*features, cfg.target]]
        ws.dataset_path.write_bytes(generate.to_csv_bytes(candidate))
        data_version, size = dvc_add(ws.root, DATASET_FILE)
        _push(ws.root, [f"{DATASET_FILE}.dvc", f"{HOLDOUT_FILE}.dvc"], store)
        rows = len(candidate)
    else:
        data_version, size, rows = manifest.data_version, manifest.size, manifest.rows
    result = {
        "dataset": cfg.name,
        "namespace": cfg.namespace,
        "data_version": data_version,
        "size": size,
        "rows": rows,
        "holdout_version": holdout_version,
        "holdout_size": holdout_size,
        "previous_version": manifest.data_version,
        "new_batches": merged,
        "quarantined": quarantined,
        "params_hash": cfg.params_hash,
        "model_name": cfg.model_name,
    }
    log.info(
        "sync %s: data_version=%s (previous %s), %d row(s), %d new batch(es), %d quarantined",
        cfg.name,
        data_version,
        manifest.data_version,
        rows,
        len(merged),
        len(quarantined),
    )
    return result


def commit(cfg: DatasetConfig, synced: dict[str, Any], store: ObjectStore | None = None) -> Manifest:
    """Make the synced candidate the dataset's current version and file its batches as processed."""
    store = store or ObjectStore()
    names = prefixes(cfg.key)
    manifest = Manifest.read(store, cfg.key) or Manifest(dataset=cfg.key)
    landed = set(store.list(names["landing"]))
    new_bases = [k.rsplit("/", 1)[-1] for k in synced["new_batches"]]
    if synced["data_version"] != manifest.data_version:
        manifest = Manifest(
            dataset=cfg.key,
            data_version=synced["data_version"],
            size=synced["size"],
            holdout_version=synced["holdout_version"],
            holdout_size=synced["holdout_size"],
            rows=int(synced["rows"]),
            batches=[*manifest.batches, *[b for b in new_bases if b not in manifest.batches]],
            committed_at=datetime.now(UTC).isoformat(),
        )
        manifest.write(store)
        log.info(
            "committed %s data_version=%s (%d rows, batches %s)",
            cfg.name,
            manifest.data_version,
            manifest.rows,
            manifest.batches,
        )
    for key in synced["new_batches"]:
        if key in landed:
            store.move(key, names["processed"] + key.rsplit("/", 1)[-1])
    return manifest


def reject(cfg: DatasetConfig, synced: dict[str, Any], reason: str, store: ObjectStore | None = None) -> list[str]:
    """Quarantine the batches of a candidate that failed the data checks; the dataset stays as it was."""
    store = store or ObjectStore()
    landed = set(store.list(prefixes(cfg.key)["landing"]))
    return [
        _quarantine(store, cfg.key, key, f"merged dataset failed data checks: {reason}")
        for key in synced["new_batches"]
        if key in landed
    ]


def stage_env() -> dict[str, str]:
    """Environment for DVC stage commands: `python` must be this interpreter (the venv's)."""
    import sys

    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
