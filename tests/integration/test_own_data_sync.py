"""The user's own files through sync -> check -> commit against the real S3 (SeaweedFS) and DVC remote.

A dataset is made the way a new user makes one (`flightdeck dataset init` on a sample CSV, into a copy of
params.yaml), its first batch is merged, then one landing holds every kind of bad file at once beside
good ones. Each test checks one file's fate; `test_nothing_landed_is_lost` accounts for every byte.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from flightdeck import pipeline_config, retrain, settings
from flightdeck.data import onboard
from flightdeck.data import sync as data_sync
from flightdeck.data.schema import read_typed
from flightdeck.data.store import ObjectStore
from tests.support.object_store import private_store
from tests.support.own_data import csv_bytes, customers, parquet_bytes

pytestmark = pytest.mark.integration

NS = f"own-{uuid.uuid4().hex[:8]}"
NAME = "owncsv"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The real S3 (fails, never skips, when it is down) and a private state dir for the DVC workspace."""
    yield from private_store(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def cfg(store, tmp_path_factory):
    """The dataset as `flightdeck dataset init` writes it, in a copy of params.yaml that the steps read."""
    folder = tmp_path_factory.mktemp("params")
    params = folder / "params.yaml"
    params.write_text((settings.REPO_ROOT / "params.yaml").read_text())
    sample = folder / "sample.csv"
    customers(200, seed=1).to_csv(sample, index=False)
    onboard.write_block(NAME, onboard.init_block(NAME, sample, "churned"), params)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline_config, "PARAMS_PATH", params)
        yield pipeline_config.load(NAME, namespace=NS)


def _land(store: ObjectStore, cfg, name: str, payload: bytes) -> str:
    key = data_sync.prefixes(cfg.key)["landing"] + name
    store.write(key, payload)
    return key


@pytest.fixture(scope="module")
def first(cfg, store):
    _land(store, cfg, "batch-0001.csv", csv_bytes(customers(400, seed=1)))
    synced = data_sync.sync(cfg, store)
    data_sync.commit(cfg, synced, store)
    return synced


def test_first_batch_is_merged_with_a_stratified_holdout_cut_once(first, cfg, store):
    assert first["holdout_cut"] and first["holdout_version"]
    assert first["rows"] == 300  # 400 rows, 25 % held out
    manifest = data_sync.Manifest.read(store, cfg.key)
    assert manifest.holdout_version == first["holdout_version"] and manifest.holdout_cut_at
    assert [b["key"].rsplit("/", 1)[-1] for b in manifest.batches] == ["batch-0001.csv"]
    archived = store.list(data_sync.prefixes(cfg.key)["processed"])
    assert archived == [manifest.batches[0]["archive"]]
    typed_cfg = retrain.run_config(first)
    holdout = read_typed(data_sync.Workspace(typed_cfg, store).holdout_path, typed_cfg.schema)
    shares = holdout["churned"].value_counts(normalize=True)
    full = customers(400, seed=1)["churned"].value_counts(normalize=True)
    assert (shares - full).abs().max() < 0.02  # stratified by label


BAD = {
    "unseen-label.csv": lambda f: f.assign(churned=["maybe"] + list(f["churned"][1:])),
    "null-in-plan.csv": lambda f: f.assign(plan=[None] + list(f["plan"][1:])),
    "wrong-type.csv": lambda f: f.assign(support_calls=["three"] + list(f["support_calls"][1:].astype(str))),
    "other-schema.parquet": lambda f: f.drop(columns=["region"]).assign(referrer="web"),
}
EXPECTED = {
    "unseen-label.csv": "target 'churned': 1 label(s) outside the known classes ['no', 'yes']: ['maybe'], e.g. row 1",
    "null-in-plan.csv": "column 'plan': 1 null(s) but it is not nullable, at row 1",
    "wrong-type.csv": "column 'support_calls': 1 value(s) are not integer, e.g. row 1: 'three'",
    "other-schema.parquet": "missing columns: ['region']; extra columns: ['referrer']",
    "empty.csv": "empty file",
}


