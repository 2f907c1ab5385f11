"""README "Train on your own data" as written: its `bash own-data` block in one bash session on the
running platform, on a generated user export (string categories, missing values, string labels).

The block edits the project's params.yaml (`flightdeck dataset init`), as it does for a user; the test
puts the file back afterwards. The transcript is kept in test-artifacts/readme-own-data.log.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.own_data import customers

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```bash own-data\n(.*?)^```$", re.M | re.S)


@pytest.fixture
def params_restored():
    path = ROOT / "params.yaml"
    original = path.read_text()
    yield path
    path.write_text(original)


def test_readme_own_data_block_lands_trains_deploys_and_predicts_a_string_label(platform, tmp_path, params_restored):
    blocks = BLOCK.findall((ROOT / "README.md").read_text())
    assert len(blocks) == 1
    customers(600, seed=21).to_csv(tmp_path / "churn.csv", index=False)
    script = f"set -euo pipefail\ncd {ROOT}\nsource scripts/env.sh\ncd {tmp_path}\n{blocks[0]}"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=1700)
    out = proc.stdout + proc.stderr
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "readme-own-data.log").write_text(out)
    assert proc.returncode == 0, out[-4000:]
    assert "datasets.churn" in proc.stderr and "type: categorical" in proc.stdout
    finished = re.findall(r"^(retrain|deploy) (\S+): (\w+)  http", proc.stdout, re.M)
    assert [(d, s) for d, _, s in finished] == [("retrain", "success"), ("deploy", "success")], out[-3000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["predictions"][0] in ("yes", "no")  # the label as the user's file spells it
