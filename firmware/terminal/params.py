"""Terminal parameters: a fixed table of named integers, validated as a whole.

    p = Params()
    err = p.update({"floor_limit": 9000})   # None, or a message; p unchanged on error
    p.values[P_FLOOR_LIMIT]                 # hot-path read: an int from a preallocated array

Amounts are in the currency's minor unit (yen). Persistence is the caller's
job (`to_bytes` / `from_bytes`), so this module has no I/O.
"""

import struct
from array import array

from terminal.compat import const

# Index of each parameter in `Params.values`, in table order.
P_FLOOR_LIMIT = const(0)
P_DAILY_OFFLINE_CAP = const(1)
P_CUMULATIVE_OFFLINE_CAP = const(2)
P_TERMINAL_DAILY_CAP = const(3)
P_LOWER_CONSECUTIVE_OFFLINE = const(4)
P_UPPER_CONSECUTIVE_OFFLINE = const(5)
P_RANDOM_TARGET_PCT = const(6)
P_RANDOM_MAX_TARGET_PCT = const(7)
P_RANDOM_THRESHOLD = const(8)
P_SPLIT_WINDOW_S = const(9)
P_DECLINE_LIMIT = const(10)
P_ENUM_DISTINCT_LIMIT = const(11)
P_ENUM_WINDOW_MIN = const(12)
P_ENUM_LOCKOUT_MIN = const(13)
P_BUSINESS_DAY_CUTOVER_MIN = const(14)
P_ONLINE_TIMEOUT_MS = const(15)
P_LISTED_ACTION = const(16)
P_OFFLINE_DEFAULT = const(17)
P_JOURNAL_NEAR_FULL_PCT = const(18)
P_NEW_CARD_ONLINE = const(19)

_MAX_AMOUNT = const(100_000_000)

# (name, default, minimum, maximum). Defaults where the schemes publish
# nothing (daily and cumulative caps, consecutive limits, random selection,
# decline limit) are this project's choices, tuned with `termctl tune` on the
# shipped scenarios: docs/decision.md says why each is what it is;
# host_tools/paramdoc.py says what each one means (kept there because on a board
# these strings would cost heap for text only the host prints).
TABLE = (
    ("floor_limit", 10000, 0, _MAX_AMOUNT),
    ("daily_offline_cap", 10000, 0, _MAX_AMOUNT),
    ("cumulative_offline_cap", 30000, 0, _MAX_AMOUNT),
    ("terminal_daily_cap", 30000, 0, _MAX_AMOUNT),
    ("lower_consecutive_offline", 16, 0, 255),
    ("upper_consecutive_offline", 32, 0, 255),
    ("random_target_pct", 0, 0, 99),
    ("random_max_target_pct", 10, 0, 99),
    ("random_threshold", 4000, 0, _MAX_AMOUNT),
    ("split_window_s", 900, 0, 86400),
    ("decline_limit", 2, 1, 100),
    ("enum_distinct_limit", 30, 1, 10000),
    ("enum_window_min", 10, 1, 1440),
    ("enum_lockout_min", 60, 1, 1440),
    ("business_day_cutover_min", 0, 0, 1439),
    ("online_timeout_ms", 3000, 100, 60000),
    ("listed_action", 0, 0, 1),
    ("offline_default", 0, 0, 1),
    ("journal_near_full_pct", 90, 50, 99),
    ("new_card_online", 1, 0, 1),
)

COUNT = len(TABLE)
_NAMES = tuple(row[0] for row in TABLE)
_FORMAT = "<I%di" % COUNT  # version, then the values


def index_of(name):
    """Index of a parameter by name, or -1."""
    for i in range(COUNT):
        if _NAMES[i] == name:
            return i
    return -1


class Params:
    """The live parameter set: `values` is an int array indexed by the P_ constants.

    Given `values` (and its `version`), it works on that array: update() and
    from_bytes() change it in place, so whoever holds the array sees the change.
    The terminal keeps only the array in RAM and imports this module to change it.
    """

    def __init__(self, values=None, version=0):
        self.values = array("i", [row[1] for row in TABLE]) if values is None else values
        self.version = version

    def get(self, name):
        i = index_of(name)
        if i < 0:
            raise KeyError(name)
        return self.values[i]

    def items(self):
        for i in range(COUNT):
            yield _NAMES[i], self.values[i]

    def update(self, changes):
        """Apply a dict {name: int}: all or nothing. Returns None or an error message."""
        candidate = array("i", self.values)
        for name, value in changes.items():
            i = index_of(name)
            if i < 0:
                return "unknown parameter %r" % name
            row = TABLE[i]
            if not isinstance(value, int) or value < row[2] or value > row[3]:
                return "%s=%r out of range %d..%d" % (name, value, row[2], row[3])
            candidate[i] = value
        err = check_consistent(candidate)
        if err:
            return err
        self._set(candidate)
        self.version += 1
        return None

    def to_bytes(self):
        return struct.pack(_FORMAT, self.version, *self.values)

    def from_bytes(self, data):
        """Load a persisted set; returns None or an error (then nothing changes)."""
        if len(data) != struct.calcsize(_FORMAT):
            want = struct.calcsize(_FORMAT)
            return "params record has %d bytes, expected %d" % (len(data), want)
        fields = struct.unpack(_FORMAT, data)
        candidate = array("i", fields[1:])
        for i in range(COUNT):
            if candidate[i] < TABLE[i][2] or candidate[i] > TABLE[i][3]:
                return "stored %s out of range" % _NAMES[i]
        err = check_consistent(candidate)
        if err:
            return err
        self._set(candidate)
        self.version = fields[0]
        return None

    def _set(self, candidate):
        v = self.values
        for i in range(COUNT):
            v[i] = candidate[i]


def check_consistent(v):
    """Rules between parameters; None or a message."""
    if v[P_RANDOM_TARGET_PCT] > v[P_RANDOM_MAX_TARGET_PCT]:
        return "random_target_pct must not exceed random_max_target_pct"
    if v[P_FLOOR_LIMIT] > 0 and v[P_RANDOM_THRESHOLD] >= v[P_FLOOR_LIMIT]:
        return "random_threshold must be below floor_limit"
    if v[P_LOWER_CONSECUTIVE_OFFLINE] > v[P_UPPER_CONSECUTIVE_OFFLINE]:
        return "lower_consecutive_offline must not exceed upper_consecutive_offline"
    return None


def parse_assignments(text):
    """'a=1 b=2' or lines of 'a=1' -> ({name: int}, None) or (None, message)."""
    changes = {}
    for item in text.replace("\n", " ").split():
        eq = item.find("=")
        if eq <= 0:
            return None, "expected KEY=VALUE, got %r" % item
        name = item[:eq]
        try:
            value = int(item[eq + 1 :])
        except ValueError:
            return None, "%s: %r is not an integer" % (name, item[eq + 1 :])
        changes[name] = value
    if not changes:
        return None, "no KEY=VALUE given"
    return changes, None
