"""The model server under the real gunicorn config, as a context manager for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
APP = "serving.app:create_app()"


@dataclass(frozen=True)
class Gunicorn:
    """A running server: its log file and its process (the group leader of its workers)."""

    log_path: Path
    proc: subprocess.Popen


@contextmanager
def running_gunicorn(
    tmp_path: Path, model_dir: Path, port: int, ready_url: str | None = None, **env: str
) -> Iterator[Gunicorn]:
    """gunicorn with the real config serving `model_dir` on 127.0.0.1:`port` (`env` on top), once `ready_url`
    (default: /readyz on `port`) answers 200 or 120 s have passed; stops its whole process group on the way out
    (SIGTERM, unless the test already stopped it)."""
    log_path = tmp_path / "gunicorn.log"
    ready_url = ready_url or f"http://127.0.0.1:{port}/readyz"
    full_env = {
        **os.environ,
        "SERVING_MODEL_DIR": str(model_dir),
        "PORT": str(port),
        "SERVING_HOST": "127.0.0.1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        **env,
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "-c",
                "serving/gunicorn.conf.py",
                "serving.app:create_app()",
            ],
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            try:
                if requests.get(ready_url, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        yield Gunicorn(log_path, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
