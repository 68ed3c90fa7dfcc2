"""The emulated board's flash counters, as `status` reports them, for benches.

    before = flash_counters(link.status())
    ...  one sale ...
    used = flash_counters(link.status()) - before
    used.erases, used.programs, used.typ_us, used.max_us   # flash cost of that sale

The firmware's block device on the emulated board (firmware/drivers/filebdev.py)
counts reads, programs and erases and charges each program and erase the
datasheet time the board file gives (typical and maximum; docs/boards.md,
"Flash"). `status` shows them as

    flash_ops=reads R/RB B, programs P/PB B, erases E, violations V
    flash_us=T typ, M max

taken before the status command itself touches the flash. A board's own
flash counts nothing (no such fields): flash_counters() then raises ToolError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from host_tools.errors import ToolError

_OPS = re.compile(r"reads (\d+)/(\d+) B, programs (\d+)/(\d+) B, erases (\d+), "
                  r"violations (\d+)$")
_US = re.compile(r"(\d+) typ, (\d+) max$")


@dataclass(frozen=True)
class FlashCounters:
    reads: int = 0
    read_bytes: int = 0
    programs: int = 0  # page-program commands (one per 256-byte page touched)
    program_bytes: int = 0
    erases: int = 0  # 4 KB sector erases
    violations: int = 0  # programs over unerased bits or misaligned
    typ_us: int = 0  # modelled flash time, datasheet typical
    max_us: int = 0  # ... and maximum

    def __sub__(self, other: FlashCounters) -> FlashCounters:
        return FlashCounters(*(getattr(self, f.name) - getattr(other, f.name)
                               for f in fields(self)))

    def __add__(self, other: FlashCounters) -> FlashCounters:
        return FlashCounters(*(getattr(self, f.name) + getattr(other, f.name)
                               for f in fields(self)))


def flash_counters(status: dict[str, str]) -> FlashCounters:
    """The counters from a status dict (TerminalLink.status())."""
    ops, us = status.get("flash_ops"), status.get("flash_us")
    if ops is None or us is None:
        raise ToolError("this terminal reports no flash counters (only the emulated board "
                        "counts its flash)")
    m, t = _OPS.match(ops), _US.match(us)
    if not m or not t:
        raise ToolError(f"flash counters not understood: {ops!r}, {us!r}")
    return FlashCounters(*(int(x) for x in m.groups() + t.groups()))
