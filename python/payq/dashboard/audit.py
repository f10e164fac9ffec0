"""The ledger audit as the dashboard runs it: on demand, one at a time,
and reused for a while, because it reads the whole journal."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional

import payq

__all__ = ["AuditResult", "AuditCache"]

FORCED_AGE_MIN = timedelta(seconds=5)
"""A forced audit still reuses a result this young: reloading the page
must not queue full journal scans."""


@dataclass(frozen=True)
class AuditResult:
    """One audit: when it ran, how long it took, what it found."""

    finished_at: datetime
    elapsed: timedelta
    report: "payq.AuditReport"


class AuditCache:
    """Runs :meth:`payq.Ledger.audit` at most once per ``max_age`` unless
    forced (and even then not twice within :data:`FORCED_AGE_MIN`), and
    never twice at the same time (a second caller waits for the first
    one's result)."""

    def __init__(self, db: "payq.Database", *, max_age: timedelta = timedelta(seconds=60)) -> None:
        self._db = db
        self._max_age = max_age
        self._lock = threading.Lock()
        self._last: Optional[AuditResult] = None

    @property
    def last(self) -> Optional[AuditResult]:
        """The latest result, without running anything."""
        return self._last

    def run(self, *, force: bool = False) -> AuditResult:
        """The latest result if it is fresh enough, else a new audit."""
        with self._lock:
            last = self._last
            if last is not None:
                age = datetime.now(timezone.utc) - last.finished_at
                if age < (FORCED_AGE_MIN if force else self._max_age):
                    return last
            started = time.monotonic()
            report = self._db.ledger.audit()
            self._last = AuditResult(datetime.now(timezone.utc), timedelta(seconds=time.monotonic() - started),
                                     report)
            return self._last
