"""Test doubles at the firmware's seams (never deeper): the host-link port."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))

from terminal import frame  # noqa: E402


class MemoryPort:
    """The port protocol of terminal.link (wait/readinto/write) over byte buffers."""

    def __init__(self):
        self.inbox = bytearray()
        self.outbox = bytearray()

    def wait(self, timeout_ms):
        return bool(self.inbox)

    def readinto(self, mv):
        n = min(len(mv), len(self.inbox))
        mv[:n] = self.inbox[:n]
        del self.inbox[:n]
        return n

    def write(self, mv):
        self.outbox += bytes(mv)
        return True

    def replies(self):
        """Decode and clear everything the terminal sent: list of payload bytes."""
        r = frame.FrameReader(4096)
        r.feed(bytes(self.outbox))
        self.outbox.clear()
        out = []
        while True:
            kind, payload = r.pop()
            if kind == frame.NONE:
                return out
            if kind == frame.FRAME:
                out.append(bytes(payload))


class Board:
    NAME = "test"
    MAX_FRAME = 1024
    LIST_CAPACITY = 1000
    COUNTER_CAPACITY = 64
    JOURNAL_CAPACITY = 100
    ISSUER_CAPACITY = 8
    ISSUER_KEY_CAPACITY = 4
