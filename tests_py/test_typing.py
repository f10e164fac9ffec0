"""The package's type hints hold: ``mypy --strict`` over python/payq
(configured in pyproject.toml) finds nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict_finds_nothing() -> None:
    pytest.importorskip("mypy", reason="mypy needs Python 3.10 or newer")
    checked = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--config-file",
                              str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True,
                             timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
