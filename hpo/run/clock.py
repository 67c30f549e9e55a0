"""The driver's clock: a seam, so policy tests run simulated time instead of sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...


class SystemClock:
    """Real time (``time.monotonic``)."""

    def monotonic(self) -> float:
        return time.monotonic()
