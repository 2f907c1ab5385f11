"""Batch scoring (flightdeck.batch_predict) on an in-process S3 (moto) with a real saved model loaded by the
model server's own loader: chunking, rejects as /predict refuses them, the deterministic job id, resume
after a failure without duplicates, the manifest."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flightdeck import batch_predict as bp
from serving.model import LoadedModel, load_model_dir
from serving.schema import RequestError
from tests.support.model_examples import ExampleModel, save_breast_cancer_model

BUCKET = "data"


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> ExampleModel:
    return save_breast_cancer_model(tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="module")
def model(example) -> LoadedModel:
    return load_model_dir(example.path, max_rows=1_000)


@pytest.fixture()
def s3() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _parquet(frame: Any) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


def _land(s3: Any, example: ExampleModel, prefix: str = "in/") -> None:
    """The data set as a CSV (rows 0-299) and a Parquet file (rows 300-568), with an id column."""
    frame = example.X.copy()
    frame.insert(0, "id", np.arange(len(frame)))
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}a.csv", Body=frame.iloc[:300].to_csv(index=False).encode())
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}b.parquet", Body=_parquet(frame.iloc[300:]))


def _job(s3: Any, chunk_rows: int = 64, root: str = "s3://data/predictions", **options: Any) -> bp.Job:
    inputs = bp.list_inputs(s3, BUCKET, "in")
    return bp.plan_job(
        model_name="m",
        model_version="3",
        run_id="run",
        alias="champion",
        input_bucket=BUCKET,
        inputs=inputs,
        options=bp.Options(chunk_rows=chunk_rows, **options),
        output_root=root,
    )


def _read(s3: Any, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))


def _parts(s3: Any, job: bp.Job) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=job.output_prefix).get("Contents", [])]
    return {k[len(job.output_prefix) :]: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


# ---- chunking ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(bp.InputFormat))
@pytest.mark.parametrize(("rows", "chunk_rows"), [(569, 100), (500, 100), (7, 100), (0, 10)])
def test_chunks_have_exactly_chunk_rows_rows_and_only_the_last_is_marked_last(tmp_path, example, fmt, rows, chunk_rows):
    frame = example.X.iloc[:rows]
    path = tmp_path / f"in.{fmt.value}"
    if fmt is bp.InputFormat.CSV:
        frame.to_csv(path, index=False)
    else:
        path.write_bytes(_parquet(frame))
    chunks = list(bp.read_chunks(path, fmt, chunk_rows))
    sizes = [c.num_rows for c, _ in chunks]
    expected = [chunk_rows] * (rows // chunk_rows) + ([rows % chunk_rows] if rows % chunk_rows else [])
    assert sizes == (expected or [0])
    assert [last for _, last in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(c.column_names == list(frame.columns) for c, _ in chunks)
    if fmt is bp.InputFormat.CSV and rows:  # CSV stays text: the server's CSV coercion types it
        assert chunks[0][0].schema.types[0] == pa.string()


def test_csv_chunks_across_pyarrow_blocks_keep_every_row_in_order(tmp_path):
    """More rows than one 8 MiB read block: chunk boundaries do not depend on the blocks."""
    n = 400_000
    path = tmp_path / "big.csv"
    path.write_text("i,x\n" + "".join(f"{i},{i * 0.5}\n" for i in range(n)))
    chunks = list(bp.read_chunks(path, bp.InputFormat.CSV, 150_000))
    assert [c.num_rows for c, _ in chunks] == [150_000, 150_000, 100_000]
    ids = np.concatenate([np.asarray(c.column("i").to_pylist(), dtype=np.int64) for c, _ in chunks])
    assert (ids == np.arange(n)).all()


# ---- rejects: the server's refusals, row by row ---------------------------------------------------


def test_rows_the_server_refuses_go_to_rejects_with_its_reason_and_the_rest_are_scored(model, example):
    columns = {name: list(example.X[name].iloc[:50]) for name in model.validator.order}
    first = model.validator.order[0]
    columns[first][3] = "abc"  # a string in a double column
    columns[first][17] = float("nan")  # JSON has no NaN: /predict says non_finite
    columns[first][40] = None  # a null in a required column
    result = bp.score_chunk(model, columns, text=False, probabilities=True)

    assert [r.row for r in result.rejects] == [3, 17, 40]
    for reject in result.rejects:  # the very refusal /predict gives for that row alone
        one_row = {name: [values[reject.row]] for name, values in columns.items()}
        with pytest.raises(RequestError) as refused:
            model.validator.columnar(one_row, "columns")
        assert (reject.code, reject.message) == (refused.value.code, refused.value.message)
    good = [i for i in range(50) if i not in (3, 17, 40)]
    assert result.accepted == good
    assert result.predictions == example.estimator.predict(example.X.iloc[good]).tolist()
    assert np.allclose(result.probabilities, example.estimator.predict_proba(example.X.iloc[good]))


def test_csv_text_is_read_as_the_server_reads_text_csv(model, example):
    """Numbers as text are coerced; text that is no number is a wrong_type reject naming the column."""
    columns = {name: [repr(float(v)) for v in example.X[name].iloc[:10]] for name in model.validator.order}
    columns[model.validator.order[2]][5] = "12,5"
    result = bp.score_chunk(model, columns, text=True, probabilities=False)
    assert [(r.row, r.code) for r in result.rejects] == [(5, "wrong_type")]
    assert repr(model.validator.order[2]) in result.rejects[0].message
    assert result.predictions == example.estimator.predict(example.X.iloc[[0, 1, 2, 3, 4, 6, 7, 8, 9]]).tolist()


def test_a_job_writes_rejects_next_to_predictions_and_counts_them(s3, model, example, tmp_path):
    frame = example.X.iloc[:100].copy()
    frame.insert(0, "id", np.arange(100))
    text = frame.to_csv(index=False).splitlines()
    cells = text[1 + 42].split(",")
    cells[1] = "not-a-number"
    text[1 + 42] = ",".join(cells)
    s3.put_object(Bucket=BUCKET, Key="in/a.csv", Body=("\n".join(text) + "\n").encode())
    job = _job(s3, chunk_rows=30)
    bp.run_job(job, model, s3, workdir=tmp_path)
    manifest = bp.write_manifest(job, None, s3)

    assert (manifest.rows_in, manifest.rows_out, manifest.rows_rejected) == (100, 99, 1)
    rejects = _read(s3, job.rejects_key(0, 1))  # row 42 is in the second chunk of 30
    assert rejects.column("row").to_pylist() == [42] and rejects.column("id").to_pylist() == ["42"]
    assert rejects.column("error_code").to_pylist() == ["wrong_type"]
    predicted = pa.concat_tables([_read(s3, job.part_key(0, c)) for c in range(4)])
    assert 42 not in predicted.column("id").to_pylist() and predicted.num_rows == 99
    assert predicted.schema.field("mean radius").type == pa.float64()  # accepted CSV columns written typed


# ---- the job id --------------------------------------------------------------------------------


def test_the_job_id_depends_on_model_version_data_version_and_options_only(s3, example):
    _land(s3, example)
    job = _job(s3)
    assert _job(s3).job_id == job.job_id
    assert _job(s3, root="s3://elsewhere/out").job_id == job.job_id  # where it goes is not what it is
    assert _job(s3, chunk_rows=65).job_id != job.job_id
    assert _job(s3, return_probabilities=True).job_id != job.job_id
    other_version = bp.plan_job(
        model_name="m",
        model_version="4",
        run_id="run",
        alias="",
        input_bucket=BUCKET,
        inputs=job.inputs,
        options=job.options,
        output_root="s3://data/predictions",
    )
    assert other_version.job_id != job.job_id
    s3.put_object(Bucket=BUCKET, Key="in/b.parquet", Body=_parquet(example.X.iloc[:10]))  # new content, new ETag
    changed = _job(s3)
    assert changed.data_version != job.data_version and changed.job_id != job.job_id
    assert job.output_prefix == f"predictions/m/3/{job.job_id}/"


def test_a_prefix_is_a_folder_and_a_key_is_one_file(s3, example):
    _land(s3, example, "in/")
    _land(s3, example, "in2/")
    assert [o.key for o in bp.list_inputs(s3, BUCKET, "in")] == ["in/a.csv", "in/b.parquet"]
    assert [o.key for o in bp.list_inputs(s3, BUCKET, "in/b.parquet")] == ["in/b.parquet"]
    with pytest.raises(bp.NoInputFiles, match="s3://data/nothing"):
        bp.list_inputs(s3, BUCKET, "nothing/")


def test_a_key_in_a_dvc_remote_records_its_dvc_md5():
    inputs = [bp.InputObject("dvc/files/md5/ab/" + "c" * 30, "e", 1, bp.InputFormat.CSV)]
    assert bp.dvc_data_version(inputs) == "ab" + "c" * 30
    assert bp.dvc_data_version([bp.InputObject("landing/x.csv", "e", 1, bp.InputFormat.CSV)]) == ""


def test_the_job_survives_its_xcom_round_trip(s3, example):
    _land(s3, example)
    job = _job(s3, id_column="id")
    assert bp.Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job


def test_params_without_an_input_are_refused():
    with pytest.raises(bp.BatchPredictError, match="input"):
        bp.JobParams.from_params({"model": "champion", "input": " "})
    p = bp.JobParams.from_params({"model": "2026", "input": "in/", "chunk_rows": 10, "id_column": "None"})
    assert (p.model, p.id_column, p.chunk_rows) == ("2026", "None", 10)


# ---- scoring and resume --------------------------------------------------------------------------


def test_predictions_equal_the_models_own_for_csv_and_parquet(s3, model, example, tmp_path):
    _land(s3, example)
    job = _job(s3, chunk_rows=64, return_probabilities=True, id_column="id")
    summary = bp.run_job(job, model, s3, workdir=tmp_path)
    assert summary["chunks_scored"] == 5 + 5 and summary["rows_scored"] == len(example.X)
    parts = [_read(s3, job.part_key(f, c)) for f in range(2) for c in range(5)]
    assert parts[0].schema.field("id").type == pa.string()  # a CSV column outside the signature stays text
    parts = [p.set_column(0, "id", p.column("id").cast(pa.int64())) for p in parts]
    table = pa.concat_tables(parts)
    ids = np.asarray(table.column("id").to_pylist(), dtype=np.int64)
    assert sorted(ids.tolist()) == list(range(len(example.X)))
    assert table.column_names == ["id", "prediction", "probability_0", "probability_1"]
    X = example.X.iloc[ids]
    assert table.column("prediction").to_pylist() == example.estimator.predict(X).tolist()
    assert np.allclose(table.column("probability_1").to_numpy(), example.estimator.predict_proba(X)[:, 1])


class Killed(Exception):
    """Stands for the process dying after a part was written."""


def test_a_run_failing_after_n_chunks_then_rerun_gives_the_same_parts_and_no_duplicates(s3, model, example, tmp_path):
    _land(s3, example)
    clean = _job(s3, root="s3://data/clean")
    bp.run_job(clean, model, s3, workdir=tmp_path)
    expected = _parts(s3, clean)

    job = _job(s3)
    written: list[str] = []

    def die_after_three(part: bp.PartInfo) -> None:
        written.append(part.key)
        if len(written) == 3:
            raise Killed

    with pytest.raises(Killed):
        bp.run_job(job, model, s3, after_part=die_after_three, workdir=tmp_path)
    with pytest.raises(bp.IncompleteJob):
        bp.write_manifest(job, None, s3)
    assert len(_parts(s3, job)) == 3

    rerun: list[str] = []
    summary = bp.run_job(job, model, s3, after_part=lambda p: rerun.append(p.key), workdir=tmp_path)
    assert (summary["chunks_skipped"], summary["chunks_scored"]) == (3, 7)
    assert not set(rerun) & set(written), "a part written before the failure was written again"
    assert _parts(s3, job) == expected  # the same keys with the same bytes
    manifest = bp.write_manifest(job, summary, s3)
    assert manifest.rows_in == manifest.rows_out == len(example.X)
    assert [p["key"] for p in manifest.parts] == [job.part_key(f, c) for f in range(2) for c in range(5)]

    again = bp.run_job(job, model, s3, after_part=lambda p: rerun.append(p.key), workdir=tmp_path)
    assert again["chunks_scored"] == 0 and again["chunks_skipped"] == 10  # done: nothing rewritten


def test_the_manifest_carries_lineage_and_counts(s3, model, example, tmp_path):
    _land(s3, example)
    job = _job(s3)
    summary = bp.run_job(job, model, s3, workdir=tmp_path)
    bp.write_manifest(job, summary, s3)
    body = json.loads(s3.get_object(Bucket=BUCKET, Key=job.output_prefix + bp.MANIFEST_NAME)["Body"].read())
    assert body["model"] == {"name": "m", "version": "3", "run_id": "run", "alias_asked": "champion"}
    assert body["input"]["data_version"] == job.data_version
    assert [f["key"] for f in body["input"]["files"]] == ["in/a.csv", "in/b.parquet"]
    assert [f["rows_in"] for f in body["input"]["files"]] == [300, len(example.X) - 300]
    assert body["job_id"] == job.job_id and body["times"]["rows_scored"] == len(example.X)


def test_a_file_missing_a_required_column_stops_the_job_naming_it(s3, model, example, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="in/a.csv", Body=example.X.iloc[:5, 1:].to_csv(index=False).encode())
    with pytest.raises(bp.InputSchemaError, match="mean radius"):
        bp.run_job(_job(s3), model, s3, workdir=tmp_path)


def test_part_keys_sort_in_input_order(s3, example):
    _land(s3, example)
    job = _job(s3)
    keys = [job.part_key(f, c) for f in (0, 1, 12) for c in (0, 9, 10, 123)]
    assert sorted(keys) == keys and Path(keys[0]).name == "part-00000-000000.parquet"
