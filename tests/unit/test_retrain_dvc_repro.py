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
