"""Where browser tests keep their screenshots (git-ignored): test-artifacts/ at the project root."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
