"""Per-issuer parameter overrides: a fixed-capacity table, looked up without allocation.

    t = IssuerTable(32)
    err = t.update(0x0101, {"floor_limit": 5000, "default_mask": 0})  # None or a message
    i = t.find(card.issuer_id)                          # index or -1
    floor = t.get(i, I_FLOOR_LIMIT, params.values[P_FLOOR_LIMIT])   # override or default
    t.set_online_only(0x0101, True)                     # negative-list quota overflow

Every field holds INHERIT (-1) unless the issuer overrides it, so an issuer
absent from the table, or a field not given, falls back to the global params.
`default_mask` is the EMV-style Default action code: the reason bits
(decision.R_*) that may still be approved when the terminal cannot go online;
bits decision treats as hard (listed, expired, bad MAC...) are ignored in it.
`online_only` is set by the negative-list code when the issuer's list quota
overflows (a listed card of that issuer might be missing from the list). If the
table has no room for that issuer, `all_online_only` is raised instead: every
card goes online rather than one issuer's cards slipping through.
"""

import struct
from array import array

from terminal.compat import const

I_FLOOR_LIMIT = const(0)
I_DAILY_OFFLINE_CAP = const(1)
I_CUMULATIVE_OFFLINE_CAP = const(2)
I_TERMINAL_DAILY_CAP = const(3)
I_LOWER_CONSECUTIVE_OFFLINE = const(4)
I_UPPER_CONSECUTIVE_OFFLINE = const(5)
I_DEFAULT_MASK = const(6)
I_ONLINE_ONLY = const(7)
FIELDS = const(8)
INHERIT = const(-1)
_MASK_MAX = const(0x3FFFFFFF)

# The first six fields are the global parameters of the same index and name
# (tests/test_issuers.py pins it) and share their range.
NAMES = ("floor_limit", "daily_offline_cap", "cumulative_offline_cap", "terminal_daily_cap",
         "lower_consecutive_offline", "upper_consecutive_offline", "default_mask",
         "online_only")


def field_of(name):
    for i in range(FIELDS):
        if NAMES[i] == name:
            return i
    return -1


def _limits(field):
    """(minimum, maximum) of a field. terminal.params is imported here, not at the
    top: only setting and loading overrides check ranges, and the tap path keeps
    the parameter table out of RAM."""
    if field == I_DEFAULT_MASK:
        return 0, _MASK_MAX
    if field == I_ONLINE_ONLY:
        return 0, 1
    from terminal.params import TABLE

    return TABLE[field][2], TABLE[field][3]


class IssuerTable:
    def __init__(self, capacity=32):
        self.capacity = capacity
        self.ids = array("i", [-1] * capacity)
        self.values = array("i", [INHERIT] * (capacity * FIELDS))
        self.all_online_only = False

    def find(self, issuer_id):
        """Index of the issuer's row, or -1."""
        ids = self.ids
        for i in range(self.capacity):
            if ids[i] == issuer_id:
                return i
        return -1

    def get(self, i, field, default):
        """The issuer's override of `field`, or `default` (i < 0, or INHERIT)."""
        if i < 0:
            return default
        v = self.values[i * FIELDS + field]
        return default if v < 0 else v

    def online_only(self, i):
        if self.all_online_only:
            return True
        return i >= 0 and self.values[i * FIELDS + I_ONLINE_ONLY] == 1

    def _row(self, issuer_id):
        """Row of the issuer, created if needed; -1 when the table is full."""
        i = self.find(issuer_id)
        if i >= 0:
            return i
        for i in range(self.capacity):
            if self.ids[i] < 0:
                self.ids[i] = issuer_id
                base = i * FIELDS
                for f in range(FIELDS):
                    self.values[base + f] = INHERIT
                return i
        return -1

    def set_online_only(self, issuer_id, flag):
        """Set or clear the issuer's online-only flag. Returns False if the table had
        no room (then all_online_only is raised when setting)."""
        i = self.find(issuer_id) if not flag else self._row(issuer_id)
        if i < 0:
            if flag:
                self.all_online_only = True
            return not flag
        self.values[i * FIELDS + I_ONLINE_ONLY] = 1 if flag else INHERIT
        return True

    def update(self, issuer_id, changes):
        """Apply {name: int or None} (None = back to inherit): all or nothing.
        Returns None or an error message."""
        if not isinstance(issuer_id, int) or not 0 <= issuer_id <= 0xFFFF:
            return "issuer id must be 0..65535"
        pending = []
        for name, value in changes.items():
            f = field_of(name)
            if f < 0:
                return "unknown issuer parameter %r" % name
            if value is None or value == INHERIT:
                pending.append((f, INHERIT))
                continue
            lo, hi = _limits(f)
            if not isinstance(value, int) or value < lo or value > hi:
                return "%s=%r out of range %d..%d" % (name, value, lo, hi)
            pending.append((f, value))
        i = self._row(issuer_id)
        if i < 0:
            return "issuer table full (%d issuers)" % self.capacity
        for f, value in pending:
            self.values[i * FIELDS + f] = value
        return None

    def remove(self, issuer_id):
        i = self.find(issuer_id)
        if i >= 0:
            self.ids[i] = -1
            for f in range(FIELDS):
                self.values[i * FIELDS + f] = INHERIT

    def items(self, i):
        """(name, value) of the overridden fields of row i (host/status use)."""
        for f in range(FIELDS):
            v = self.values[i * FIELDS + f]
            if v != INHERIT:
                yield NAMES[f], v

    def to_bytes(self):
        head = struct.pack("<HHB", self.capacity, FIELDS, 1 if self.all_online_only else 0)
        return head + bytes(self.ids) + bytes(self.values)

    def from_bytes(self, data):
        """Restore to_bytes() output; None or a message (then nothing changes)."""
        n = self.capacity
        want = 5 + 4 * n + 4 * n * FIELDS
        if len(data) != want:
            return "issuer table record has %d bytes, expected %d" % (len(data), want)
        cap, fields, flag = struct.unpack("<HHB", data[:5])
        if cap != n or fields != FIELDS:
            return "issuer table record shape differs"
        ids = array("i", data[5 : 5 + 4 * n])
        values = array("i", data[5 + 4 * n :])
        for f in range(FIELDS):
            lo, hi = _limits(f)
            for i in range(n):
                v = values[i * FIELDS + f]
                if v != INHERIT and (v < lo or v > hi):
                    return "stored %s out of range" % NAMES[f]
        self.ids = ids
        self.values = values
        self.all_online_only = flag == 1
        return None
