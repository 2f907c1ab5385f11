"""batch_predict of 1M rows end to end, beside the floor of the evaluator alone, in one run.

The data: the bundled breast-cancer table's 30 features, rows resampled with replacement to 1M and each
value multiplied by N(1, 0.05) noise (seeded), plus an `id` column; landed in the platform's S3 as Parquet
(4 files of 250k rows) and as CSV (the same rows, 4 files). The model: a logistic regression on the
bundled set, registered under `fd-bench-batch-predict` (a new version per run, so no part is reused).

Each measurement runs in its own child process (`run.py --child ...`), and reports its own peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`):

- `batch_predict parquet|csv`: the DAG's three steps in one process, as `python -m flightdeck.batch_predict`
  runs them: resolve (MLflow + S3 listing), score (model download and load, S3 download, chunked reading,
  the server's validator and model, Parquet parts PUT to S3), manifest. Wall time from the first step to the
  manifest; `score rows/s` is the score step's own figure.
- `floor: evaluator`: the same model directory loaded by the same loader, the same 1M rows generated in
  memory, cut into the same 100k-row chunks as Python column lists (outside the clock), then only what the
  server does to a `/predict` body: `validator.columnar` + `model.predict`. No I/O. Its peak RSS includes
  the whole data set held in memory (1M x 31 float64, 248 MB), which batch_predict never holds.
- `floor: predict only`: `model.predict` on the already-validated batches: the model's own cost.

    make bench-batch-predict   (or .venv/bin/python bench/batch_predict/run.py [--rows 1000000])
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "include")]
SCRATCH = ROOT / "build" / "bench-batch-predict"
MODEL_NAME = "fd-bench-batch-predict"
SEED = 11
FILES = 4
CHUNK_ROWS = 100_000
# run name -> (input format, id column: "" carries every input column to the output)
RUNS = {"parquet": ("parquet", ""), "parquet, id column only": ("parquet", "id"), "csv": ("csv", "")}


def generate(rows: int) -> Any:
    """`rows` rows: `id` then the breast-cancer features, resampled with N(1, 0.05) multiplicative noise."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    rng = np.random.default_rng(SEED)
    values = X.to_numpy()[rng.integers(0, len(X), rows)] * rng.normal(1.0, 0.05, (rows, X.shape[1]))
    frame = pd.DataFrame(values, columns=X.columns)
    frame.insert(0, "id", np.arange(rows, dtype=np.int64))
    return frame


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------------------------------------- children


def child_e2e(args: argparse.Namespace) -> dict[str, Any]:
    """The three steps of the DAG in this process; seconds per step, rows/s, peak RSS."""
    from flightdeck import batch_predict as bp

    params = {
        "model_name": MODEL_NAME,
        "model": args.model,
        "input": args.input,
        "output": args.output,
        "chunk_rows": CHUNK_ROWS,
        "id_column": args.id_column or "",
    }
    t0 = time.perf_counter()
    job = bp.resolve_step(params)
    t1 = time.perf_counter()
    summary = bp.score_step(job)
    t2 = time.perf_counter()
    manifest = bp.manifest_step(job, summary)
    t3 = time.perf_counter()
    return {
        "rows": manifest["rows_out"],
        "rejected": manifest["rows_rejected"],
        "chunks": manifest["chunks"],
        "seconds": t3 - t0,
        "resolve_s": t1 - t0,
        "score_s": t2 - t1,
        "manifest_s": t3 - t2,
        "rows_per_s": manifest["rows_out"] / (t3 - t0),
        "score_rows_per_s": summary["rows_per_second"],
        "score_stage_seconds": summary["stage_seconds"],
        "peak_rss_mb": _maxrss_mb(),
        "output": manifest["output"],
    }


def child_floor(args: argparse.Namespace) -> dict[str, Any]:
    """The server's evaluator alone on the same rows from memory: validator.columnar + predict per chunk."""
    import warnings

    warnings.simplefilter("ignore")
    from serving.model import load_model_dir

    model = load_model_dir(args.model_dir, max_rows=CHUNK_ROWS)
    frame = generate(args.rows).drop(columns="id")
    order = model.validator.order
    evaluator_s = predict_s = 0.0
    rows = 0
    for start in range(0, args.rows, CHUNK_ROWS):
        part = frame.iloc[start : start + CHUNK_ROWS]
        columns = {name: part[name].tolist() for name in order}  # the input as /predict receives it (unclocked)
        t = time.perf_counter()
        batch = model.validator.columnar(columns, "columns")
        predictions = model.predict(batch)
        evaluator_s += time.perf_counter() - t
        t = time.perf_counter()
        model.predict(batch)
        predict_s += time.perf_counter() - t
        rows += len(predictions)
        del columns
    return {
        "rows": rows,
        "evaluator_s": evaluator_s,
        "predict_s": predict_s,
        "evaluator_rows_per_s": rows / evaluator_s,
        "predict_rows_per_s": rows / predict_s,
        "peak_rss_mb": _maxrss_mb(),
        "evaluator": model.extra.get("evaluator"),
    }


