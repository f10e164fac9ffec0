"""The inbox's signature check and callback receiver (python/payq/inbox.py).

The check lives in Python, so this target runs under atheris, libFuzzer's
Python front end, rather than as a C++ target: ``verify_hmac_sha256`` and
``CallbackReceiver.handle`` are what a provider's (or anyone's) HTTP
request reaches first. The compiled core is replaced by a stand-in that
converts and checks arguments the way the binding and the C++ Inbox do
(pybind11 refuses a str that is not UTF-8 with TypeError; the core refuses
empty, over-long or control-character text and non-JSON payloads with
InvalidArgument) and records what would have been written.

Input (see TestOneInput): a secret, a signature (arbitrary text, the right
one in other letter case and padding, the right one with one character
changed, or none), then the body.

Properties:
  - verify_hmac_sha256 returns a bool and never raises; it is True exactly
    when the stripped, lower-cased signature is the hex HMAC-SHA256 of the
    body under the secret (the right signature in upper case and padded with
    white space verifies);
  - handle never raises and answers 200, 202, 400, 401 or 413; a body whose
    signature does not verify gets 401 (413 when too large, 400 bad_request
    for a signature that is not ASCII) and writes nothing; a signed one
    never gets 401; 200 writes exactly one event.

Run: python fuzz/inbox_signature_fuzz.py [libFuzzer flags] [corpus dirs]
(tools/fuzz installs atheris into build/fuzz/venv and does this).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import pathlib
import sys
import types
from typing import Any, List, Optional, Tuple

import atheris

ROOT = pathlib.Path(__file__).resolve().parent.parent
STATUSES = {200, 202, 400, 401, 413}
# The C++ core's bounds (inbox.hpp, outbox keys).
PROVIDER_BYTES_MAX = 100
EVENT_ID_BYTES_MAX = 255
KEY_BYTES_MAX = 255
PAYLOAD_BYTES_MAX = 64 * 1024


class FakeCore:
    """The two calls payq.inbox makes into payq._core, without a database."""

    def __init__(self) -> None:
        self.received: List[Tuple[str, str, str, bool]] = []

    def inbox_receive(self, target: Any, provider: Any, event_id: Any, key: Any, applied: Any,
                      payload_json: Any) -> Tuple[str, Optional[int], Optional[str]]:
        from payq.errors import InvalidArgument

        texts = (provider, event_id, key, payload_json)
        for text in texts:
            # pybind11's std::string caster: only str that encodes as UTF-8.
            if not isinstance(text, str):
                raise TypeError("inbox_receive(): incompatible function arguments")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise TypeError("inbox_receive(): incompatible function arguments") from None
        for text, bytes_max in ((provider, PROVIDER_BYTES_MAX), (event_id, EVENT_ID_BYTES_MAX),
                                (key, KEY_BYTES_MAX)):
            data = text.encode("utf-8")
            if not data or len(data) > bytes_max or any(c < 0x20 or c == 0x7F for c in data):
                raise InvalidArgument("text_bounded")
        try:
            # nlohmann::json refuses lone surrogate escapes that Python's json takes.
            json.dumps(json.loads(payload_json), ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError):
            raise InvalidArgument("callback payload is not JSON") from None
        if len(payload_json.encode("utf-8")) > PAYLOAD_BYTES_MAX:
            raise InvalidArgument("callback payload too large")
        self.received.append((provider, event_id, key, bool(applied)))
        return "no_task", None, None

    def inbox_prune(self, target: Any, older_than_ms: int, count_max: int) -> int:
        return 0


CORE = FakeCore()


def _load_inbox() -> types.ModuleType:
    # payq/__init__.py loads the compiled core and everything else; the
    # inbox module needs only payq.errors, payq._serving and the core.
    package_dir = ROOT / "python" / "payq"
    spec = importlib.util.spec_from_file_location("payq", package_dir / "__init__.py",
                                                  submodule_search_locations=[str(package_dir)])
    assert spec is not None
    sys.modules["payq"] = importlib.util.module_from_spec(spec)  # made, never executed
    native = types.ModuleType("payq._native")
    native.core = CORE  # type: ignore[attr-defined]
    sys.modules["payq._native"] = native
    with atheris.instrument_imports(enable_loader_override=False):
        import payq.inbox
    return payq.inbox


inbox = _load_inbox()


class FakeDb:
    def __init__(self) -> None:
        self.inbox = inbox.Inbox(target=None)


def _case_flipped(text: str, mask: bytes) -> str:
    if not mask:
        return text.upper()
    return "".join(c.upper() if mask[i % len(mask)] & 1 else c for i, c in enumerate(text))


def _signature(mode: int, noise_bytes: bytes, noise: str, expected_hex: str) -> Optional[str]:
    if mode == 0:
        return noise
    if mode == 1:
        padding = " \t\r\n"
        pad = noise_bytes[0] if noise_bytes else 0
        return padding[: pad % 5] + _case_flipped(expected_hex, noise_bytes) + padding[: (pad >> 4) % 5]
    if mode == 2:
        at = (noise_bytes[0] if noise_bytes else 0) % len(expected_hex)
        return expected_hex[:at] + (noise[1:2] or "x") + expected_hex[at + 1:]
    return None


def check_verify(body: bytes, signature: Optional[str], secret: str, expected_hex: str) -> bool:
    should = bool(signature) and bool(secret) and signature.strip().lower() == expected_hex
    got = inbox.verify_hmac_sha256(body, signature, secret)
    if got is not should:
        raise AssertionError(f"verify_hmac_sha256 gave {got!r}, expected {should!r} for {signature!r}")
    return should


def check_handle(body: bytes, signature: Optional[str], secret: str, verified: bool, header_name: str) -> None:
    receiver = inbox.CallbackReceiver(db=FakeDb(), provider="fuzz", secret=secret)
    headers = {} if signature is None else {header_name: signature}
    written_before = len(CORE.received)
    status, answer = receiver.handle(body, headers)
    written = len(CORE.received) - written_before
    if status not in STATUSES or not isinstance(answer, dict) or "effect" not in answer:
        raise AssertionError(f"handle answered {status} {answer!r}")
    # A signature header that is not ASCII is a malformed request (400
    # bad_request) rather than a wrong signature; either way nothing is written.
    refused = status in (401, 413) or (status == 400 and answer["effect"] == "bad_request")
    if not verified and (not refused or written):
        raise AssertionError(f"an unverified callback got {status} {answer!r} and wrote {written}")
    if verified and status == 401:
        raise AssertionError("a signed callback got 401")
    if written != (1 if status == 200 else 0):
        raise AssertionError(f"status {status} wrote {written} events")


def _take(data: bytes, at: int, count: int) -> Tuple[bytes, int]:
    return data[at:at + count], min(len(data), at + count)


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris's name)
    # Byte 0: the signature's mode (bits 0-1), the header name's spelling
    # (bits 2-3), how the signature's bytes became text (bit 4: UTF-8 with
    # lone surrogates for bad bytes, else Latin-1 as http.server reads
    # headers). Then a length byte and the secret (UTF-8), a length byte and
    # the signature's bytes, and the body.
    if not data:
        return
    control = data[0]
    secret_bytes, at = _take(data, 2, data[1] % 41 if len(data) > 1 else 0)
    noise_length = data[at] if at < len(data) else 0
    noise_bytes, at = _take(data, at + 1, noise_length)
    body = data[at:]
    secret = secret_bytes.decode("utf-8", "replace")
    noise = noise_bytes.decode("utf-8", "surrogateescape") if control & 0x10 else noise_bytes.decode("latin-1")
    header_name = ("X-Signature", "x-signature", "X-SIGNATURE", "x-SiGnAtUrE")[(control >> 2) % 4]
    expected_hex = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    signature = _signature(control % 4, noise_bytes, noise, expected_hex)
    verified = check_verify(body, signature, secret, expected_hex)
    if secret:  # A receiver without a secret is refused when made.
        check_handle(body, signature, secret, verified, header_name)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
