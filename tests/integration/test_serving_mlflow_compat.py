"""MLflow's own client and documented scoring payloads get the same predictions from our
/invocations as from `mlflow models serve` on the same model directory.

Starts both servers locally (no platform services needed; marked integration for the time it takes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.model_examples import save_breast_cancer_model  # noqa: E402

pytestmark = pytest.mark.integration
VENV_BIN = Path(sys.executable).parent
PORTS = {"forest": (8131, 8132), "mixed": (8133, 8134), "optional": (8135, 8136)}
OURS, THEIRS = PORTS["forest"]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server for {url} exited with {proc.returncode}"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise TimeoutError(url)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=fh, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _serve(model_dir: Path, ours: int, theirs: int, work: Path) -> list[subprocess.Popen]:
    """Our server (gunicorn, as the image runs it) and `mlflow models serve` on the same model directory."""
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    mine = _start(
        [
            str(VENV_BIN / "gunicorn"),
            "-c",
            "serving/gunicorn.conf.py",
            "--no-control-socket",
            "serving.app:create_app()",
        ],
        {**env, "SERVING_MODEL_DIR": str(model_dir), "PORT": str(ours), "SERVING_HOST": "127.0.0.1"},
        work / f"ours-{ours}.log",
    )
    mlflow = _start(
        [
            str(VENV_BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(theirs),
            "-w",
            "1",
            "--env-manager",
            "local",
        ],
        env,
        work / f"mlflow-{theirs}.log",
    )
    return [mine, mlflow]


@pytest.fixture(scope="module")
def all_servers(tmp_path_factory):
    """Three models, each behind both servers: all-double (forest), mixed types, optional columns."""
    from sklearn.ensemble import RandomForestClassifier

    from tests.support.model_examples import save_mixed_type_model, save_tabular_model

    work = tmp_path_factory.mktemp("compat")
    models = {
        "forest": save_breast_cancer_model(work / "forest", "rf", n_estimators=10),
        "mixed": save_mixed_type_model(work / "mixed"),
        "optional": save_tabular_model(
            work / "optional", RandomForestClassifier(n_estimators=15, random_state=0, n_jobs=1), task="bool"
        ),
    }
    procs = []
    try:
        for model, (ours, theirs) in zip(models.values(), PORTS.values(), strict=True):
            procs += _serve(model.path, ours, theirs, work)
        for (ours, theirs), (mine, mlflow) in zip(
            PORTS.values(), zip(procs[::2], procs[1::2], strict=True), strict=True
        ):
            _wait(f"http://127.0.0.1:{ours}/readyz", mine)
            _wait(f"http://127.0.0.1:{theirs}/ping", mlflow)
        yield models
    finally:
        for proc in procs:
            _stop(proc)


@pytest.fixture(scope="module")
def servers(all_servers):
    return all_servers["forest"]


def test_mlflow_scoring_client_gets_the_same_predictions(servers):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    frame = servers.X.iloc[:60]
    # the client as MLflow's own tooling uses it: poll /ping until ready, then invoke
    ScoringServerClient("127.0.0.1", OURS).wait_server_ready(timeout=10)
    ours = ScoringServerClient("127.0.0.1", OURS).invoke(frame).get_predictions()
    theirs = ScoringServerClient("127.0.0.1", THEIRS).invoke(frame).get_predictions()
    assert ours.equals(theirs)
    assert ours.iloc[:, 0].tolist() == servers.expected(0, 60)


def _payloads(model) -> dict[str, str]:
    frame = model.X.iloc[100:140]
    records = frame.to_dict(orient="records")
    split = json.loads(frame.to_json(orient="split"))
    return {
        "dataframe_split": json.dumps({"dataframe_split": split}),
        "dataframe_records": json.dumps({"dataframe_records": records}),
        "instances": json.dumps({"instances": records}),
        "inputs": json.dumps({"inputs": {c: frame[c].tolist() for c in frame.columns}}),
        # the example MLflow itself wrote next to the model at log time
        "serving_input_example": (model.path / "serving_input_example.json").read_text(),
    }


@pytest.mark.parametrize(
    "fmt", ["dataframe_split", "dataframe_records", "instances", "inputs", "serving_input_example"]
)
def test_documented_payloads_agree(servers, fmt):
    body = _payloads(servers)[fmt]
    answers = []
    for port in (OURS, THEIRS):
        resp = requests.post(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        answers.append(resp.json())
    assert answers[0] == answers[1]
    assert len(answers[0]["predictions"]) >= 1


def test_both_refuse_a_missing_column_with_a_4xx(servers):
    frame = servers.X.iloc[:2].drop(columns=["mean radius"])
    body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split"))})
    for port in (OURS, THEIRS):
        resp = requests.post(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert 400 <= resp.status_code < 500, (port, resp.status_code, resp.text)
        assert "mean radius" in resp.text


# ---- a generated corpus: shapes x value types x coercions x extra columns x JSON/CSV ----------------

JSON_SHAPES = (
    "split",
    "split_index",
    "split_reordered",
    "split_object_rows",
    "records",
    "instances",
    "instances_columns",
    "inputs_columns",
    "inputs_records",
    "inputs_one_row",
)
# How each signature type's values are written: MLflow's parsers cast all of these to the column's type.
COERCIONS = {
    "native": {},
    "ints_for_doubles": {"double": lambda v: int(round(v))},
    "strings_for_numbers": {"double": repr, "long": str},
    "floats_for_longs": {"long": float},
    "bools_as_0_1_and_bools_for_doubles": {"boolean": int, "double": lambda v: v > 10},
    "padded_integer_strings": {"long": lambda v: f" {v} "},
}
EXTRAS = {
    "no_extra": {},
    "request_id": {"request_id": "r-1"},
    "several": {"request_id": "r-2", "trace": 7, "note": None, "spend_cents": 1.5},
}
PARAMS = ({}, {"params": {"temperature": 0.5}}, {"params": None}, {"params": {}})
CSV_STYLES = ("plain", "with_index", "charset", "lowercase_bools", "bools_as_0_1", "longs_as_floats", "quoted")


def _signature(model) -> dict[str, tuple[str, bool]]:
    import yaml

    mlmodel = yaml.safe_load((model.path / "MLmodel").read_text())
    return {c["name"]: (c["type"], c.get("required", True)) for c in json.loads(mlmodel["signature"]["inputs"])}


def _base_rows(model, start: int, n: int) -> list[dict]:
    """Rows of the model's data as JSON values of the signature's types (NaN as null)."""
    import math

    sig = _signature(model)
    rows = []
    strings = [name for name, (kind, _) in sig.items() if kind == "string"]
    # A null in a string column is left out: MLflow feeds the model NaN or None depending on what else
    # the request holds (pandas' dtype inference), or the string "None" (instances/inputs); this server
    # feeds the missing value the fitted encoder saw (see the README).
    frame = model.X.dropna(subset=strings) if strings else model.X
    for record in frame.iloc[start : start + n].to_dict(orient="records"):
        row = {}
        for name, (kind, _required) in sig.items():
            v = record[name]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                row[name] = None
            elif kind == "long":
                row[name] = int(v)
            elif kind == "boolean":
                row[name] = bool(v)
            elif kind == "double":
                row[name] = float(v)
            else:
                row[name] = v
        rows.append(row)
    return rows


def _coerce_rows(rows: list[dict], sig, coercion: str) -> list[dict]:
    table = COERCIONS[coercion]
    return [
        {k: (table[sig[k][0]](v) if v is not None and sig[k][0] in table else v) for k, v in row.items()}
        for row in rows
    ]


def _json_body(shape: str, rows: list[dict]) -> dict:
    names = list(rows[0])
    if shape.startswith("split"):
        if shape == "split_reordered":
            names = names[::-1]
        data = [[row[k] for k in names] for row in rows]
        split: dict = {"columns": names, "data": data}
        if shape == "split_index":
            split["index"] = list(range(100, 100 + len(rows)))
        if shape == "split_object_rows":
            split["data"] = [dict(zip(names, r, strict=True)) for r in data]
        return {"dataframe_split": split}
    columns = {k: [row[k] for row in rows] for k in names}
    return {
        "records": {"dataframe_records": rows},
        "instances": {"instances": rows},
        "instances_columns": {"instances": columns},
        "inputs_columns": {"inputs": columns},
        "inputs_records": {"inputs": rows},
        "inputs_one_row": {"inputs": rows[0]},
    }[shape]


def _csv_body(style: str, rows: list[dict], sig) -> tuple[str, str]:
    import csv
    import io

    def cell(name, v):
        if v is None:
            return ""
        kind = sig.get(name, ("string", False))[0]
        if isinstance(v, bool):
            return {"lowercase_bools": str(v).lower(), "bools_as_0_1": str(int(v))}.get(style, str(v))
        if kind == "long" and style == "longs_as_floats":
            return f"{float(v)}"
        return str(v) if not isinstance(v, float) else repr(v)

    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC if style == "quoted" else csv.QUOTE_MINIMAL)
    names = list(rows[0])
    index = style == "with_index"
    writer.writerow(([""] if index else []) + names)
    for i, row in enumerate(rows):
        values = [cell(k, row[k]) for k in names]
        if style == "quoted":  # numbers stay unquoted (QUOTE_NONNUMERIC), text is quoted
            values = [_number_or_text(v) for v in values]
        writer.writerow(([i] if index else []) + values)
    ctype = "text/csv; charset=utf-8" if style == "charset" else "text/csv"
    return out.getvalue(), ctype


def _number_or_text(text: str):
    try:
        return float(text) if "." in text or "e" in text else int(text)
    except ValueError:
        return text


def valid_corpus(models) -> list[tuple[str, str, str, str, list[str]]]:
    """(model, case id, content type, body, extra column names), every combination that fits the model."""
    cases = []
    for name, model in models.items():
        sig = _signature(model)
        kinds = {kind for kind, _ in sig.values()}
        for ci, coercion in enumerate(COERCIONS):
            if coercion != "native" and not set(COERCIONS[coercion]) & kinds:
                continue  # nothing of that type to coerce in this model
            for si, shape in enumerate(JSON_SHAPES):
                extra_name = list(EXTRAS)[(ci + si) % len(EXTRAS)]
                n = 1 if shape == "inputs_one_row" else 3
                rows = _coerce_rows(_base_rows(model, 7 * si + ci, n), sig, coercion)
                if shape == "inputs_one_row":
                    extra_name = "no_extra"  # MLflow refuses extra keys in this form (a 400: see the invalid cases)
                rows = [{**row, **EXTRAS[extra_name]} for row in rows]
                body = {**_json_body(shape, rows), **PARAMS[(ci + 2 * si) % len(PARAMS)]}
                case = f"{name}/{shape}/{coercion}/{extra_name}"
                cases.append((name, case, "application/json", json.dumps(body), list(EXTRAS[extra_name])))
        for si, style in enumerate(CSV_STYLES):
            for ei, extra_name in enumerate(EXTRAS):
                rows = [{**row, **EXTRAS[extra_name]} for row in _base_rows(model, 5 * si + ei, 4)]
                body, ctype = _csv_body(style, rows, sig)
                extra = list(EXTRAS[extra_name]) + (["Unnamed: 0"] if style == "with_index" else [])
                cases.append((name, f"{name}/csv/{style}/{extra_name}", ctype, body, sorted(extra)))
    return cases


def _post(port: int, body: str | bytes, ctype: str | None) -> requests.Response:
    headers = {"Content-Type": ctype} if ctype else {}
    return requests.post(f"http://127.0.0.1:{port}/invocations", data=body, headers=headers, timeout=60)


def test_generated_corpus_of_valid_inputs_gets_mlflows_answers(all_servers):
    cases = valid_corpus(all_servers)
    assert len(cases) >= 100
    mismatches, agreed = [], 0
    for name, case, ctype, body, extra in cases:
        ours, theirs = (_post(port, body, ctype) for port in PORTS[name])
        if theirs.status_code != 200:
            mismatches.append(f"{case}: mlflow answered {theirs.status_code} {theirs.text[:200]}")
            continue
        if ours.status_code != 200 or ours.json()["predictions"] != theirs.json()["predictions"]:
            mismatches.append(f"{case}: ours {ours.status_code} {ours.text[:300]} theirs {theirs.text[:200]}")
            continue
        ignored = json.loads(ours.headers.get("X-Ignored-Columns", "[]"))
        if sorted(ignored) != sorted(extra):
            mismatches.append(f"{case}: X-Ignored-Columns {ignored}, sent extra {extra}")
            continue
        agreed += 1
    print(f"\ncorpus: {len(cases)} valid inputs over {len(all_servers)} models, {agreed} same answers")
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ:\n" + "\n".join(mismatches)


def invalid_corpus(model) -> list[tuple[str, str | None, str | bytes]]:
    """(case id, content type, body): inputs both servers must refuse with a 4xx."""
    rows = _base_rows(model, 0, 2)
    first = rows[0]
    sig = _signature(model)
    name = next(n for n, (kind, _) in sig.items() if kind == "double")
    csv_body, _ = _csv_body("plain", rows, sig)
    without = [{k: v for k, v in row.items() if k != name} for row in rows]
    return [
        ("missing_column_records", "application/json", json.dumps({"dataframe_records": without})),
        ("missing_column_csv", "text/csv", csv_body.replace(name, "renamed", 1)),
        ("unparsable_number", "application/json", json.dumps({"dataframe_records": [{**first, name: "abc"}]})),
        ("two_input_keys", "application/json", json.dumps({"dataframe_records": rows, "instances": rows})),
        ("no_input_key", "application/json", json.dumps({"rows": rows})),
        ("llm_key_next_to_the_input", "application/json", json.dumps({"dataframe_records": rows, "input": 1})),
        ("body_is_a_list", "application/json", json.dumps(rows)),
        ("not_json", "application/json", "{not json"),
        ("empty_records", "application/json", json.dumps({"dataframe_records": []})),
        ("records_as_an_object", "application/json", json.dumps({"dataframe_records": first})),
        (
            "split_without_columns",
            "application/json",
            json.dumps({"dataframe_split": {"data": [list(first.values())]}}),
        ),
        (
            "split_short_row",
            "application/json",
            json.dumps({"dataframe_split": {"columns": list(first), "data": [[1]]}}),
        ),
        ("one_row_inputs_with_an_extra_key", "application/json", json.dumps({"inputs": {**first, "request_id": "x"}})),
        ("list_of_lists_instances", "application/json", json.dumps({"instances": [list(first.values())]})),
        ("number_too_large", "application/json", json.dumps({"dataframe_records": [{**first, name: 10**400}]})),
        ("csv_empty", "text/csv", ""),
        ("csv_not_utf8", "text/csv", csv_body.encode() + b"\xff\xfe"),
        ("csv_more_fields_than_columns", "text/csv", csv_body + ",".join(["1"] * (len(first) + 2)) + "\n"),
        ("content_type_xml", "application/xml", json.dumps({"dataframe_records": rows})),
        ("charset_latin1", "application/json; charset=latin-1", json.dumps({"dataframe_records": rows})),
        ("unknown_content_type_parameter", "text/csv; header=present", csv_body),
    ]


@pytest.mark.parametrize("model_name", list(PORTS))
def test_invalid_inputs_get_the_same_status_class_as_mlflow(all_servers, model_name):
    cases = invalid_corpus(all_servers[model_name])
    differ = []
    for case, ctype, body in cases:
        ours, theirs = (_post(port, body, ctype) for port in PORTS[model_name])
        if ours.status_code // 100 != 4 or theirs.status_code // 100 != 4:
            differ.append(f"{case}: ours {ours.status_code} {ours.text[:200]} theirs {theirs.status_code}")
        elif theirs.status_code == 415 and ours.status_code != 415:
            differ.append(f"{case}: mlflow 415, ours {ours.status_code}")
    assert not differ, "\n".join(differ)


def test_ignored_columns_are_named_in_a_header(all_servers):
    rows = [{**row, "request_id": "r-9", "été": 1} for row in _base_rows(all_servers["mixed"], 0, 2)]
    ours = _post(PORTS["mixed"][0], json.dumps({"dataframe_records": rows, "params": {"x": 1}}), "application/json")
    theirs = _post(PORTS["mixed"][1], json.dumps({"dataframe_records": rows, "params": {"x": 1}}), "application/json")
    assert ours.status_code == theirs.status_code == 200
    assert ours.json()["predictions"] == theirs.json()["predictions"]
    assert json.loads(ours.headers["X-Ignored-Columns"]) == ["request_id", "été"]
    assert json.loads(ours.headers["X-Ignored-Params"]) == ["x"]
