"""Tracing with OpenTelemetry: one trace from the request that enqueued a
task, through every attempt and the provider's HTTP call, to the ledger
settlement.

Install the extra (``pip install payq[otel]``, which brings
``opentelemetry-api``) and set up a tracer provider as for any other
library; payq then traces on its own::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider(...))  # payq picks it up

or give payq a provider of its own with :func:`enable`. What payq does then:

- every enqueue stores the current W3C trace context (``traceparent``,
  ``tracestate``) with its tasks, and makes a ``payq.enqueue`` span;
- a worker makes a ``payq.claim`` span per claim that took tasks, and a
  ``payq.attempt`` span per attempt, a child of the enqueuing span: a
  Python handler's own spans nest under it, and so do the built-in HTTP
  handler's ``payq.http`` call, the completion's ``payq.settle`` and the
  ``payq.ledger.*`` postings.

Spans carry ids, kinds, queues, outcomes and currencies; never a payload,
a result, an error text or an account's owner. ``docs/tracing.md`` lists
every span and attribute.

Without OpenTelemetry, or with it but without a tracer provider, payq makes
no spans and the core's hooks cost one branch each; an enqueue still
carries a trace context that the application's code made current (a
pass-through propagator, say).
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

from contextlib import contextmanager, nullcontext

from payq._native import core
from payq.errors import ConfigError

try:
    from opentelemetry import context as _otel_context
    from opentelemetry import trace as _otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the optional extra payq[otel] is not installed
    _otel_trace = None  # type: ignore[assignment]

__all__ = ["available", "enable", "disable", "enabled"]

_INSTRUMENTATION_NAME = "payq"
# Spans the core started and has not ended yet. Each is ended by the code
# that started it; the bound only keeps a tracer that was swapped out
# mid-flight from growing without end.
_OPEN_SPANS_MAX = 100_000
_NO_SCOPE: ContextManager[None] = nullcontext()
# How often an enqueue looks for a global tracer provider set since (the
# look-up costs a few microseconds; a worker also looks when it starts).
_PROVIDER_CHECK_INTERVAL_S = 1.0


def available() -> bool:
    """Whether OpenTelemetry (the ``payq[otel]`` extra) is installed."""
    return _otel_trace is not None


class _Hook:
    """What the C++ core calls (``bindings/bind_tracing.cpp``) to start and
    end its spans, by integer ids it hands back and forth."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self._propagator = TraceContextTextMapPropagator()
        self._spans: Dict[int, Any] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._kinds = {
            "internal": _otel_trace.SpanKind.INTERNAL,
            "client": _otel_trace.SpanKind.CLIENT,
            "producer": _otel_trace.SpanKind.PRODUCER,
            "consumer": _otel_trace.SpanKind.CONSUMER,
        }

    def _extracted(self, context: Tuple[str, str]) -> Any:
        carrier = {"traceparent": context[0]}
        if context[1]:
            carrier["tracestate"] = context[1]
        return self._propagator.extract(carrier)

    def start(self, name: str, kind: str, parent_id: int, remote: Optional[Tuple[str, str]],
              link: Optional[Tuple[str, str]], start_ns: int, attributes: Dict[str, Any]) -> int:
        """Start a span: a child of the core's span ``parent_id``, else of
        the stored context ``remote``, else of this thread's current
        OpenTelemetry context (application code calling the ledger)."""
        parent = None
        if parent_id:
            with self._lock:
                parent_span = self._spans.get(parent_id)
            if parent_span is not None:
                parent = _otel_trace.set_span_in_context(parent_span)
        elif remote is not None:
            parent = self._extracted(remote)
        links = None
        if link is not None:
            linked = _otel_trace.get_current_span(self._extracted(link)).get_span_context()
            if linked.is_valid:
                links = [_otel_trace.Link(linked)]
        span = self.tracer.start_span(name, context=parent, kind=self._kinds.get(kind, _otel_trace.SpanKind.INTERNAL),
                                      attributes=attributes, links=links, start_time=start_ns or None)
        span_id = next(self._ids)
        with self._lock:
            if len(self._spans) >= _OPEN_SPANS_MAX:
                self._spans.pop(next(iter(self._spans)))
            self._spans[span_id] = span
        return span_id

    def end(self, span_id: int, attributes: Dict[str, Any], status: str, description: str, end_ns: int) -> None:
        """End the core's span ``span_id`` with its attributes and status."""
        with self._lock:
            span = self._spans.pop(span_id, None)
        if span is None:
            return
        if attributes:
            span.set_attributes(attributes)
        if status == "error":
            span.set_status(_otel_trace.Status(_otel_trace.StatusCode.ERROR, description or None))
        elif status == "ok":
            span.set_status(_otel_trace.Status(_otel_trace.StatusCode.OK))
        span.end(end_time=end_ns or None)

    def span(self, span_id: int) -> Any:
        """The open span ``span_id``, or None."""
        with self._lock:
            return self._spans.get(span_id)

    def context(self, span_id: int) -> Optional[Tuple[str, str]]:
        """The W3C (traceparent, tracestate) of the open span ``span_id``."""
        span = self.span(span_id)
        return None if span is None else _traceparent(self._propagator, _otel_trace.set_span_in_context(span))


