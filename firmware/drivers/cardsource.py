"""The card on the reader: its record read over FeliCa, its counters written back.

    cards = FelicaCards(nfc)             # nfc: Pn532 on a board, NfcUdp on the emulator
    if cards.read(raw48, wait_ms):       # polls until a card answers or wait_ms passes
        ...decide...
        cards.write(raw48)               # blocks 1-2: the new counters and MAC
    cards.release()                      # RF off: the next sale polls afresh

The record is 3 blocks of the read/write service 0x0009 (docs/card_profile.md).
Nothing allocates once constructed. Any NFC error ends the attempt as "no card"
(read) or "not written" (write); the sale logic turns the latter into a decline
of an offline approval, so a card pulled away mid-write keeps no approval.
"""

from drivers.felica import Felica, NfcError
from terminal.compat import const, ticks_diff, ticks_ms

SERVICE_RW = const(0x0009)
_ALL_BLOCKS = b"\x00\x01\x02"
_COUNTER_BLOCKS = b"\x01\x02"
_POLL_MS = const(100)


class FelicaCards:
    def __init__(self, nfc):
        self.nfc = nfc
        self.felica = Felica(nfc, 4)
        self._raw = None
        self._counters = None
        self.sensed_at = 0  # ticks_ms when the card answered the polling
        self.reads = 0
        self.writes = 0
        self.errors = 0

    def read(self, raw, wait_ms):
        start = ticks_ms()
        while True:
            sensf_res = self.nfc.sense_ttf(timeout_ms=_POLL_MS)
            if sensf_res is not None:
                self.sensed_at = ticks_ms()
                try:
                    self.felica.activate(sensf_res)
                    self.felica.read_without_encryption(SERVICE_RW, _ALL_BLOCKS, raw)
                    self.reads += 1
                    return True
                except NfcError:
                    self.errors += 1
            if ticks_diff(ticks_ms(), start) >= wait_ms:
                return False

    def write(self, raw):
        if self._raw is not raw:  # the tap's one buffer: the view is made once
            self._raw = raw
            self._counters = memoryview(raw)[16:48]
        try:
            self.felica.write_without_encryption(SERVICE_RW, _COUNTER_BLOCKS, self._counters)
            self.writes += 1
            return True
        except NfcError:
            self.errors += 1
            return False

    def release(self):
        try:
            self.nfc.rf_off()
        except NfcError:
            self.errors += 1
