"""Enumeration guard: many distinct unknown cards in a short time -> online-only.

    g = EnumerationGuard()
    g.note_unknown(now, limit, window_min, lockout_min)  # a card the counter table did not know
    g.online_only(now)                                   # True during the lock-out
    g.alert, g.alerts                                    # status: raised flag, times raised

Card testing (bots trying many card numbers, the au PAY and gift-card cases in
docs) shows up at a terminal as a burst of cards it has never seen. "Unknown"
means not in the terminal's counter table (velocity.VelocityTable), which holds
every card seen recently, so each card counts once however often it is tapped.
Counts sit in one bucket per minute in a fixed ring of 1440 u16 buckets (the
longest window the parameters allow), so no list grows with traffic. When more
than `limit` unknown cards arrived in the last `window_min` minutes (this
minute included) the terminal goes online-only for `lockout_min` minutes and
the alert flag is raised until the host clears it.
"""

from terminal.compat import const

_RING = const(1440)
_HDR = const(16)
_MAGIC = const(0x47)  # "G"


class EnumerationGuard:
    def __init__(self):
        self._b = bytearray(_HDR + 2 * _RING)
        self._minute = -1  # newest minute counted
        self.until = 0  # online-only while terminal time < until
        self.alert = False
        self.alerts = 0

    def online_only(self, now):
        return now < self.until

    def clear_alert(self):
        self.alert = False

    def _advance(self, m):
        b = self._b
        last = self._minute
        if last < 0 or m - last >= _RING:
            for i in range(_HDR, _HDR + 2 * _RING):
                b[i] = 0
        else:
            for k in range(last + 1, m + 1):
                o = _HDR + 2 * (k % _RING)
                b[o] = 0
                b[o + 1] = 0
        self._minute = m

    def note_unknown(self, now, limit, window_min, lockout_min):
        """Count one unknown card; True if this raised (or renewed) the lock-out."""
        m = now // 60
        if m > self._minute:
            self._advance(m)
        else:
            m = self._minute  # clock went back: count in the newest minute kept
        b = self._b
        o = _HDR + 2 * (m % _RING)
        v = b[o] | (b[o + 1] << 8)
        if v < 0xFFFF:
            v += 1
            b[o] = v & 0xFF
            b[o + 1] = v >> 8
        if window_min > _RING:
            window_min = _RING
        total = 0
        for k in range(m - window_min + 1, m + 1):
            o = _HDR + 2 * (k % _RING)
            total += b[o] | (b[o + 1] << 8)
            if total > limit:
                if now >= self.until and self.alerts < 0x3FFFFFFF:
                    self.alerts += 1
                self.until = now + lockout_min * 60
                self.alert = True
                return True
        return False

    def to_bytes(self):
        b = self._b
        b[0] = _MAGIC
        b[1] = 1 if self.alert else 0
        m = self._minute if self._minute >= 0 else 0
        for i in range(4):
            b[2 + i] = (m >> (8 * i)) & 0xFF
            b[6 + i] = (self.until >> (8 * i)) & 0xFF
            b[10 + i] = (self.alerts >> (8 * i)) & 0xFF
        b[14] = 1 if self._minute >= 0 else 0
        return bytes(b)

    def load_from(self, data):
        """Restore to_bytes() output; None or a message (then nothing changes)."""
        if len(data) != len(self._b) or data[0] != _MAGIC:
            return "not an enumeration guard record"
        b = self._b
        for i in range(len(b)):
            b[i] = data[i]
        self.alert = b[1] == 1
        m = b[2] | (b[3] << 8) | (b[4] << 16) | (b[5] << 24)
        self._minute = m if b[14] else -1
        self.until = b[6] | (b[7] << 8) | (b[8] << 16) | (b[9] << 24)
        self.alerts = b[10] | (b[11] << 8) | (b[12] << 16) | (b[13] << 24)
        return None
