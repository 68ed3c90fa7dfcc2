"""A terminal in this process: the firmware's TerminalService under CPython,
reached through the same TerminalLink as a board, for the fleet simulation.

    board = InProcessBoard(workdir / "shop0", ring)
    link = board.link()            # TerminalLink: framing, MACs, commands as on a pty

Everything above the byte stream is the firmware's own code (service, sale, tap,
decision, negative list, journal), only running under CPython on the host's
filesystem instead of LittleFS. Single-threaded: bytes the host writes are
handled at once; while the terminal waits for an online answer, the host's
link is pumped so its event handler can answer.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from host_tools.link import TerminalLink
from terminal.service import KEY_FILE, TerminalService


class _Board:
    """The board file of an in-process terminal (the emulator's capacities)."""

    def __init__(self, name: str = "emulator"):
        from host_tools.build import board_values

        for k, v in board_values(name).items():
            if k.isupper():
                setattr(self, k, v)
        self.NAME = f"{name} (in-process)"


class _Port:
    """terminal.link's port protocol over two byte buffers."""

    def __init__(self, board: InProcessBoard):
        self.board = board
        self.inbox = bytearray()
        self.outbox = bytearray()

    def wait(self, timeout_ms: int) -> bool:
        if not self.inbox and self.board.host is not None:
            self.board.host.pump()  # let the host answer what the terminal just sent
        return bool(self.inbox)

    def readinto(self, mv) -> int:
        n = min(len(mv), len(self.inbox))
        mv[:n] = self.inbox[:n]
        del self.inbox[:n]
        return n

    def write(self, mv) -> bool:
        self.outbox += bytes(mv)
        return True


class InProcessBoard:
    """pyserial's read/write/in_waiting over a TerminalService in this process."""

    def __init__(self, root: Path, ring, board: str = "emulator"):
        root.mkdir(parents=True, exist_ok=True)
        key_file = root / KEY_FILE
        if not key_file.exists():
            tid = secrets.randbits(32)
            key = secrets.token_bytes(32)
            key_file.write_bytes(tid.to_bytes(4, "little") + key)
            ring.add(tid, key, note=f"in-process {root}")
        self.ring = ring
        self.port = _Port(self)
        self.svc = TerminalService(_Board(board), str(root), self.port, "unix")
        self.host: TerminalLink | None = None
        self._busy = False

    def link(self, timeout: float = 10.0) -> TerminalLink:
        self.host = TerminalLink(self, f"in-process:{self.svc.terminal_id:08x}", timeout,
                                 self.ring)
        return self.host

    # -- the pyserial surface TerminalLink uses ----------------------------------------

    def write(self, data: bytes) -> int:
        self.port.inbox += data
        if not self._busy:  # not re-entered from inside the service's own wait
            self._busy = True
            try:
                while self.port.inbox:
                    self.svc.step(0)
            finally:
                self._busy = False
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.port.outbox)

    def read(self, n: int = 1) -> bytes:
        out = bytes(self.port.outbox[:n])
        del self.port.outbox[:n]
        return out

    def reset_input_buffer(self) -> None:
        self.port.outbox.clear()

    def close(self) -> None:
        self.svc.close()
