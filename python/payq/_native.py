"""Loads payq._core and, when that fails, says why in terms a user can act on."""

from __future__ import annotations

import platform
import sys

try:
    from payq import _core as core
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "payq's compiled core (payq._core) could not be loaded.\n"
        f"  interpreter: {sys.executable} (Python {platform.python_version()})\n"
        f"  platform:    {platform.platform()}\n"
        f"  cause:       {exc}\n"
        "Likely causes: payq was built for another Python (reinstall with this "
        "interpreter: pip install --force-reinstall payq), or a system library is "
        "missing (apt-get install libpqxx-6.4 libpq5 libcurl4)."
    ) from exc

__all__ = ["core"]
