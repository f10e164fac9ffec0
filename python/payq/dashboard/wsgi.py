"""The slice of WSGI (PEP 3333) the dashboard needs: a parsed, bounded
request and a response that knows its cookies and headers."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qs, urlencode

__all__ = ["Environ", "StartResponse", "WsgiApp", "HttpError", "Request", "Response"]

Environ = Dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]

FORM_BYTES_MAX = 64 * 1024
"""The largest form body read; the dashboard's forms are a reason, a token
and at most a page of selected task ids."""
FIELDS_MAX = 256
"""The most query or form fields parsed from one request (a bulk action's
form names up to 200 selected tasks)."""
COOKIE_HEADER_BYTES_MAX = 16 * 1024


class HttpError(Exception):
    """A request the dashboard refuses, with the status to answer and a
    message safe to show (it is escaped when rendered)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _wsgi_text(value: str) -> str:
    # PEP 3333 hands paths over as latin-1 decoded bytes; browsers send UTF-8.
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError) as exc:
        raise HttpError(400, "the request path is not UTF-8") from exc


def _first_values(text: str, what: str) -> Dict[str, str]:
    try:
        parsed = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=FIELDS_MAX,
                          errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"the {what} cannot be parsed") from exc
    return {key: values[0] for key, values in parsed.items()}


def _cookies(header: str) -> Dict[str, str]:
    # A lenient parser: one malformed cookie set by another application on
    # the same host must not lock operators out of the dashboard.
    cookies: Dict[str, str] = {}
    for part in header[:COOKIE_HEADER_BYTES_MAX].split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in cookies:
            cookies[name] = value.strip().strip('"')
    return cookies


@dataclass
class Request:
    """One request as the dashboard sees it."""

    environ: Environ
    method: str
    path: str
    """The path inside the dashboard (``PATH_INFO``), always starting with ``/``."""
    script_name: str
    """Where the dashboard is mounted (``SCRIPT_NAME``): ``""`` at the root."""
    query: Dict[str, str]
    cookies: Dict[str, str]
    _form: Optional[Dict[str, str]] = field(default=None, repr=False)
    _form_text: str = field(default="", repr=False)

    @classmethod
    def from_environ(cls, environ: Environ) -> "Request":
        """Parse a WSGI environ (the form is read later, by :meth:`form`);
        raises :class:`HttpError` 400 for a non-UTF-8 path or a bad query string."""
        path = _wsgi_text(environ.get("PATH_INFO", "") or "/")
        if not path.startswith("/"):
            path = "/" + path
        return cls(
            environ=environ,
            method=str(environ.get("REQUEST_METHOD", "GET")).upper(),
            path=path,
            script_name=_wsgi_text(environ.get("SCRIPT_NAME", "")).rstrip("/"),
            query=_first_values(environ.get("QUERY_STRING", ""), "query string"),
            cookies=_cookies(environ.get("HTTP_COOKIE", "")),
        )

    def header(self, name: str) -> Optional[str]:
        """A request header by its HTTP name (``Origin``, ``Referer``)."""
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        return None if value is None else str(value)

    @property
    def scheme(self) -> str:
        """``http`` or ``https``, from ``wsgi.url_scheme``."""
        return str(self.environ.get("wsgi.url_scheme", "http"))

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` as this request reached the server."""
        host = self.environ.get("HTTP_HOST")
        if not host:
            host = str(self.environ.get("SERVER_NAME", "localhost"))
            port = str(self.environ.get("SERVER_PORT", ""))
            if port and port != ("443" if self.scheme == "https" else "80"):
                host = f"{host}:{port}"
        return f"{self.scheme}://{host}"

    def url(self, path: str, **query: object) -> str:
        """A URL inside the dashboard, with the query parameters that are set
        (None and empty values are left out)."""
        pairs = [(key, str(value)) for key, value in query.items() if value is not None and value != ""]
        return self.script_name + path + ("?" + urlencode(pairs) if pairs else "")

    def form(self) -> Dict[str, str]:
        """The fields of an ``application/x-www-form-urlencoded`` body, read
        once and bounded by :data:`FORM_BYTES_MAX`."""
        if self._form is not None:
            return self._form
        content_type = str(self.environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise HttpError(415, "the dashboard only accepts its own forms")
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError as exc:
            raise HttpError(400, "bad Content-Length") from exc
        if length < 0 or length > FORM_BYTES_MAX:
            raise HttpError(413, "the form is too large")
        body = self.environ["wsgi.input"].read(length) if length else b""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HttpError(400, "the form is not UTF-8") from exc
        self._form = _first_values(text, "form")
        self._form_text = text
        return self._form

    def form_values(self, name: str) -> List[str]:
        """Every value of a repeated form field (checkboxes), in order."""
        self.form()
        try:
            parsed = parse_qs(self._form_text, keep_blank_values=True, max_num_fields=FIELDS_MAX, errors="strict")
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, "the form cannot be parsed") from exc
        return parsed.get(name, [])


@dataclass
class Response:
    """A complete response: the dashboard never streams."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: List[Tuple[str, str]] = field(default_factory=list)

    @classmethod
    def redirect(cls, location: str) -> "Response":
        """303 See Other: after a POST the browser follows with a GET."""
        return cls(303, b"", "text/plain; charset=utf-8", [("Location", location)])

    @classmethod
    def text(cls, status: int, text: str) -> "Response":
        """A plain-text (UTF-8) response with ``status``."""
        return cls(status, text.encode("utf-8"), "text/plain; charset=utf-8")

    def set_cookie(self, name: str, value: str, *, path: str, secure: bool, max_age: Optional[int] = None) -> None:
        """A cookie scripts cannot read and other sites never trigger."""
        parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if secure:
            parts.append("Secure")
        self.headers.append(("Set-Cookie", "; ".join(parts)))

    def delete_cookie(self, name: str, *, path: str, secure: bool) -> None:
        """Tell the browser to drop cookie ``name`` (empty, ``Max-Age=0``)."""
        self.set_cookie(name, "", path=path, secure=secure, max_age=0)

    def start(self, start_response: StartResponse) -> List[bytes]:
        """Hand the response to the WSGI server."""
        phrase = HTTPStatus(self.status).phrase
        headers = [("Content-Type", self.content_type), ("Content-Length", str(len(self.body))), *self.headers]
        start_response(f"{self.status} {phrase}", headers)
        return [self.body]
