"""NXP PN532 NFC controller over I2C, SPI or UART (HSU), with FeliCa.

    from machine import SoftI2C, Pin
    from drivers.pn532_i2c import I2CLink       # or pn532_spi.SPILink, pn532_uart.UARTLink
    nfc = Pn532(I2CLink(SoftI2C(scl=Pin(5), sda=Pin(4), freq=400_000, timeout=100_000)))
    nfc.start()                                   # wake, GetFirmwareVersion, SAMConfiguration
    sensf_res = nfc.sense_ttf(0xFFFF)             # InListPassiveTarget 212F; None: no card
    rsp = nfc.exchange(felica_frame, 30)          # InCommunicateThru; memoryview, LEN first
    uid = nfc.sense_tta()                         # ISO14443A at 106 kbps (bench cards)
    nfc.rf_off()

The links are tiny, one module each so a board loads only its own:
`pn532_i2c.I2CLink(i2c)`, `pn532_spi.SPILink(spi, cs)` and
`pn532_uart.UARTLink(uart)` wrap a machine bus (or a test's fake) with wake(),
flush(), write(frame), ready() and read(buf, timeout_ms). Pn532 frames commands in one preallocated
buffer (preamble, 00 FF, LEN, LCS, TFI D4, command, parameters, DCS,
postamble), waits for the ACK, then for the response frame, and checks both
checksums. Memoryviews of exact length are made once per length and reused
(slicing a memoryview allocates on MicroPython, and I2C/SPI calls take a
whole buffer), so a warm command allocates nothing.

Recovery: a command without ACK is resent after a wake-up (`retries` times);
a response with a bad checksum is asked again with a NACK (the PN532 resends
it); a response that never comes is cancelled with an ACK. If the chip stays
silent, NfcBusError: call reset(), which pulses RSTPDN when a reset pin was
given and runs start() again. Bus quirks (docs/nfc.md): the RP2's hardware
I2C does not tolerate the PN532's clock stretching (use SoftI2C with a long
timeout); the ESP32's I2C timeout must cover the stretching too; on UART
stale bytes after a timeout are flushed before every command; the PN532
speaks SPI LSB first, which the RP2 cannot, so SPILink reverses bits itself
unless told the bus already sends LSB first.
"""

from terminal.compat import const, ticks_diff, ticks_ms
from terminal.errors import NfcBusError, NfcProtocolError, NfcTimeout

# Host command codes (PN532 user manual UM0701-02, section 7).
_GET_FIRMWARE_VERSION = const(0x02)
_SAM_CONFIGURATION = const(0x14)
_RF_CONFIGURATION = const(0x32)
_IN_COMMUNICATE_THRU = const(0x42)
_IN_LIST_PASSIVE_TARGET = const(0x4A)
_IN_RELEASE = const(0x52)

_HOST_TO_PN = const(0xD4)
_PN_TO_HOST = const(0xD5)
_ERROR_TFI = const(0x7F)
_P = const(7)  # parameters start: 00 00 FF LEN LCS D4 CMD
_OVERHEAD = const(11)  # I2C status, preamble, 00 FF, LEN, LCS, D5, CMD+1, status, DCS, postamble
_EXACT = const(10)  # a response of n data bytes, read exactly: n + I2C status .. postamble

# RFConfiguration items.
_RF_FIELD = const(0x01)
_RF_TIMINGS = const(0x02)
_RF_MAX_RETRIES = const(0x05)

# Frame kinds found by _parse.
_NONE = const(0)
_ACK = const(1)
_NACK = const(2)
_DATA = const(3)
_ERROR = const(4)
_BAD = const(5)
_SHORT = const(6)  # a frame longer than the bytes read for it

_ACK_TIMEOUT_MS = const(30)  # the PN532 ACKs within about 1 ms; allow for a slow bus
_SENSE_TIMEOUT_MS = const(150)
_CMD_TIMEOUT_MS = const(100)
_SLACK_MS = const(50)  # host-side wait beyond the chip's own RF timeout
_VIEW_CACHE = const(24)  # lengths kept per buffer before the cache starts over

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"


def pause_ms(ms):
    # Busy wait on the wrap-safe tick counter: the compat shim has no sleep_ms.
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < ms:
        pass


def build_frame(buf, cmd, n_params, total=-1):
    """Frame command `cmd` whose parameters already sit at buf[7:7 + n_params];
    returns the frame length (the frame starts at buf[0] with the preamble).
    total: the parameters' byte sum when the caller has it (summed here if not)."""
    ln = n_params + 2
    buf[0] = 0x00
    buf[1] = 0x00
    buf[2] = 0xFF
    buf[3] = ln
    buf[4] = (0x100 - ln) & 0xFF
    buf[5] = _HOST_TO_PN
    buf[6] = cmd
    if total < 0:
        total = 0
        for i in range(_P, _P + n_params):
            total += buf[i]
    end = _P + n_params
    buf[end] = (0x100 - _HOST_TO_PN - cmd - total) & 0xFF
    buf[end + 1] = 0x00
    return end + 2


