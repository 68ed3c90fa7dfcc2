"""The card on the reader: its image read over FeliCa, its next counter slot written back.

    cards = FelicaCards(nfc)             # nfc: Pn532 on a board (NfcUdp: explicit option)
    if cards.read(image, wait_ms):       # polls until a card answers or wait_ms passes
        ...decide...
        cards.write(image, rec.slot)     # the slot's two blocks, one Write each
    cards.release()                      # RF off: the next sale polls afresh

The image is the card profile's (terminal/card.py, docs/card_profile.md): the
IDm the card answered the polling with, then blocks 0-5 read with two Read
Without Encryption commands (a FeliCa Lite-S reads at most 4 blocks per
command) through the read-only service. The polling asks for the profile's
system code with request code 1, so the card says which system answered; a
card that answers for another system (a multi-system card's system 0, a
phone) is not taken: its IDm would not be the one the MAC binds, and the
profile's blocks are not there.

Nothing allocates once constructed. An NFC error while reading ends that
attempt (the loop polls again until wait_ms); one while writing returns False,
which the sale turns into a decline of an offline approval, so a card pulled
away mid-write keeps no approval (card.py: the slot it was read from still holds).
`last_error` names what went wrong last, for the sale's answer.
"""

from drivers.felica import REQUEST_SYSTEM_CODE, Felica
from terminal.card import IDM_LEN, SERVICE_RO, SERVICE_RW, SLOT_FIRST_BLOCK, SYSTEM_CODE
from terminal.compat import const, ticks_diff, ticks_ms
from terminal.errors import NfcError

_FIRST_READ = b"\x00\x01\x02\x03"  # issuer blocks and slot A
_SECOND_READ = b"\x04\x05"  # slot B
_ONE_BLOCK = (b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05")
_POLL_MS = const(100)

# last_error values (the sale words them)
NO_ERROR = const(0)
OTHER_SYSTEM = const(1)  # a card answered, for another system code
READ_FAILED = const(2)  # the card left, or garbled, while its blocks were read
WRITE_FAILED = const(3)


class FelicaCards:
    def __init__(self, nfc, system_code=SYSTEM_CODE):
        self.nfc = nfc
        self.system_code = system_code
        self.felica = Felica(nfc, 4)
        self._raw = None
        self._first = None  # views of the image: blocks 0-3, 4-5, and one per block
        self._second = None
        self._blocks = None
        self.sensed_at = 0  # ticks_ms when the card answered the polling
        self.reads = 0
        self.writes = 0
        self.errors = 0
        self.other_system = 0  # cards that answered for another system
        self.last_error = NO_ERROR

    def _views(self, raw):
        if self._raw is not raw:  # the tap's one buffer: the views are made once
            mv = memoryview(raw)
            self._raw = raw
            self._first = mv[IDM_LEN : IDM_LEN + 64]
            self._second = mv[IDM_LEN + 64 : IDM_LEN + 96]
            self._blocks = [mv[IDM_LEN + 16 * b : IDM_LEN + 16 * b + 16] for b in range(6)]

    def read(self, raw, wait_ms):
        """Poll until a card of the profile's system is read into raw (IDm, blocks
        0-5): True; False when wait_ms passes first."""
        self._views(raw)
        felica = self.felica
        self.last_error = NO_ERROR
        start = ticks_ms()
        while True:
            try:
                sensf_res = self.nfc.sense_ttf(self.system_code, REQUEST_SYSTEM_CODE,
                                               timeout_ms=_POLL_MS)
                if sensf_res is not None:
                    self.sensed_at = ticks_ms()
                    felica.activate(sensf_res)
                    if felica.request_data != self.system_code:
                        self.other_system += 1
                        self.last_error = OTHER_SYSTEM
                    else:
                        idm = felica.idm
                        for i in range(IDM_LEN):
                            raw[i] = idm[i]
                        felica.read_without_encryption(SERVICE_RO, _FIRST_READ, self._first)
                        felica.read_without_encryption(SERVICE_RO, _SECOND_READ, self._second)
                        self.reads += 1
                        return True
            except NfcError:
                self.errors += 1
                self.last_error = READ_FAILED
            if ticks_diff(ticks_ms(), start) >= wait_ms:
                return False

    def write(self, raw, slot):
        """Write slot `slot` (0 = A, 1 = B) of raw to the card last read, one block per
        Write Without Encryption; False if any write failed."""
        self._views(raw)
        first = SLOT_FIRST_BLOCK + 2 * slot
        try:
            for b in range(first, first + 2):
                self.felica.write_without_encryption(SERVICE_RW, _ONE_BLOCK[b],
                                                     self._blocks[b])
            self.writes += 1
            return True
        except NfcError:
            self.errors += 1
            self.last_error = WRITE_FAILED
            return False

    def release(self):
        try:
            self.nfc.rf_off()
        except NfcError:
            self.errors += 1
