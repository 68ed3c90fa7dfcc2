"""Wall clock set by the host, kept by the board's tick counter.

    clock = Clock()
    clock.set(seconds)        # seconds since 2020-01-01T00:00:00Z (EPOCH_OFFSET)
    clock.now()               # same scale, or -1 while unset

Seconds are counted from 2020, not 1970, so they stay small ints (< 2**30,
no heap allocation on a 32-bit board) until 2054. The tick counter wraps
(ticks_ms wraps every 2**30 ms on the board), so each call moves the anchor
forward; the main loop calls now() far more often than every 6 days.
"""

from terminal.compat import const, ticks_add, ticks_diff, ticks_ms

EPOCH_OFFSET = const(1577836800)  # 2020-01-01T00:00:00Z in Unix seconds
_SECONDS_PER_DAY = const(86400)


class Clock:
    def __init__(self, ticks=ticks_ms):
        self._ticks = ticks
        self._anchor_ticks = ticks()
        self._anchor_s = -1
        self._boot_ticks = self._anchor_ticks
        self._uptime_s = 0

    def set(self, seconds):
        self._anchor_ticks = self._ticks()
        self._anchor_s = seconds

    def is_set(self):
        return self._anchor_s >= 0

    def now(self):
        t = self._ticks()
        d = ticks_diff(t, self._anchor_ticks)
        if d >= 1000:
            whole = d // 1000
            self._anchor_ticks = ticks_add(self._anchor_ticks, whole * 1000)
            self._uptime_s += whole
            if self._anchor_s >= 0:
                self._anchor_s += whole
        return self._anchor_s

    def uptime(self):
        self.now()
        return self._uptime_s


def iso(seconds):
    """'2026-11-21T05:00:00Z' for seconds since 2020 (civil-from-days, no time module)."""
    if seconds < 0:
        return "unset"
    days, rem = divmod(seconds, _SECONDS_PER_DAY)
    y, m, d = civil_from_days(days + 18262)  # 18262 days from 1970 to 2020
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, rem // 3600, rem // 60 % 60, rem % 60)


def civil_from_days(z):
    """Days since 1970-01-01 -> (year, month, day), proleptic Gregorian."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d