def _traceparent(propagator: Any, context: Any = None) -> Optional[Tuple[str, str]]:
    """(traceparent, tracestate) of ``context`` (default: the current one),
    or None when it holds no valid span context."""
    carrier: Dict[str, str] = {}
    propagator.inject(carrier, context=context)
    if "traceparent" not in carrier:
        return None
    return carrier["traceparent"], carrier.get("tracestate", "")


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hook: Optional[_Hook] = None
        # Set once enable() or disable() was called, or a global provider
        # was found: from then on payq no longer looks for one.
        self.decided = False
        self.provider_checked_at: Optional[float] = None
        self.propagator = TraceContextTextMapPropagator() if _otel_trace is not None else None


_state = _State()


def enable(tracer_provider: Any = None) -> None:
    """Trace with ``tracer_provider`` (default: OpenTelemetry's global one,
    the same payq would pick up by itself once one is set). Raises
    :class:`payq.ConfigError` when OpenTelemetry is not installed."""
    if _otel_trace is None:
        raise ConfigError("payq tracing needs OpenTelemetry: pip install 'payq[otel]'")
    from payq import __version__

    provider = tracer_provider if tracer_provider is not None else _otel_trace.get_tracer_provider()
    hook = _Hook(provider.get_tracer(_INSTRUMENTATION_NAME, __version__))
    with _state.lock:
        core.tracing_install(hook)
        _state.hook = hook
        _state.decided = True


def disable() -> None:
    """Stop making spans (an enqueue still stores the current trace
    context). payq does not pick a provider up by itself after this;
    :func:`enable` turns tracing on again."""
    with _state.lock:
        core.tracing_uninstall()
        _state.hook = None
        _state.decided = True


def enabled() -> bool:
    """Whether payq makes spans now."""
    return _state.hook is not None


def _provider_set() -> bool:
    provider = _otel_trace.get_tracer_provider()
    return not isinstance(provider, (_otel_trace.ProxyTracerProvider, _otel_trace.NoOpTracerProvider))


def auto_enable(*, now: bool = False) -> None:
    """Enable tracing once the application has set a global tracer provider:
    looked for at a worker's start (``now``) and at most once a second by
    enqueues, until one is found."""
    if _otel_trace is None or _state.decided:
        return
    at = time.monotonic()
    checked = _state.provider_checked_at
    if not now and checked is not None and at - checked < _PROVIDER_CHECK_INTERVAL_S:
        return
    _state.provider_checked_at = at
    if _provider_set():
        with _state.lock:
            if _state.decided:
                return
        enable()


def _enqueue_attributes(specs: Sequence[Any]) -> Dict[str, Any]:
    attributes: Dict[str, Any] = {"messaging.system": "payq", "messaging.operation.type": "send",
                                  "payq.task.count": len(specs)}
    queues = {s.queue for s in specs}
    kinds = {s.kind for s in specs}
    if len(queues) == 1:
        attributes["payq.queue"] = next(iter(queues))
    if len(kinds) == 1:
        attributes["payq.task.kind"] = next(iter(kinds))
    return attributes


def enqueue_traced(specs: Sequence[Any], write: Callable[[], List[Any]]) -> List[Any]:
    """Runs ``write`` (the core's enqueue of ``specs``) in a ``payq.enqueue``
    span, with each spec carrying the span's trace context; without
    tracing, with the current context if there is one."""
    if _otel_trace is None:
        return write()
    auto_enable()
    hook = _state.hook
    if hook is None:
        # Only a context someone made current is carried: the usual case
        # without a provider is none, at the cost of one lookup.
        if _otel_trace.get_current_span().get_span_context().is_valid:
            _specs_carry(specs, _traceparent(_state.propagator))
        return write()
    with hook.tracer.start_as_current_span("payq.enqueue", kind=_otel_trace.SpanKind.PRODUCER,
                                           attributes=_enqueue_attributes(specs), record_exception=False,
                                           set_status_on_exception=False) as span:
        _specs_carry(specs, _traceparent(_state.propagator))
        try:
            results = write()
        except BaseException as exc:
            # The type only: a message may quote the request.
            span.set_status(_otel_trace.Status(_otel_trace.StatusCode.ERROR, type(exc).__name__))
            span.set_attribute("error.type", type(exc).__name__)
            raise
        if len(results) == 1:
            span.set_attribute("payq.task.id", results[0].task_id)
            span.set_attribute("payq.task.created", bool(results[0].created))
        return results


def _specs_carry(specs: Sequence[Any], context: Optional[Tuple[str, str]]) -> None:
    if context is None:
        return
    trace_context = core.TraceContext(context[0], context[1])
    for spec in specs:
        spec.trace_context = trace_context


@contextmanager
def _span_current(span: Any) -> Iterator[None]:
    token = _otel_context.attach(_otel_trace.set_span_in_context(span))
    try:
        yield
    finally:
        _otel_context.detach(token)


def attempt_context() -> Optional[contextvars.Context]:
    """For a coroutine handler started on another thread: a copy of the
    current context in which the worker's current attempt span is
    OpenTelemetry's current span (run the task's creation in it); None when
    not tracing."""
    hook = _state.hook
    if hook is None:
        return None
    span_id = core.tracing_current_span()
    span = None if span_id is None else hook.span(span_id)
    if span is None:
        return None
    context = contextvars.copy_context()
    context.run(_otel_context.attach, _otel_trace.set_span_in_context(span))
    return context


def attempt_scope() -> ContextManager[None]:
    """Within it, the worker's current attempt span is OpenTelemetry's
    current span, so a handler's own spans are its children. A shared
    no-op when not tracing."""
    hook = _state.hook
    if hook is None:
        return _NO_SCOPE
    span_id = core.tracing_current_span()
    span = None if span_id is None else hook.span(span_id)
    return _NO_SCOPE if span is None else _span_current(span)