@pytest.fixture(scope="module")
def second(first, cfg, store):
    """One landing with every kind at once: bad files, good ones (CSV, Parquet, a new category, a key with
    spaces under a sub-prefix, a name already merged but new rows) and a byte-identical copy."""
    landed: dict[str, bytes] = {}
    base = customers(60, seed=7)
    for name, make in BAD.items():
        frame = make(base.copy())
        landed[name] = parquet_bytes(frame) if name.endswith(".parquet") else csv_bytes(frame)
    landed["empty.csv"] = b""
    landed["good.parquet"] = parquet_bytes(customers(80, seed=8))
    landed["new-plan.csv"] = csv_bytes(customers(50, seed=9, plans=("basic", "enterprise")))
    landed["upstream/2026 11 29/batch-0001.csv"] = csv_bytes(customers(40, seed=10))  # same base name, sub-prefix
    landed["batch-0001.csv"] = csv_bytes(customers(30, seed=11))  # a merged name, landed again with new rows
    landed["copy-of-first.csv"] = csv_bytes(customers(400, seed=1))  # the first batch's exact bytes
    keys = {name: _land(store, cfg, name, payload) for name, payload in landed.items()}
    synced = data_sync.sync(cfg, store)
    assert retrain.check_data(synced)  # the DAG's gate: passes, commits, archives
    return {"synced": synced, "keys": keys, "landed": landed}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_file_is_quarantined_with_a_reason_naming_column_and_rows(second, store, cfg, name):
    quarantined = {q["key"]: q for q in second["synced"]["quarantined"]}
    entry = quarantined[second["keys"][name]]
    assert EXPECTED[name] in entry["reason"]
    assert store.exists(entry["to"]) and store.exists(entry["to"] + ".reason.txt")
    assert EXPECTED[name] in store.read(entry["to"] + ".reason.txt").decode()
    assert store.metadata(entry["to"])["reason"]


def test_unseen_category_is_counted_and_merged_under_the_report_policy(second):
    key = second["keys"]["new-plan.csv"]
    assert key in second["synced"]["new_batches"]
    counts = second["synced"]["unseen_categories"][key]["plan"]
    assert set(counts) == {"enterprise"} and counts["enterprise"] > 0


def test_batches_are_identified_by_content_not_name(second, store, cfg):
    synced = second["synced"]
    merged = {b["key"]: b for b in synced["batches"]}
    relanded, nested = second["keys"]["batch-0001.csv"], second["keys"]["upstream/2026 11 29/batch-0001.csv"]
    assert relanded in merged and nested in merged  # new rows under a merged name, and a sub-prefix, merged
    assert merged[relanded]["archive"] != merged[nested]["archive"]
    assert "upstream/2026 11 29/batch-0001.csv" in merged[nested]["archive"]
    duplicate = {d["key"]: d for d in synced["duplicates"]}[second["keys"]["copy-of-first.csv"]]
    assert duplicate["same_as"].endswith("batch-0001.csv")
    assert store.exists(duplicate["archive"])
    good_rows = 80 + 50 + 40 + 30
    assert synced["rows"] == 300 + good_rows


def test_merged_dataset_holds_exactly_the_good_rows(second, cfg, store, first):
    manifest = data_sync.Manifest.read(store, cfg.key)
    assert manifest.data_version == second["synced"]["data_version"]
    typed_cfg = retrain.run_config(second["synced"])
    dest = Path(settings.load().state_dir) / "restore-check"
    restored = data_sync.restore(manifest.data_version, dest, size=manifest.size, store=store)
    frame = read_typed(restored, typed_cfg.schema)
    assert len(frame) == manifest.rows == 300 + 200
    assert "enterprise" in set(frame["plan"].dropna())
    assert frame["region"].isna().any() and frame["monthly_charges"].isna().any()  # nulls kept as nulls


def test_nothing_landed_is_lost(second, store, cfg):
    names = data_sync.prefixes(cfg.key)
    everywhere = {}
    for prefix in (names["landing"], names["processed"], names["quarantine"]):
        for key in store.list(prefix):
            if not key.endswith(".reason.txt"):
                everywhere.setdefault(hashlib.sha256(store.read(key)).hexdigest(), []).append(key)
    for name, payload in second["landed"].items():
        found = everywhere.get(hashlib.sha256(payload).hexdigest(), [])
        assert found, f"{name} is nowhere"
        assert not any(k.startswith(names["landing"]) for k in found), f"{name} still in landing after a commit"
    assert store.list(names["landing"]) == []


def test_a_second_sync_with_nothing_new_changes_nothing(second, cfg, store):
    again = data_sync.sync(cfg, store)
    assert again["new_batches"] == [] and again["quarantined"] == []
    assert again["data_version"] == second["synced"]["data_version"]
