"""The card on the reader: its image read over FeliCa, its next counter slot written back.

    cards = FelicaCards(nfc, rates=board.NFC_FELICA_KBPS)  # nfc: Pn532 (NfcUdp: an option)
    cards.start()                        # False: the reader does not answer (retried later)
    if cards.read(image, wait_ms):       # polls until a card answers or wait_ms passes
        ...decide...
        cards.write(image, rec.slot)     # the slot's two blocks, one Write each
    cards.release()                      # RF off: the next sale polls afresh

The image is the card profile's (terminal/card.py, docs/card_profile.md): the
IDm the card answered the polling with, then blocks 0-5 read with two Read
Without Encryption commands (a FeliCa Lite-S reads at most 4 blocks per
command) through the read-only service. Each polling round polls at the
board's bit rates in order (NFC_FELICA_KBPS, (424, 212) by default): a card
that answers at 424 kbps is read and written at 424, whose frames take half
the air time of 212's; a card that does not answer there (one that speaks 212
only) is found by the 212 polling after it (docs/nfc.md). The polling asks for the profile's
system code with request code 1, so the card says which system answered; a
card that answers for another system (a multi-system card's system 0, a
phone) is not taken: its IDm would not be the one the MAC binds, and the
profile's blocks are not there.

Nothing allocates once constructed. An NFC error while sensing or reading
ends that attempt (the loop polls again until wait_ms); one while writing
returns False, which the sale turns into a decline of an offline approval, so
a card pulled away mid-write keeps no approval (card.py: the slot it was read
from still holds). `WHY[last_error]` words what went wrong last, for the
sale's answer. A reader chip that stops answering (NfcBusError), or three
errors in a row, gets `nfc.reset()`; one that does not answer at all leaves
the terminal running: `reader_ok` is False, status says so, and the next sale
(or `idle()`, every 10 s) tries to start it again.
"""

from drivers.felica import REQUEST_SYSTEM_CODE, Felica
from terminal.card import IDM_LEN, SERVICE_RO, SERVICE_RW, SLOT_FIRST_BLOCK, SYSTEM_CODE
from terminal.compat import const, ticks_add, ticks_diff, ticks_ms
from terminal.errors import NfcBusError, NfcError

_FIRST_READ = b"\x00\x01\x02\x03"  # issuer blocks and slot A
_SECOND_READ = b"\x04\x05"  # slot B
_ONE_BLOCK = (b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05")
_POLL_MS = const(100)
RATES = (424, 212)  # FeliCa bit rates polled, in order, unless the board file says otherwise

_RESET_AFTER = const(3)  # NFC errors in a row after which the reader is reset
_RETRY_MS = const(10000)  # a reader that does not answer is tried again this often

# last_error values (the sale words them: WHY)
NO_ERROR = const(0)
OTHER_SYSTEM = const(1)  # a card answered, for another system code
READ_FAILED = const(2)  # the card left, or garbled, while it was sensed or read
WRITE_FAILED = const(3)
READER_FAULT = const(4)  # the reader chip does not answer on its bus, even after a reset
BUS_FAULT = const(5)  # it stopped answering mid-tap; a reset brought it back
WHY = ("", ": a card answered for another system", ": the card left or garbled while read",
       ": the card left while written", ": card reader fault (the PN532 does not answer)",
       ": the PN532 stopped answering and was reset")


class FelicaCards:
    WHY = WHY

    def __init__(self, nfc, system_code=SYSTEM_CODE, rates=RATES):
        self.nfc = nfc
        self.system_code = system_code
        self.rates = tuple(rates)
        self.kbps = 0  # the bit rate the last card read answered at
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
        self.resets = 0  # reader resets after errors
        self.reader_ok = False  # start() succeeded (and no reset failed since)
        self.start_failures = 0
        self.last_error = NO_ERROR
        self._in_a_row = 0  # NFC errors since the last success
        self._retry_at = 0

    # -- the reader ---------------------------------------------------------------

    def start(self):
        """Set the reader up (nfc.start()). A reader that does not answer is no
        reason to stop the terminal: False, and the sale and status say so; the
        next sale, or idle() now and then, tries again."""
        try:
            self.nfc.start()
            self.reader_ok = True
            self._in_a_row = 0
            return True
        except NfcError:
            return self._down()

    def _down(self):
        self.reader_ok = False
        self.start_failures += 1
        self.last_error = READER_FAULT
        self._retry_at = ticks_add(ticks_ms(), _RETRY_MS)
        return False

    def idle(self):
        """Between host requests: try a reader that is down again, every _RETRY_MS."""
        if not self.reader_ok and ticks_diff(ticks_ms(), self._retry_at) >= 0:
            self.start()

    def _failed(self, err, why):
        # One failed NFC exchange. A chip that stopped answering on its bus, or
        # errors in a row, gets a reset (RSTPDN pulse if wired, then start again).
        self.errors += 1
        bus = isinstance(err, NfcBusError)
        self.last_error = BUS_FAULT if bus else why
        self._in_a_row += 1
        if bus or self._in_a_row >= _RESET_AFTER:
            self.resets += 1
            self._in_a_row = 0
            try:
                self.nfc.reset()
                self.reader_ok = True
            except NfcError:
                self._down()

    def status_fields(self):
        nfc = self.nfc
        return [("nfc_reader", "ok" if self.reader_ok else
                 "fault: the PN532 does not answer (tried %d times; retrying)"
                 % self.start_failures),
                ("nfc_reads", self.reads), ("nfc_writes", self.writes),
                ("nfc_errors", self.errors), ("nfc_resets", self.resets),
                ("nfc_other_system", self.other_system),
                ("nfc_resends", getattr(nfc, "resends", 0)),
                ("nfc_nacks", getattr(nfc, "nacks", 0))]

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
        if not self.reader_ok and not self.start():
            return False
        start = ticks_ms()
        while True:
            try:
                for kbps in self.rates:  # a tuple: iterating it allocates nothing
                    sensf_res = self.nfc.sense_ttf(self.system_code, REQUEST_SYSTEM_CODE, kbps,
                                                   _POLL_MS)
                    if sensf_res is not None:
                        break
                if sensf_res is not None:
                    self.kbps = kbps
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
                        self._in_a_row = 0
                        return True
            except NfcError as e:
                self._failed(e, READ_FAILED)
                if not self.reader_ok:
                    return False
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
            self._in_a_row = 0
            return True
        except NfcError as e:
            self._failed(e, WRITE_FAILED)
            return False

    def release(self):
        """RF off: the tap is over, whatever happened (a reset leaves it off too)."""
        if not self.reader_ok:
            return
        try:
            self.nfc.rf_off()
        except NfcError as e:
            self._failed(e, self.last_error)
