"""docs/RUNBOOK.md: every bash block parses (`bash -n`), every `flightdeck` command in it is accepted by the
CLI's own parser, and each operation the runbook promises has commands that tests/e2e/test_runbook.py runs."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from flightdeck import cli

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"
BLOCK = re.compile(r"^```bash( runnable)?\n(.*?)^```$", re.M | re.S)


def blocks(runnable_only: bool = False) -> list[tuple[str, str]]:
    """(section heading, code) of each bash block, in document order."""
    text = RUNBOOK.read_text()
    out = []
    for m in BLOCK.finditer(text):
        if runnable_only and not m.group(1):
            continue
        heading = [h for h in re.findall(r"^## (.+)$", text[: m.start()], re.M)][-1]
        out.append((heading, m.group(2)))
    return out


def test_every_bash_block_parses():
    found = blocks()
    assert len(found) >= 10
    for heading, code in found:
        proc = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True)
        assert proc.returncode == 0, (heading, proc.stderr)


def _flightdeck_commands() -> list[str]:
    cmds = []
    for _, code in blocks():
        for line in code.splitlines():
            line = line.split("  #", 1)[0].strip()  # trailing comments
            for part in re.split(r"\$\(|\||&&", line):
                part = part.strip().rstrip(")")
                if part.startswith("flightdeck "):
                    cmds.append(part)
    text = RUNBOOK.read_text()  # commands quoted inline in the prose, like `flightdeck clear ...`
    cmds += re.findall(r"`(flightdeck [^`]+)`", text)
    return cmds


def test_every_flightdeck_command_is_accepted_by_the_cli():
    parser = cli.build_parser()
    cmds = _flightdeck_commands()
    assert len(cmds) >= 12
    for cmd in cmds:
        argv = shlex.split(cmd.replace('"$A"', "a").replace('"$B"', "b"))[1:]
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"the CLI rejects a runbook command: {cmd}")
        if args.cmd == "run" and getattr(args, "conf", "{}") != "{}":
            import json

            assert isinstance(json.loads(args.conf), dict), cmd


def test_each_operation_has_runnable_commands():
    runnable = {heading for heading, _ in blocks(runnable_only=True)}
    for section in (
        "1. Retrain",
        "2. Deploy",
        "3. Watch",
        "4. Roll back",
        "5. Add a dataset",
        "6. Logs and alerts",
        "7. Move to AWS",
        "9. Deploy on EC2",
    ):
        assert section in runnable, f"section {section!r} has no runnable block"
    text = RUNBOOK.read_text()
    for needle in (
        "Celery",
        "KubernetesExecutor",
        "AwsEcsExecutor",
        "deploy/aws/iam-policy.json",
        "Clear",
        "FLIGHTDECK_ECS_LISTENER_ARN",
    ):
        assert needle in text, needle
