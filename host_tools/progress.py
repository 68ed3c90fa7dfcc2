"""A one-line progress bar on stderr (only when stderr is a terminal).

    with Progress("list push", total=len(data), unit="B") as bar:
        bar.update(n)
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, unit: str = "", stream=None):
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = getattr(self.stream, "isatty", lambda: False)()
        self._t0 = time.monotonic()
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            rate = self.done / max(now - self._t0, 1e-6)
            self.stream.write(f"\r{self.label} [{bar:<30}] {frac:6.1%} "
                              f"{self.done}/{self.total} {self.unit} ({rate:,.0f} {self.unit}/s)")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