def _run_child(*argv: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "include")])}
    proc = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {argv[:2]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- parent


def land(s3: Any, bucket: str, prefix: str, rows: int) -> dict[str, int]:
    """The data set under `prefix`parquet/ and `prefix`csv/ (FILES files each); bytes landed per format."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(generate(rows), preserve_index=False)
    per_file = -(-rows // FILES)
    sizes = {"parquet": 0, "csv": 0}
    for i in range(FILES):
        part = table.slice(i * per_file, per_file)
        for fmt in sizes:
            sink = io.BytesIO()
            if fmt == "parquet":
                pq.write_table(part, sink)
            else:
                pacsv.write_csv(part, sink)
            body = sink.getvalue()
            sizes[fmt] += len(body)
            s3.put_object(Bucket=bucket, Key=f"{prefix}{fmt}/part-{i}.{fmt}", Body=body)
    return sizes


def delete_prefix(s3: Any, bucket: str, prefix: str) -> None:
    """Delete every object under `prefix` (the bench's inputs and outputs)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def register_model(tracking_uri: str) -> str:
    """A new version of MODEL_NAME (a logistic regression on the bundled set); its version number."""
    import mlflow

    from tests.support.model_examples import log_breast_cancer_model

    mlflow.set_tracking_uri(tracking_uri)
    version, _ = log_breast_cancer_model(MODEL_NAME, experiment="fd-bench-batch-predict")
    return str(version)


def table(rows: list[tuple[str, float, float, float, str]]) -> str:
    """The figures as a fixed-width table: what, seconds, rows/s, peak RSS, ratio to the evaluator floor."""
    head = f"{'run':<36} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12} {'x floor':>8}"
    lines = [head, "-" * len(head)]
    lines += [f"{what:<36} {s:>8.2f} {rps:>10,.0f} {rss:>12.0f} {ratio:>8}" for what, s, rps, rss, ratio in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the landed data and the predictions in S3")
    parser.add_argument("--child", choices=["e2e", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--id-column", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child_e2e(args) if args.child == "e2e" else child_floor(args)
        print(json.dumps(result))
        return 0

    import warnings

    from flightdeck import images, settings
    from flightdeck import s3 as s3_mod

    warnings.simplefilter("ignore", FutureWarning)  # skops walking Airflow's deprecated names, once per import
    settings.apply_defaults()
    conf = settings.load()
    s3 = s3_mod.client()
    started = datetime.now(UTC)
    prefix = f"bench/batch-predict/{uuid.uuid4().hex[:8]}/"
    print(f"landing {args.rows:,} rows as Parquet and CSV under s3://{conf.data_bucket}/{prefix} ...", flush=True)
    sizes = land(s3, conf.data_bucket, prefix, args.rows)
    version = register_model(conf.mlflow_uri)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    model_dir = images.download_model(
        images.ModelRef(MODEL_NAME, version), SCRATCH / f"model-{version}", tracking_uri=conf.mlflow_uri
    )
    results: dict[str, Any] = {}
    try:
        print("floor: the server's evaluator on the same rows in memory ...", flush=True)
        results["floor"] = _run_child("--child", "floor", "--rows", str(args.rows), "--model-dir", str(model_dir))
        for run, (fmt, id_column) in RUNS.items():
            print(f"batch_predict {run} ...", flush=True)
            results[run] = _run_child(
                "--child",
                "e2e",
                "--model",
                version,
                "--input",
                f"s3://{conf.data_bucket}/{prefix}{fmt}/",
                "--output",
                f"s3://{conf.data_bucket}/{prefix}out-{fmt}-{id_column or 'all'}",
                "--id-column",
                id_column,
            )
            results[run]["input_bytes"] = sizes[fmt]
    finally:
        if not args.keep:
            delete_prefix(s3, conf.data_bucket, prefix)

    floor = results["floor"]
    rows = [
        (
            "floor: evaluator (validate+predict)",
            floor["evaluator_s"],
            floor["evaluator_rows_per_s"],
            floor["peak_rss_mb"],
            "1.00",
        ),
        ("floor: predict only", floor["predict_s"], floor["predict_rows_per_s"], floor["peak_rss_mb"], ""),
    ]
    for run in RUNS:
        r = results[run]
        ratio = floor["evaluator_rows_per_s"] / r["rows_per_s"]
        rows.append((f"batch_predict {run}", r["seconds"], r["rows_per_s"], r["peak_rss_mb"], f"{ratio:.2f}"))
    text = table(rows)
    print()
    print(text)
    for run in RUNS:
        r = results[run]
        print(
            f"{run}: resolve {r['resolve_s']:.2f} s, score {r['score_s']:.2f} s ({r['score_rows_per_s']:,.0f} rows/s "
            f"inside the step), manifest {r['manifest_s']:.2f} s; {r['chunks']} parts; "
            f"input {r['input_bytes'] / 1e6:.0f} MB"
        )
        print("    inside score: " + ", ".join(f"{k} {v:.2f} s" for k, v in r["score_stage_seconds"].items()))
    load = os.getloadavg()
    meta = {
        "when": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {os.uname().machine}, Python {sys.version.split()[0]}",
        "loadavg": " ".join(f"{x:.1f}" for x in load),
        "command": "python bench/batch_predict/run.py " + " ".join(sys.argv[1:]),
        "rows": args.rows,
        "chunk_rows": CHUNK_ROWS,
        "model": f"{MODEL_NAME} v{version} (LogisticRegression, 30 double features)",
    }
    out = Path(__file__).with_name("results.json")
    out.write_text(json.dumps({"meta": meta, "results": results, "table": text.splitlines()}, indent=1) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
