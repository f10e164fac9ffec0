"""The built-in HTTP handler: task kinds whose side effect is one HTTP call to
a provider, configured rather than coded, and run by the C++ worker engine
on libcurl (no Python, no GIL, a whole claimed batch in flight per worker
thread)::

    import payq

    payq.http_handler(
        "payout",
        url="https://provider.example/payouts",
        headers={"Authorization": payq.secret_env("PROVIDER_TOKEN", prefix="Bearer ")},
        body='{"account": "{{payload.account}}", "amount_minor": {{payload.amount_minor}},'
             ' "currency": "{{payload.currency}}"}',
        timeout_ms=10_000,
        success_when={"return_code": "SUCCESS"},
        error_codes={"NOTENOUGH": "fail", "ACCOUNT_INVALID": "fail", "SYSTEMERROR": "unknown"},
        status_url="https://provider.example/payouts/{{task.idempotency_key}}",
    )

Every attempt sends the task's ``idempotency_key`` in the ``Idempotency-Key``
header. The answer is classified into success / retry / fail / unknown (see
``docs/http-handler.md`` for the rules and defaults); a 429 or a
``Retry-After`` pauses the task's queue for every worker. Configuration is
checked when the kind is registered: a bad one raises :class:`payq.ConfigError`
there, never when a task runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, List, Literal, Mapping, Optional, Tuple, Union

from payq import tracing as _tracing
from payq._native import core
from payq.errors import ConfigError
from payq.outbox import Task

__all__ = [
    "SecretEnv",
    "secret_env",
    "OutcomeName",
    "StatusFinding",
    "StatusCheck",
    "HttpKind",
    "compile_kind",
]

OutcomeName = Literal["success", "retry", "fail", "unknown"]
"""What an answer is classified as (see ``docs/outbox.md`` for outcomes)."""

StatusFinding = Literal["applied", "failed", "not_found", "unknown"]
"""What a status check found about an earlier attempt."""

StatusCheck = Callable[[Task], Union[StatusFinding, Tuple[StatusFinding, Any]]]
"""A status check callable: gets the task, returns a finding, or a finding
and the result to store when ``"applied"``. Raising means ``"unknown"``."""

JsonScalar = Union[str, int, float, bool, None]
StatusKey = Union[int, Tuple[int, int]]

# The core's outcomes (OutcomeName spells them for type checkers; the
# vocabulary test keeps the two equal).
_OUTCOMES = tuple(core.OUTCOMES)
_FINDINGS = ("applied", "failed", "not_found", "unknown")
_DETAIL_CHARS_MAX = 1000


@dataclass(frozen=True)
class SecretEnv:
    """A header value read from the environment variable ``variable`` when
    the kind is registered, after the literal ``prefix``. payq never writes
    the secret to logs, errors or stored results; this object only knows the
    variable's name."""

    variable: str
    prefix: str = ""


def secret_env(variable: str, *, prefix: str = "") -> SecretEnv:
    """A secret header value from the environment:
    ``headers={"Authorization": payq.secret_env("PROVIDER_TOKEN", prefix="Bearer ")}``.
    The variable must be set (8 bytes or more) when the kind is registered."""
    if not isinstance(variable, str) or not variable:
        raise ConfigError("secret_env needs the name of an environment variable")
    if not isinstance(prefix, str):
        raise ConfigError("secret_env prefix must be a str")
    return SecretEnv(variable, prefix)


class HttpKind:
    """A compiled HTTP kind: checked, templates parsed, secrets read.
    Made by :func:`compile_kind` (or ``Registry.http``); opaque."""

    def __init__(self, core_kind: Any, status_check: Optional[StatusCheck]) -> None:
        self._core = core_kind
        self.status_check = status_check

    @property
    def method(self) -> str:
        """The HTTP method, e.g. ``"POST"``."""
        return str(self._core.method)

    @property
    def url(self) -> str:
        """The URL template as configured (its ``{{...}}`` fields not yet filled in)."""
        return str(self._core.url)

    def __repr__(self) -> str:
        return f"<payq.http.HttpKind {self.method} {self.url}>"


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an int, not {type(value).__name__}")
    return value


def _outcome(value: Any, what: str) -> str:
    if value not in _OUTCOMES:
        raise ConfigError(f"{what}: {value!r} is not one of {', '.join(_OUTCOMES)}")
    return str(value)


def _headers(headers: Optional[Mapping[str, Union[str, SecretEnv]]]) -> List[Tuple[str, str, Optional[str]]]:
    out: List[Tuple[str, str, Optional[str]]] = []
    for name, value in (headers or {}).items():
        _str(name, "a header name")
        if isinstance(value, SecretEnv):
            out.append((name, value.prefix, value.variable))
        else:
            out.append((name, _str(value, f"header {name}"), None))
    return out


def _status_rules(status_outcomes: Optional[Mapping[StatusKey, OutcomeName]]) -> List[Tuple[int, int, str]]:
    out: List[Tuple[int, int, str]] = []
    for key, outcome in (status_outcomes or {}).items():
        if isinstance(key, tuple) and len(key) == 2:
            first, last = _int(key[0], "a status range"), _int(key[1], "a status range")
        else:
            first = last = _int(key, "a status code")
        out.append((first, last, _outcome(outcome, f"status {key}")))
    return out


