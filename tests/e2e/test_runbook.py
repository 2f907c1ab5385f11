"""docs/RUNBOOK.md as written: every `bash runnable` block, in document order, in one bash session on the
running platform (retrain, canary deploy, watch, diff, roll back by clearing a task, a new dataset, logs,
the AWS policy render, the compose check). The transcript is kept in test-artifacts/runbook.log."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3000)]

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```bash runnable\n(.*?)^```$", re.M | re.S)


def test_runbook_runs_as_written(platform):
    blocks = BLOCK.findall((ROOT / "docs" / "RUNBOOK.md").read_text())
    assert len(blocks) >= 8
    script = "set -euo pipefail\nsource scripts/env.sh\n" + "\n".join(
        f"echo '=== runbook block {i}'\n{code}" for i, code in enumerate(blocks, 1)
    )
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=2700)
    out = proc.stdout + proc.stderr
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "runbook.log").write_text(out)
    assert proc.returncode == 0, out[-4000:]
    assert f"=== runbook block {len(blocks)}" in proc.stdout
    # each DAG run the runbook starts ended in success (run/clear print "<dag> <run>: <state>  <url>")
    finished = re.findall(r"^(retrain|deploy|bake_ami) (\S+): (\w+)  http", proc.stdout, re.M)
    # retrain, canary deploy, roll back (a deploy run cleared), the wine dataset's retrain, then on EC2 (the
    # moto sandbox) the AMI bake and a canary deploy
    assert [(d, s) for d, _, s in finished] == [
        ("retrain", "success"),
        ("deploy", "success"),
        ("deploy", "success"),
        ("retrain", "success"),
        ("bake_ami", "success"),
        ("deploy", "success"),
    ], finished
    # the roll back brought back the version it announced: the runbook's own `flightdeck status` right after
    # it (which compares the LB's /version with the record) shows that version live, every check ok
    m = re.search(r"rolling back local to (\S+) \((\S+) v(\d+),", proc.stderr)
    assert m, proc.stderr[-2000:]
    after = proc.stdout[proc.stdout.index(f"deploy {m.group(1)}: success") :]
    status = after[: after.index("=== runbook block")]
    assert re.search(rf"^  live      {re.escape(m.group(2))} v{m.group(3)}  ", status, re.M), status
    assert "check     live_matches_record: ok" in status and "MISMATCH" not in status
    assert "policy is valid JSON" in proc.stdout and "docker-compose.yaml is valid" in proc.stdout
    # EC2 (the moto sandbox): the canary's revision takes all traffic on the ALB, healthy, and its history
    # shows it live (status reads the group through the run's own AWS connection, aws_sandbox)
    ec2 = proc.stdout[proc.stdout.index("aws_sandbox: moto at") :]
    assert re.search(r"^target ec2 ", ec2, re.M), ec2[:3000]
    assert re.search(r"^  traffic   v\S+: 100%  1/1 healthy", ec2, re.M), ec2[:3000]
    assert re.search(r"^\S+  live +\S+ v\d+ +canary ", ec2, re.M), ec2[-3000:]
    assert "aws_sandbox: down" in ec2
