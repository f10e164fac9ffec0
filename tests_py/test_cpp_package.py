"""C++ users: payq installs as a CMake package, and a program built against
the *installed* package (examples/cpp) runs a withdrawal end to end.

The core is configured without Python into build/cpp-package (incremental
on re-runs), installed into a temporary prefix, and the example is built
from that prefix alone: nothing from the source tree leaks into it.
"""

from __future__ import annotations

import os
import re
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


def _pkg_config_dir_without(tmp: Path, *hidden: str) -> Path:
    """A PKG_CONFIG_LIBDIR holding every .pc file pkg-config finds here except
    ``hidden``: as if those -dev packages were not installed."""
    listing = subprocess.run(["pkg-config", "--variable", "pc_path", "pkg-config"], capture_output=True, text=True,
                             timeout=30, check=True).stdout.strip()
    target = tmp / "pkgconfig"
    target.mkdir()
    for directory in filter(None, listing.split(":")):
        for pc in Path(directory).glob("*.pc"):
            if pc.stem not in hidden and not (target / pc.name).exists():
                (target / pc.name).symlink_to(pc)
    return target


@pytest.fixture(scope="module")
def installed_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cmake = shutil.which("cmake")
    assert cmake, "cmake is needed (apt-get install cmake)"
    prefix = tmp_path_factory.mktemp("prefix")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run(cmake, "-S", ROOT, "-B", BUILD_DIR, *generator, "-DPAYQ_BUILD_PYTHON=OFF", "-DCMAKE_BUILD_TYPE=Release")
    _run(cmake, "--build", BUILD_DIR, "-j", str(os.cpu_count() or 2), "--target", "payq_core")
    _run(cmake, "--install", BUILD_DIR, "--prefix", prefix, "--component", "cpp")

    assert (prefix / "include" / "payq" / "ledger.hpp").is_file()
    assert list(prefix.glob("lib*/cmake/payq/payqConfig.cmake")), "no package config installed"
    return prefix


@pytest.fixture(scope="module")
def example_binary(installed_prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    example_build = tmp_path_factory.mktemp("example-build")
    _run("cmake", "-S", ROOT / "examples" / "cpp", "-B", example_build, f"-DCMAKE_PREFIX_PATH={installed_prefix}")
    _run("cmake", "--build", example_build)
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


def test_optional_find_package_without_libpqxx_reports_not_found(installed_prefix: Path, tmp_path: Path) -> None:
    # A consumer that can live without payq asks for it QUIETly; with
    # libpqxx missing, its configure must go on with payq_FOUND false.
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\n"
        "project(consumer LANGUAGES CXX)\n"
        "find_package(payq CONFIG QUIET)\n"
        'message(STATUS "payq_FOUND=${payq_FOUND}")\n'
        'message(STATUS "why=${payq_NOT_FOUND_MESSAGE}")\n'
    )
    env = {**os.environ, "PKG_CONFIG_LIBDIR": str(_pkg_config_dir_without(tmp_path, "libpqxx")),
           "PKG_CONFIG_PATH": ""}
    out = _run("cmake", "-S", consumer, "-B", tmp_path / "build", f"-DCMAKE_PREFIX_PATH={installed_prefix}", env=env)
    assert re.search(r"payq_FOUND=(0|FALSE)$", out, re.MULTILINE), out
    assert "libpqxx-dev" in out


def test_source_configure_names_every_missing_library_and_its_package(tmp_path: Path) -> None:
    # Building from the sdist without libpqxx-dev and libpq-dev: configure
    # stops once, naming both, each with the Debian package to install.
    env = {**os.environ, "PKG_CONFIG_LIBDIR": str(_pkg_config_dir_without(tmp_path, "libpqxx", "libpq")),
           "PKG_CONFIG_PATH": ""}
    completed = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path / "build"), "-DPAYQ_BUILD_PYTHON=OFF"],
                               env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0
    message = " ".join(completed.stderr.split())
    assert "libpqxx (C++ client for PostgreSQL, 6.4 or newer): apt-get install libpqxx-dev" in message, message
    assert "libpq (PostgreSQL C client library): apt-get install libpq-dev" in message, message
