"""Progress of a long operation on stderr: a tqdm bar on a terminal, plain lines
every few seconds otherwise (a log, CI, a pipe).

    with Progress("list push", total=len(data), unit="B") as bar:
        bar.update(n)                      # n more done
        with bar.waiting("commit"):        # a step with no count: elapsed time shown
            link.call_signed(...)
        bar.write("a line above the bar")  # instead of print() while the bar is up

Why tqdm and not rich: tqdm is one small package with no dependencies of its
own and does exactly this (rates, ETA, nested bars, a delay so that quick
steps draw nothing); rich is a whole rendering library, more than a progress
line needs, and termctl's output is plain text meant to be read and scripted.

Not on a terminal, a line such as `list push: 40% (400,000/1,000,000 B), 3 s`
goes out every `interval` seconds, and a closing one if any went out; an
operation quicker than that prints nothing. Bars opened while another is up
(a day's clearing inside the demo's days) sit below it and vanish when done.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager


class Progress:
    _open = 0  # bars up at once, for tqdm's position

    def __init__(self, label: str, total: int, unit: str = "", stream=None,
                 interval: float = 5.0):
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = getattr(self.stream, "isatty", lambda: False)()
        self.interval = interval
        self._t0 = time.monotonic()
        self._last = self._t0
        self._printed = False
        self._lock = threading.Lock()
        self._depth = Progress._open
        Progress._open += 1
        self._bar = None
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit=unit or "it", file=self.stream,
                             unit_scale=unit == "B", delay=0.3, dynamic_ncols=True,
                             position=self._depth, leave=self._depth == 0)

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
            elif time.monotonic() - self._last >= self.interval:
                self._line()

    @contextmanager
    def waiting(self, step: str):
        """A step with no count to show (a list's commit): its elapsed time instead."""
        stop = threading.Event()
        t0 = time.monotonic()

        def tick():
            while not stop.wait(0.5 if self._bar is not None else min(self.interval, 3600)):
                with self._lock:
                    if self._bar is not None:
                        self._bar.set_postfix_str(f"{step} {time.monotonic() - t0:.0f} s")
                    else:
                        self._line(f"{step}, {time.monotonic() - t0:.0f} s")

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield self
        finally:
            stop.set()
            ticker.join()
            if self._bar is not None:
                self._bar.set_postfix_str(step + " done")

    def write(self, text: str, file=None) -> None:
        """Print a line (to stdout by default) without tearing the bar."""
        out = file or sys.stdout
        if self._bar is not None:
            self._bar.write(text, file=out)
        else:
            print(text, file=out, flush=True)

    def _line(self, step: str = "") -> None:
        now = time.monotonic()
        self._last = now
        self._printed = True
        frac = min(self.done / self.total, 1.0)
        unit = f" {self.unit}" if self.unit else ""
        what = f", {step}" if step else ""
        self.stream.write(f"{self.label}: {frac:.0%} ({self.done:,}/{self.total:,}{unit}), "
                          f"{now - self._t0:.0f} s{what}\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        Progress._open -= 1
        if self._bar is not None:
            self._bar.close()
        elif self._printed:
            self._line("done" if exc[0] is None else "stopped")