def _success_when(success_when: Optional[Mapping[str, JsonScalar]]) -> List[Tuple[str, str]]:
    out: List[Tuple[str, str]] = []
    for path, value in (success_when or {}).items():
        try:
            out.append((_str(path, "a success_when path"), json.dumps(value, allow_nan=False)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"success_when {path}: {exc}") from None
    return out


def _error_codes(error_codes: Optional[Mapping[Union[str, int], OutcomeName]]) -> List[Tuple[str, str]]:
    out: List[Tuple[str, str]] = []
    for code, outcome in (error_codes or {}).items():
        if isinstance(code, bool) or not isinstance(code, (str, int)):
            raise ConfigError(f"an error code is a str or an int, not {type(code).__name__}")
        out.append((str(code), _outcome(outcome, f"error code {code}")))
    return out


def compile_kind(
    *,
    url: str,
    method: str = "POST",
    headers: Optional[Mapping[str, Union[str, SecretEnv]]] = None,
    body: Optional[str] = None,
    idempotency_header: Optional[str] = "Idempotency-Key",
    connect_timeout_ms: int = 5_000,
    timeout_ms: int = 30_000,
    response_body_bytes_max: int = 64 * 1024,
    follow_redirects: bool = False,
    ca_file: Optional[str] = None,
    status_outcomes: Optional[Mapping[StatusKey, OutcomeName]] = None,
    success_when: Optional[Mapping[str, JsonScalar]] = None,
    success_mismatch: OutcomeName = "unknown",
    error_codes: Optional[Mapping[Union[str, int], OutcomeName]] = None,
    error_code_field: Optional[str] = None,
    rate_limited_pause_ms: int = 1_000,
    retry_after_ms_max: int = 600_000,
    status_url: Optional[str] = None,
    status_not_found: Iterable[int] = (404,),
    status_check: Optional[StatusCheck] = None,
    send_traceparent: bool = False,
) -> HttpKind:
    """Check and compile an HTTP kind's configuration; raises
    :class:`payq.ConfigError` naming the first problem. The parameters are
    those of ``Registry.http`` (see there and ``docs/http-handler.md``)."""
    if status_url is not None and status_check is not None:
        raise ConfigError("give status_url or status_check, not both")
    if status_check is not None and not callable(status_check):
        raise ConfigError("status_check must be callable")
    if not isinstance(follow_redirects, bool):
        raise ConfigError("follow_redirects must be a bool")
    if not isinstance(send_traceparent, bool):
        raise ConfigError("send_traceparent must be a bool")
    core_kind = core.http_kind_compile(
        method=_str(method, "method"),
        url=_str(url, "url"),
        headers=_headers(headers),
        body=None if body is None else _str(body, "body"),
        idempotency_header="" if idempotency_header is None else _str(idempotency_header, "idempotency_header"),
        connect_timeout_ms=_int(connect_timeout_ms, "connect_timeout_ms"),
        timeout_ms=_int(timeout_ms, "timeout_ms"),
        response_body_bytes_max=max(0, _int(response_body_bytes_max, "response_body_bytes_max")),
        follow_redirects=follow_redirects,
        ca_file=None if ca_file is None else _str(ca_file, "ca_file"),
        status_rules=_status_rules(status_outcomes),
        success_when=_success_when(success_when),
        success_mismatch=_outcome(success_mismatch, "success_mismatch"),
        error_code_field="" if error_code_field is None else _str(error_code_field, "error_code_field"),
        error_codes=_error_codes(error_codes),
        rate_limited_pause_ms=_int(rate_limited_pause_ms, "rate_limited_pause_ms"),
        retry_after_ms_max=_int(retry_after_ms_max, "retry_after_ms_max"),
        status_url=None if status_url is None else _str(status_url, "status_url"),
        status_not_found=[_int(s, "a status_not_found status") for s in status_not_found],
        send_traceparent=send_traceparent,
    )
    return HttpKind(core_kind, status_check)


def _status_adapter(check: StatusCheck) -> Callable[[Any], Tuple[str, str, str]]:
    """Runs ``check`` and reports (finding, result_json, detail) as the
    engine expects; anything unexpected is ``unknown``."""

    def run(core_task: Any) -> Tuple[str, str, str]:
        """Run ``check`` on the task: ``(finding, result JSON, detail)``."""
        try:
            with _tracing.attempt_scope():
                answer = check(Task._from_core(core_task))
        except Exception as exc:  # noqa: BLE001 - a failed check proves nothing
            return ("unknown", "null", f"{type(exc).__name__}: {exc}"[:_DETAIL_CHARS_MAX])
        if isinstance(answer, str):
            finding, result = answer, None
        elif isinstance(answer, tuple) and len(answer) == 2:
            finding, result = answer
        else:
            finding, result = None, None
        if finding not in _FINDINGS:
            return ("unknown", "null", f"the status check returned {answer!r}"[:_DETAIL_CHARS_MAX])
        try:
            result_json = json.dumps(result, allow_nan=False)
        except (TypeError, ValueError):
            result_json = json.dumps({"unserialisable_result": repr(result)[:_DETAIL_CHARS_MAX]})
        detail = "" if finding == "applied" else f"the status check found {finding}: {result!r}"[:_DETAIL_CHARS_MAX]
        return (str(finding), result_json, detail)

    return run


def _add_to_core(registry: Any, kind: str, http_kind: HttpKind, client: Any, base_delay: Optional[timedelta],
                 max_delay: Optional[timedelta], multiplier: Optional[int], *, encrypt: bool = False) -> None:
    """Register ``http_kind`` in a core registry, calling through ``client``
    (``encrypt``: the kind's payloads, results and errors are encrypted; the
    templates see the clear payload)."""

    def ms(value: Optional[timedelta]) -> Optional[int]:
        """``value`` in whole milliseconds (``None`` stays ``None``)."""
        return None if value is None else value // timedelta(milliseconds=1)

    adapter = None if http_kind.status_check is None else _status_adapter(http_kind.status_check)
    core.registry_add_http(registry, kind, http_kind._core, client, adapter, ms(base_delay), ms(max_delay),
                           multiplier, encrypt=encrypt)
