"""C++ users: payq installs as a CMake package, and a program built against
the *installed* package (examples/cpp) runs a withdrawal end to end.

The core is configured without Python into build/cpp-package (incremental
on re-runs), installed into a temporary prefix, and the example is built
from that prefix alone: nothing from the source tree leaks into it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import payq
from payq.testing import fresh_schema

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / "build" / "cpp-package"


def _run(*command: str | os.PathLike[str], env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(
        [str(part) for part in command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    if completed.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, command))} exited {completed.returncode}\n"
            f"stdout:\n{completed.stdout[-4000:]}\nstderr:\n{completed.stderr[-4000:]}"
        )
    return completed.stdout


@pytest.fixture(scope="module")
def example_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cmake = shutil.which("cmake")
    assert cmake, "cmake is needed (apt-get install cmake)"
    prefix = tmp_path_factory.mktemp("prefix")
    example_build = tmp_path_factory.mktemp("example-build")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run(cmake, "-S", ROOT, "-B", BUILD_DIR, *generator, "-DPAYQ_BUILD_PYTHON=OFF", "-DCMAKE_BUILD_TYPE=Release")
    _run(cmake, "--build", BUILD_DIR, "-j", str(os.cpu_count() or 2), "--target", "payq_core")
    _run(cmake, "--install", BUILD_DIR, "--prefix", prefix, "--component", "cpp")

    assert (prefix / "include" / "payq" / "ledger.hpp").is_file()
    assert list(prefix.glob("lib*/cmake/payq/payqConfig.cmake")), "no package config installed"

    _run(cmake, "-S", ROOT / "examples" / "cpp", "-B", example_build, f"-DCMAKE_PREFIX_PATH={prefix}")
    _run(cmake, "--build", example_build)
    binary = example_build / "payq_withdrawal"
    assert binary.is_file()
    return binary


def test_installed_package_runs_a_withdrawal_exactly_once(example_binary: Path, payq_dsn: str) -> None:
    with fresh_schema(payq_dsn, prefix="cpp", migrate=False) as db:
        env = {**os.environ, "PAYQ_DSN": payq_dsn, "PAYQ_SCHEMA": db.schema}

        first = _run(example_binary, env=env)
        assert "succeeded (handler ran 1 time(s) in this run)" in first
        assert "user balance 70.00 CNY, held 0.00 CNY" in first
        assert "audit: clean" in first

        # Every write carried an idempotency key: a second run pays nothing.
        second = _run(example_binary, env=env)
        assert "handler ran 0 time(s)" in second

        user = db.ledger.account("user:cpp-1", "CNY")
        assert user.balance == payq.Money(7000, "CNY")
        assert user.held == payq.Money(0, "CNY")
        history = db.ledger.history(user)
        assert [entry.amount.minor for entry in history] == [10000, -3000]
        assert db.ledger.audit().ok