def link_reads_exact(link):
    """I2C and SPI reads take as many bytes as asked: the driver asks for the frame
    it expects. A UART stream stops at each frame's end by itself."""
    return getattr(link, "reads_exact", False)


class Pn532:
    """The PN532 as an NFC reader: sense FeliCa and ISO14443A targets, exchange frames.

    max_frame: longest FeliCa frame either way (LEN included; 96 covers a
    4-block read or write). retries: resends of a command the chip did not
    ACK, and NACKs for a response with a bad checksum. reset: optional Pin
    wired to RSTPDN. ack_ms: how long to wait for the ACK; slack_ms: extra
    host-side wait for a response (both larger on the emulated board, whose
    chip runs in a PC process).
    """

    def __init__(self, link, max_frame=96, retries=2, reset=None, ack_ms=_ACK_TIMEOUT_MS,
                 slack_ms=0):
        if not 16 <= max_frame <= 252:
            raise ValueError("max_frame must be 16..252")
        self.link = link
        self.max_frame = max_frame
        self.retries = retries
        self.reset_pin = reset
        # Host-side waits: the chip's ACK, and beyond the chip's own response time. A
        # board keeps the defaults; the emulated board's chip is a PC process whose
        # wall-clock time is not the chip's (docs/boards.md).
        self.ack_ms = ack_ms
        self.slack_ms = slack_ms
        self.resends = 0  # commands sent again after no ACK (bus health, for the status page)
        self.nacks = 0  # responses asked again after a checksum error
        self._tx = bytearray(_P + max_frame + 2)
        self._rx = bytearray(max_frame + _OVERHEAD)
        self._tx_mv = memoryview(self._tx)
        self._rx_mv = memoryview(self._rx)
        self._ack_mv = self._rx_mv[:7]  # I2C status byte + ACK
        self._tx_views = {}
        self._rx_views = {}
        self._sensf = bytearray(19)
        self._sensf_views = {}
        self._uid = bytearray(10)
        self._uid_views = {}
        self._ack = bytearray(ACK)  # mutable: SPILink reverses bits in place
        self._nack = bytearray(NACK)
        self._at = 0  # response data (after D5, CMD+1) starts at _rx[_at]
        self._len = 0
        self._timeout_index = 0  # InCommunicateThru timeout last configured (0 = unknown)
        self._field = False  # RF field switched on by us since start() / rf_off()

    # -- chip set-up ----------------------------------------------------------------

    def start(self):
        """Wake the chip and set it up as a reader; returns (ic, ver, rev, support)."""
        self.link.wake()
        version = self.get_firmware_version()
        if version[0] != 0x32:
            raise NfcProtocolError("not a PN532 (IC 0x%02X)" % version[0])
        self.sam_configuration()
        # Finite retries: with the default 0xFF, InListPassiveTarget waits for a card forever.
        self._rf_configuration(_RF_MAX_RETRIES, 0xFF, 0x01, 0x01, 3)
        self._timeout_index = 0
        self._field = False
        return version

    def reset(self):
        """Recover a chip that stopped answering: pulse RSTPDN (if wired), start again."""
        pin = self.reset_pin
        if pin is not None:
            pin.value(0)
            pause_ms(20)
            pin.value(1)
            pause_ms(20)
        return self.start()

    def get_firmware_version(self):
        """GetFirmwareVersion -> (IC 0x32, version, revision, supported protocols)."""
        n = self._command(_GET_FIRMWARE_VERSION, 0, _CMD_TIMEOUT_MS, 4)
        if n != 4:
            raise NfcProtocolError("bad GetFirmwareVersion response")
        rx = self._rx
        a = self._at
        return rx[a], rx[a + 1], rx[a + 2], rx[a + 3]

    def sam_configuration(self, mode=1, timeout=0x14, irq=1):
        """SAMConfiguration: mode 1 = normal (no SAM); the call that makes the chip a reader."""
        tx = self._tx
        tx[_P] = mode
        tx[_P + 1] = timeout
        tx[_P + 2] = irq
        self._command(_SAM_CONFIGURATION, 3, _CMD_TIMEOUT_MS, 0)

    def rf_off(self):
        """Switch the RF field off: the card resets, the next sense starts a new tap."""
        self._rf_configuration(_RF_FIELD, 0x00, 0, 0, 1)
        self._field = False

    def release(self):
        """InRelease all targets (the field stays on)."""
        self._tx[_P] = 0
        self._command(_IN_RELEASE, 1, _CMD_TIMEOUT_MS, 1)

    # -- reader -------------------------------------------------------------------------

    def sense_ttf(self, system_code=0xFFFF, request_code=1, brty=212,
                  timeout_ms=_SENSE_TIMEOUT_MS):
        """Poll for a FeliCa card at 212 or 424 kbps; returns its SENSF_RES
        (01 | IDm | PMm [| request data], a memoryview valid until the next sense)
        or None when no card answers."""
        if not self._field:
            # Some FeliCa cards need a few ms of field before they answer a
            # polling (nfcpy's pn53x driver waits 5 ms the same way).
            self._rf_configuration(_RF_FIELD, 0x01, 0, 0, 1)
            self._field = True
            pause_ms(5)
        tx = self._tx
        tx[_P] = 1  # MaxTg
        tx[_P + 1] = 2 if brty == 424 else 1
        tx[_P + 2] = 0x00  # Polling
        tx[_P + 3] = system_code >> 8
        tx[_P + 4] = system_code & 0xFF
        tx[_P + 5] = request_code
        tx[_P + 6] = 0  # one time slot
        # NbTg, Tg, POL_RES: its length, 01, IDm, PMm [, request data]
        n = self._command(_IN_LIST_PASSIVE_TARGET, 7, timeout_ms, 22 if request_code else 20)
        rx = self._rx
        a = self._at
        if n < 1 or rx[a] == 0:
            return None
        # NbTg, Tg, POL_RES length (itself included), 01, IDm, PMm [, RD]
        ln = rx[a + 2] if n > 2 else 0
        if ln < 18 or ln > 20 or n < 2 + ln or rx[a + 3] != 0x01:
            raise NfcProtocolError("bad FeliCa polling response")
        out = self._sensf
        for i in range(ln - 1):
            out[i] = rx[a + 3 + i]
        return _view(self._sensf_views, out, 0, ln - 1)

    def sense_tta(self, timeout_ms=_SENSE_TIMEOUT_MS):
        """Look for an ISO14443A card at 106 kbps; returns its UID (4, 7 or 10 bytes,
        a memoryview valid until the next sense) or None."""
        tx = self._tx
        tx[_P] = 1
        tx[_P + 1] = 0x00  # 106 kbps type A
        n = self._command(_IN_LIST_PASSIVE_TARGET, 2, timeout_ms)
        rx = self._rx
        a = self._at
        if n < 1 or rx[a] == 0:
            return None
        # NbTg, Tg, SENS_RES (2), SEL_RES, NFCID1 length, NFCID1 [, ATS]
        ln = rx[a + 5] if n > 5 else 0
        if (ln != 4 and ln != 7 and ln != 10) or n < 6 + ln:
            raise NfcProtocolError("bad ISO14443A target data")
        out = self._uid
        for i in range(ln):
            out[i] = rx[a + 6 + i]
        return _view(self._uid_views, out, 0, ln)

    def exchange(self, frame, timeout_ms, rsp_len=0):
        """Send a FeliCa frame (frame[0] = its length) to the card with
        InCommunicateThru; returns the card's response frame (LEN first), a
        memoryview valid until the next command. timeout_ms: the card's response
        time (drivers.felica works it out from PMm); rsp_len: the response frame's
        length if known (a bus then reads that much; a longer one is read again)."""
        n = frame[0]
        if n < 2 or n > self.max_frame:
            raise ValueError("FeliCa frame length %d" % n)
        self._set_rf_timeout(timeout_ms)
        tx = self._tx
        total = 0  # summed while copied: build_frame need not go over it again
        for i in range(n):
            b = frame[i]
            tx[_P + i] = b
            total += b
        k = self._command(_IN_COMMUNICATE_THRU, n, timeout_ms + _SLACK_MS,
                          1 + rsp_len if rsp_len > 0 else -1, total)
        rx = self._rx
        a = self._at
        if k < 1:
            raise NfcProtocolError("empty InCommunicateThru response")
        status = rx[a] & 0x3F
        if status == 0x01:
            raise NfcTimeout("card did not answer")
        if status:
            raise NfcProtocolError("PN532 RF error 0x%02X" % status)
        if k < 2 or rx[a + 1] != k - 1:
            raise NfcProtocolError("FeliCa response length mismatch")
        return _view(self._rx_views, self._rx_mv, a + 1, k - 1)

    # -- framing ------------------------------------------------------------------------

    def _rf_configuration(self, item, a, b, c, n):
        tx = self._tx
        tx[_P] = item
        tx[_P + 1] = a
        tx[_P + 2] = b
        tx[_P + 3] = c
        self._command(_RF_CONFIGURATION, 1 + n, _CMD_TIMEOUT_MS, 0)

    def _set_rf_timeout(self, timeout_ms):
        # InCommunicateThru waits 100 us * 2**(index - 1) for the card (index 1..16);
        # the smallest index that covers timeout_ms. It only rises until start(): a
        # tap's reads then run under its writes' timeout (a card that is gone costs
        # 12.8 ms instead of 3.2 on a Lite-S) and a tap sends no RFConfiguration for it.
        us = timeout_ms * 1000
        index = 1
        while index < 16 and (100 << (index - 1)) < us:
            index += 1
        if index > self._timeout_index:
            # RFU, ATR_RES timeout (0x0B = 102.4 ms, the chip's default), retry timeout
            self._rf_configuration(_RF_TIMINGS, 0x00, 0x0B, index, 3)
            self._timeout_index = index

    def _command(self, cmd, n_params, timeout_ms, rsp_len=-1, total=-1):
        """Send command `cmd` (parameters at _tx[7:]); returns the number of response
        data bytes, which start at _rx[_at]. rsp_len: the response data bytes the
        caller expects (after D5, CMD+1), so that I2C and SPI read that frame and no
        more (UM0701-02 6.2.4: the host reads as many bytes as it wants after the
        status byte); -1: unknown, read the whole buffer. total: the parameters' byte
        sum, if the caller has it."""
        frame = _view(self._tx_views, self._tx_mv, 0,
                      build_frame(self._tx, cmd, n_params, total))
        rx = self._rx_mv
        if 0 <= rsp_len <= len(self._rx) - _EXACT and link_reads_exact(self.link):
            rx = _view(self._rx_views, self._rx_mv, 0, _EXACT + rsp_len)
        link = self.link
        ack_ms = self.ack_ms
        for attempt in range(self.retries + 1):
            if attempt:
                self.resends += 1
                link.wake()
            try:
                link.flush()
                link.write(frame)
                kind = self._receive(self._ack_mv, ack_ms)
            except OSError:  # NACKed address, clock-stretch timeout: wake and resend
                continue
            if kind == _ACK:
                try:
                    return self._response(cmd, timeout_ms + self.slack_ms, rx)
                except OSError:
                    break
        raise NfcBusError("PN532 does not answer on its bus")

    def _response(self, cmd, timeout_ms, view):
        link = self.link
        asked = 0
        while True:
            try:
                kind = self._receive(view, timeout_ms)
            except OSError:
                kind = _BAD
            if kind == _DATA:
                rx = self._rx
                a = self._at
                if rx[a] != _PN_TO_HOST or rx[a + 1] != cmd + 1:
                    raise NfcProtocolError("response to another command")
                self._at = a + 2
                return self._len - 2
            if kind == _NONE:
                link.write(self._ack)  # cancel the command, or its answer lands in the next one
                raise NfcTimeout("PN532 gave no response")
            if kind == _ERROR:
                raise NfcProtocolError("PN532 error frame: command syntax")
            if kind == _ACK:
                continue  # a repeated ACK (stream links); the response follows
            if asked >= self.retries:
                raise NfcProtocolError("PN532 response checksum")
            asked += 1
            if kind == _SHORT:
                view = self._rx_mv  # longer than expected: read all of it this time
            else:
                self.nacks += 1
            link.write(self._nack)  # the chip sends its last response again

    def _receive(self, view, timeout_ms):
        # view: the ACK-sized, the expected or the whole head of _rx; parsing reads _rx
        n = self.link.read(view, timeout_ms)
        if not n:
            return _NONE
        return self._parse(n, len(view) < len(self._rx))

    def _parse(self, n, partial=False):
        buf = self._rx
        s = buf.find(b"\x00\xff", 0, n)
        if s < 0 or s + 4 > n:
            return _BAD
        ln = buf[s + 2]
        lcs = buf[s + 3]
        if ln == 0 and lcs == 0xFF:
            return _ACK
        if ln == 0xFF and lcs == 0:
            return _NACK
        if (ln + lcs) & 0xFF or ln < 1:
            return _BAD
        if s + 5 + ln > n:
            # a sound header, a frame longer than was read: if the read was cut short
            # on purpose (an expected length), read the whole buffer next time
            return _SHORT if partial and s + 5 + ln <= len(buf) else _BAD
        # TFI .. DCS sum to 0 mod 256: summed in C over a view made once per length
        if sum(_view(self._rx_views, self._rx_mv, s + 4, ln + 1)) & 0xFF:
            return _BAD
        if buf[s + 4] == _ERROR_TFI:
            return _ERROR
        if ln < 2:
            return _BAD
        self._at = s + 4
        self._len = ln
        return _DATA


def _view(cache, buf, at, n):
    """memoryview(buf)[at:at + n], made once per (at, n) and reused."""
    key = (at << 9) | n
    v = cache.get(key)
    if v is None:
        if len(cache) >= _VIEW_CACHE:
            cache.clear()
        v = memoryview(buf)[at : at + n]
        cache[key] = v
    return v
