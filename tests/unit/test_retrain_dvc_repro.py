"""`dvc repro` runs in the task's process through DVC's API: stages run with this interpreter, their
output reaches the log, and a failing stage raises DvcReproFailed naming it."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from flightdeck.retrain import DvcReproFailed, run_dvc_repro


def _repo(root: Path, stage_code: str) -> Path:
    """A DVC repo with one stage `greet` that runs `python greet.py` (greet.py = stage_code)."""
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    (root / "greet.py").write_text(stage_code)
    (root / "dvc.yaml").write_text("stages:\n  greet:\n    cmd: python greet.py\n    outs:\n      - out.txt\n")
    return root


def test_repro_runs_the_stage_with_this_interpreter_and_logs_it(tmp_path, caplog, capfd):
    caplog.set_level(logging.INFO)
    run_dvc_repro(_repo(tmp_path, "import sys\nopen('out.txt', 'w').write(sys.executable)\nprint('hello')\n"))
    assert (tmp_path / "out.txt").read_text() == sys.executable
    assert "Running stage 'greet'" in caplog.text + capfd.readouterr().out
    assert "ran 1 stage(s): greet" in caplog.text


def test_a_failing_stage_raises_naming_the_stage(tmp_path):
    with pytest.raises(DvcReproFailed, match="greet") as err:
        run_dvc_repro(_repo(tmp_path, "import sys\nsys.exit(3)\n"))
    assert "3" in str(err.value)


def test_dvc_handlers_bound_to_a_closed_parent_stream_write_to_this_process(tmp_path, capfd):
    # a preloading parent (a Celery worker) imported DVC: its handlers hold the parent's stream, closed here
    import io

    from dvc.logger import LoggerHandler

    handlers = [h for h in logging.getLogger("dvc").handlers if isinstance(h, LoggerHandler)]
    assert handlers, "import dvc sets up its console handlers"
    saved = [h.stream for h in handlers]
    closed = io.StringIO()
    closed.close()
    try:
        for handler in handlers:
            handler.stream = closed
        run_dvc_repro(_repo(tmp_path, "open('out.txt', 'w').write('ok')\n"))  # raised LoggingException before
        assert "Running stage 'greet'" in capfd.readouterr().out
        assert all(h.stream is not closed for h in handlers)
    finally:
        for handler, stream in zip(handlers, saved, strict=True):
            handler.stream = stream
