"""Pure parts of the image builder and the deployment record format."""

from __future__ import annotations

from pathlib import Path

from flightdeck import images
from flightdeck.deploy import records as rec

DOCKERFILE = """FROM python:3.11-slim AS deps
COPY serving/requirements.txt \\
     serving/extra.txt /tmp/req/
RUN pip install -r /tmp/req/requirements.txt
FROM python:3.11-slim AS serving
COPY --from=deps /opt/venv /opt/venv
COPY serving /app/serving
ARG MODEL_DIR=serving/no-model
COPY ${MODEL_DIR} /opt/model
FROM python:3.11-slim AS airflow
COPY . /opt/airflow
"""


def test_copied_paths_stop_at_the_target_stage(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    assert images.copied_paths(tmp_path / "Dockerfile", "serving") == [
        "serving/requirements.txt",
        "serving/extra.txt",
        "serving",
    ]
    assert "." in images.copied_paths(tmp_path / "Dockerfile", None)


def test_assemble_context_holds_only_what_is_copied(tmp_path: Path):
    root = tmp_path / "repo"
    (root / "serving").mkdir(parents=True)
    (root / "serving" / "app.py").write_text("x = 1\n")
    (root / "serving" / "requirements.txt").write_text("flask\n")
    (root / "serving" / "__pycache__").mkdir()
    (root / "serving" / "__pycache__" / "app.pyc").write_bytes(b"junk")
    (root / ".venv").mkdir()
    (root / ".venv" / "huge").write_text("no")
    (root / "Dockerfile").write_text(DOCKERFILE)
    model = tmp_path / "dl"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    ctx = images.assemble_context(root / "Dockerfile", model, tmp_path / "ctx", target="serving")
    files = sorted(p.relative_to(ctx).as_posix() for p in ctx.rglob("*") if p.is_file())
    assert files == ["Dockerfile", "model/MLmodel", "serving/app.py", "serving/requirements.txt"]


def test_inputs_hash_changes_with_files_and_args(tmp_path: Path):
    (tmp_path / "a").write_text("1")
    h1 = images.hash_tree([tmp_path], tmp_path, {"MODEL_VERSION": "1"})
    assert h1 == images.hash_tree([tmp_path], tmp_path, {"MODEL_VERSION": "1"})
    assert h1 != images.hash_tree([tmp_path], tmp_path, {"MODEL_VERSION": "2"})
    (tmp_path / "a").write_text("2")
    assert h1 != images.hash_tree([tmp_path], tmp_path, {"MODEL_VERSION": "1"})


def test_built_image_pins_by_digest():
    b = images.BuiltImage(tag="127.0.0.1:5050/m:v1-abc", image_id="sha256:img", inputs_hash="h", reused=False)
    assert b.pinned == "sha256:img"
    b.digest = "sha256:d"
    assert b.pinned == "127.0.0.1:5050/m@sha256:d"
    assert images.BuiltImage.from_dict(b.to_dict()) == b


def test_deployment_id_is_key_safe_and_stable():
    run = "manual__2026-11-27T09:00:00.123456+00:00"
    assert rec.deployment_id(run) == rec.deployment_id(run) == "manual__2026-11-27T09_00_00.123456_00_00"
