"""An emulated PN532 on the host side of the emulated board's UART.

    chip = Pn532Emulator(rf="udp:127.0.0.1:50001", bus=bus_model(board_values("pico_pn532")))
    path = chip.start()           # a pty: the firmware opens it as a board opens its UART
    ...                           # firmware: Pn532(UARTLink(PtyUart(path))) on every tap
    chip.inject("garble", command=0x4A)          # the next polling answer arrives garbled
    chip.taps[-1].after_sense("worst")           # modelled µs from card sensed to RF off
    chip.stop()

The chip speaks the PN532's host protocol over HSU (UM0701-02 section 6.2):
normal and extended information frames, ACK, NACK and the syntax-error frame;
a frame with a wrong LCS or DCS is ignored (no ACK), so the host resends; an
ACK from the host aborts the command in progress; a NACK has the last
response sent again. It starts asleep (HSU after power-up) and wakes on the
0x55 wake-up sequence. It executes the commands of UM0701-02 section 7 that
the firmware's driver sends, and a few more (`COMMANDS`); any other command
code gets the syntax-error frame, as do wrong parameter counts and values
(a real chip executes the commands this one lacks: docs/nfc.md).

Its RF side is nfcpy's own `udp` driver as the initiator (nfc/clf/udp.py):
InListPassiveTarget is its sense_ttf / sense_tta, InCommunicateThru its
send_cmd_recv_rsp, RF off its mute (RFOFF). The card is whatever listens on
that UDP port: `host_tools.cardemu`, or nfcpy's own emulation.

Time is modelled, not measured (docs/nfc.md, "Time model"): every command is
charged host-bus time for the bytes the board's own link moves (I2C, SPI or
HSU at the board file's clock), RF time at 212 or 424 kbps from the frame
lengths and the card's response-time bytes (PMm), and the chip's own
processing time. The card's timeouts are judged on that modelled time: a card
whose PMm says it answers later than the InCommunicateThru timeout set with
RFConfiguration gets status 01 (timeout), however fast the PC process behind
it answered; a PC process that is slow in wall-clock time is waited for.

Faults (`inject`): "silent" (no ACK, no answer: a hung chip; count -1 = for
ever, a chip that never answers), "no_response" (ACK, then nothing),
"nack" (a NACK frame instead of the ACK), "garble" (the response with a
broken DCS), "remove_after_writes" (the card leaves the field after `count`
more FeliCa writes, until the field goes off).
"""

from __future__ import annotations

import collections
import math
import os
import pty
import select
import threading
import time
import tty
from dataclasses import dataclass, field

# -- frames (UM0701-02 section 6.2.1) ------------------------------------------------

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"  # application-level syntax error
HOST_TO_PN = 0xD4
PN_TO_HOST = 0xD5

# Command codes (UM0701-02 section 7).
DIAGNOSE = 0x00
GET_FIRMWARE_VERSION = 0x02
GET_GENERAL_STATUS = 0x04
SAM_CONFIGURATION = 0x14
POWER_DOWN = 0x16
RF_CONFIGURATION = 0x32
IN_COMMUNICATE_THRU = 0x42
IN_LIST_PASSIVE_TARGET = 0x4A
IN_RELEASE = 0x52
COMMANDS = {DIAGNOSE: "Diagnose", GET_FIRMWARE_VERSION: "GetFirmwareVersion",
            GET_GENERAL_STATUS: "GetGeneralStatus", SAM_CONFIGURATION: "SAMConfiguration",
            POWER_DOWN: "PowerDown", RF_CONFIGURATION: "RFConfiguration",
            IN_COMMUNICATE_THRU: "InCommunicateThru",
            IN_LIST_PASSIVE_TARGET: "InListPassiveTarget", IN_RELEASE: "InRelease"}

# Status byte error codes (UM0701-02 section 7.1, table "Error code list").
ST_OK = 0x00
ST_TIMEOUT = 0x01  # the target has not answered
ST_NOT_ACCEPTABLE = 0x27  # command not acceptable in the current context
FIRMWARE = b"\x32\x01\x06\x07"  # IC PN532, version 1.6, ISO14443A/B + FeliCa (UM0701-02 7.2.2)
# RFConfiguration items and their parameter counts (UM0701-02 section 7.3.1).
_RF_ITEM_LEN = {0x01: 1, 0x02: 3, 0x04: 1, 0x05: 3, 0x0A: 11, 0x0B: 8, 0x0C: 3, 0x0D: 9}


def frame(data: bytes) -> bytes:
    """An information frame carrying data (TFI first): normal, or extended above 255."""
    n = len(data)
    dcs = (-sum(data)) & 0xFF
    if n <= 255:
        return bytes([0, 0, 0xFF, n, (-n) & 0xFF]) + data + bytes([dcs, 0])
    hi, lo = n >> 8, n & 0xFF
    return bytes([0, 0, 0xFF, 0xFF, 0xFF, hi, lo, (-(hi + lo)) & 0xFF]) + data + bytes([dcs, 0])


class FrameParser:
    """Bytes from the host in, events out: ("wake",), ("ack",), ("nack",),
    ("frame", data) with TFI first, ("bad", why) for a frame the chip ignores."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple]:
        self.buf += data
        events: list[tuple] = []
        buf = self.buf
        while True:
            if b"\x55" in buf[:buf.find(b"\x00\xff") if b"\x00\xff" in buf else len(buf)]:
                events.append(("wake",))
                del buf[:buf.index(b"\x55") + 1]
                continue
            s = buf.find(b"\x00\xff")
            if s < 0:
                # keep a trailing 00 (the start of a start code); drop the rest
                del buf[:max(0, len(buf) - 1)]
                return events
            if len(buf) < s + 4:
                return events
            ln, lcs = buf[s + 2], buf[s + 3]
            if ln == 0x00 and lcs == 0xFF:
                events.append(("ack",))
                del buf[:s + 4]
                continue
            if ln == 0xFF and lcs == 0x00:
                events.append(("nack",))
                del buf[:s + 4]
                continue
            if ln == 0xFF and lcs == 0xFF:  # extended frame: LENM LENL LCS
                if len(buf) < s + 7:
                    return events
                hi, lo, xl = buf[s + 4], buf[s + 5], buf[s + 6]
                if (hi + lo + xl) & 0xFF:
                    events.append(("bad", "extended frame length checksum"))
                    del buf[:s + 2]
                    continue
                n, at = (hi << 8) | lo, s + 7
            elif (ln + lcs) & 0xFF:
                events.append(("bad", "length checksum"))
                del buf[:s + 2]
                continue
            else:
                n, at = ln, s + 4
            if len(buf) < at + n + 1:
                return events
            data = bytes(buf[at:at + n])
            if (sum(data) + buf[at + n]) & 0xFF:
                events.append(("bad", "data checksum"))
            else:
                events.append(("frame", data))
            del buf[:at + n + 1]


def _garbled(response: bytes) -> bytes:
    bad = bytearray(response)
    bad[-2] ^= 0x5A  # the DCS: the host sees a checksum error
    return bytes(bad)


# -- time model ------------------------------------------------------------------------

# The PN532's own processing, per command: UM0701-02 and the PN532 data sheet give
# no figure. Assumed: the ACK within 0.5 ms of the frame (1 ms worst), and 1 ms
# (2 ms worst) of firmware work per command besides its RF exchange. The I2C clock
# stretch the chip holds while it prepares an answer, 440 us, is a measurement
# (esphome/issues#4340), charged to every read in the worst case.
CHIP_ACK_US = {"typical": 500, "worst": 1000}
CHIP_CMD_US = {"typical": 1000, "worst": 2000}
I2C_STRETCH_US = {"typical": 0, "worst": 440}


@dataclass
class BusModel:
    """The host bus of the board file: what each command costs on it.

    i2c: every byte is 9 clocks (8 bits + ACK), a transaction adds START, the
    address byte and STOP (UM10204, the I2C-bus specification); the PN532 sends
    its status byte first on every read (UM0701-02 section 6.2.4). spi: 8 clocks
    a byte, one DW/SR/DR byte per transaction. uart (HSU): 10 bits a byte (8N1).
    """

    kind: str  # "i2c", "spi" or "uart"
    hz: int  # I2C clock, SPI clock, or UART baud rate

    def byte_us(self) -> float:
        bits = {"i2c": 9, "spi": 8, "uart": 10}[self.kind]
        return bits * 1e6 / self.hz

    def command(self, tx: int, rx: int, busy_us: float, case: str) -> tuple[float, int, int]:
        """Bus time on the critical path (µs), transactions and bytes for a command
        of a tx-byte frame answered by an rx-byte frame (0: no response), the chip
        busy busy_us between its ACK and its response (RF time included).
        Status polls are counted once each wait (the ready line is polled through
        the RF time on a real bus, but those polls cost no time on the path)."""
        b = self.byte_us()
        ack = len(ACK)
        if self.kind == "uart":
            t = (tx + ack + rx) * b
            return t, 3 if rx else 2, tx + ack + rx
        if self.kind == "i2c":
            start_stop = 2 * 1e6 / self.hz
            trans = lambda n: start_stop + (n + 1) * b  # noqa: E731  address byte + n bytes
            stretch = I2C_STRETCH_US[case]
            poll = trans(1)
            t = trans(tx) + poll + trans(1 + ack) + stretch
            n_tr, n_by = 3, (1 + tx) + 2 + (1 + 1 + ack)
            if rx:
                t += poll + trans(1 + rx) + stretch
                n_tr += 2
                n_by += 2 + (1 + 1 + rx)
            return t, n_tr, n_by
        # spi: DW + frame, SR + status, DR + ack (as many bytes as the ACK buffer: 7)
        t = (1 + tx) * b + 2 * b + (1 + 1 + ack) * b
        n_tr, n_by = 3, (1 + tx) + 2 + (2 + ack)
        if rx:
            t += 2 * b + (1 + rx) * b
            n_tr += 2
            n_by += 2 + (1 + rx)
        return t, n_tr, n_by


def bus_model(board: dict) -> BusModel:
    """The NFC bus of a board file (boards/*.py values)."""
    kind = str(board.get("NFC_BUS", "uart"))
    if kind == "i2c":
        return BusModel("i2c", int(board.get("NFC_I2C_FREQ", 400_000)))
    if kind == "spi":
        return BusModel("spi", int(board.get("NFC_SPI_BAUD", 1_000_000)))
    return BusModel("uart", int(board.get("NFC_UART_BAUD", 115_200)))


def rf_frame_us(n: int, kbps: int = 212) -> float:
    """A FeliCa frame of n bytes (LEN included) on the air: preamble (6 bytes of
    zeros), sync code (2), the frame, CRC (2), 8 bits a byte at 211.875 or 423.75
    kbit/s (JIS X 6319-4; NFC Forum Digital Protocol, NFC-F)."""
    return (n + 10) * 8 * 1000.0 / (211.875 if kbps == 212 else 423.75)


POLLING_SLOT0_US = 2417.0  # a card answers a Polling in time slot 0 from 2.417 ms on
POLLING_SLOT_US = 1208.0  # each further time slot (JIS X 6319-4; felica.polling_time_ms)


def card_response_us(frame: bytes, pmm: bytes) -> float:
    """The card's response time for a FeliCa command, from the PMm it announced:
    T = 0.3021 ms x ((B + 1) n + A + 1) x 4^E (FeliCa card user's manual; nfcpy
    tt3.py): PMm[5] for Read, PMm[6] for Write Without Encryption, PMm[7] for
    other commands with n = 0. The maximum: no typical figure is published."""
    code = frame[1] if len(frame) > 1 else 0
    if code == 0x06:
        byte, n = pmm[5], frame[13] if len(frame) > 13 else 1
    elif code == 0x08:
        byte, n = pmm[6], frame[13] if len(frame) > 13 else 1
    elif code == 0x00:
        return POLLING_SLOT0_US + POLLING_SLOT_US * (frame[5] if len(frame) > 5 else 0)
    else:
        byte, n = pmm[7], 0
    a, b, e = byte & 7, (byte >> 3) & 7, byte >> 6
    return 302.1 * ((b + 1) * n + a + 1) * (4 ** e)


def timeout_us(index: int) -> float:
    """RFConfiguration item 2's timeout index: 100 µs x 2^(index - 1); 0 = none."""
    return math.inf if index == 0 else 100.0 * (1 << (index - 1))


@dataclass
class CommandTime:
    cmd: int
    tx: int  # frame bytes host -> chip
    rx: int  # response frame bytes (0: none)
    rf_us: float
    typical_us: float
    worst_us: float
    transactions: int
    bus_bytes: int
    status: int = 0


@dataclass
class TapTime:
    """One tap as the chip saw it: from the polling that found the card to RF off."""

    commands: list[CommandTime] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    complete: bool = False  # ended by RF off

    def after_sense(self, case: str = "typical") -> float:
        """Modelled µs from the host having the polling answer to the RF field off."""
        return sum(getattr(c, case + "_us") for c in self.commands[1:])

    def to_result(self, case: str = "typical") -> float:
        """The same without the RF off that ends the tap: the sale switches the field
        off after the result is journalled (terminal/sale.py)."""
        cmds = self.commands[1:]
        if cmds and cmds[-1].cmd == RF_CONFIGURATION:
            cmds = cmds[:-1]
        return sum(getattr(c, case + "_us") for c in cmds)

    def total(self, case: str = "typical") -> float:
        return sum(getattr(c, case + "_us") for c in self.commands)

    def to_json(self) -> dict:
        return {"commands": [COMMANDS.get(c.cmd, hex(c.cmd)) for c in self.commands],
                "after_sense_typical_ms": round(self.after_sense("typical") / 1000, 3),
                "after_sense_worst_ms": round(self.after_sense("worst") / 1000, 3),
                "to_result_typical_ms": round(self.to_result("typical") / 1000, 3),
                "to_result_worst_ms": round(self.to_result("worst") / 1000, 3),
                "rf_ms": round(sum(c.rf_us for c in self.commands[1:]) / 1000, 3),
                "bus_transactions": sum(c.transactions for c in self.commands[1:]),
                "bus_bytes": sum(c.bus_bytes for c in self.commands[1:]),
                "faults": self.faults, "complete": self.complete}


# -- RF side: nfcpy's udp driver as the initiator ------------------------------------------


def _udp_initiator(host: str, port: int, sense_wait: float):
    import nfc.clf.udp

    class Initiator(nfc.clf.udp.Device):
        """nfcpy's udp reader, with its socket connected (a card not listening is an
        ECONNREFUSED at once, not a 1 s wait), late datagrams drained before each
        send, and sense answers waited for sense_wait seconds of wall time."""

        _sensing = False

        def _create_socket(self):
            fresh = self.socket is None
            super()._create_socket()
            if fresh:
                self.socket.connect(self.addr)

        def _send_data(self, brty, data, addr):
            self.socket.setblocking(False)
            try:
                while True:
                    self.socket.recv(1024)
            except OSError:
                pass
            finally:
                self.socket.setblocking(True)
            super()._send_data(brty, data, addr)

        def _recv_data(self, timeout, *brty_list):
            if self._sensing and timeout is not None:
                timeout = min(timeout, sense_wait)
            return super()._recv_data(timeout, *brty_list)

        def sense_ttf(self, target):
            self._sensing = True
            try:
                return super().sense_ttf(target)
            finally:
                self._sensing = False

        def sense_tta(self, target):
            self._sensing = True
            try:
                return super().sense_tta(target)
            finally:
                self._sensing = False

    return Initiator(host, port)


class _NoField:
    """No RF field attached: no card ever answers."""

    socket = None

    def sense_ttf(self, target):
        return None

    def sense_tta(self, target):
        return None

    def send_cmd_recv_rsp(self, target, data, timeout):
        import nfc.clf

        raise nfc.clf.TimeoutError("no RF field attached")

    def mute(self):
        pass


class LocalField:
    """An RF side in process: one card (host_tools.cardemu.FelicaCard) in the field,
    answering at once; for bus counts and tests that need no UDP link."""

    socket = 0

    def __init__(self, card):
        self.card = card
        self.addr = None

    def sense_ttf(self, target):
        import nfc.clf

        if int(target.brty[:3]) not in self.card.m.kbps:
            return None  # a polling at a bit rate the card does not speak: silence
        req = bytes([len(target.sensf_req) + 1]) + bytes(target.sensf_req)
        rsp = self.card.process(req)
        return None if rsp is None else nfc.clf.RemoteTarget(target.brty, sensf_res=rsp[1:])

    def sense_tta(self, target):
        return None

    def send_cmd_recv_rsp(self, target, data, timeout):
        import nfc.clf

        rsp = self.card.process(bytes(data))
        if rsp is None:
            raise nfc.clf.TimeoutError("the card did not answer")
        return bytearray(rsp)

    def mute(self):
        pass


class I2CBus:
    """The chip on an I2C bus, in process: `writeto` and `readfrom_into` as
    machine.I2C has them, for the board's own I2CLink, counting transactions and
    bytes as the wire carries them (each with its address byte). A read starts
    with the status byte (01: a frame is ready, UM0701-02 6.2.4) and takes the
    chip's next frame from its start; the frame is gone once read (a NACK has it
    sent again). Its address wakes the chip."""

    def __init__(self, chip: Pn532Emulator):
        self.chip = chip
        self.transactions = 0
        self.bytes = 0

    def writeto(self, addr, buf) -> int:
        self.transactions += 1
        self.bytes += 1 + len(buf)
        self.chip.asleep = False
        self.chip.feed(bytes(buf))
        return len(buf)

    def readfrom_into(self, addr, buf) -> None:
        self.transactions += 1
        self.bytes += 1 + len(buf)
        out = self.chip.outbox
        n = _frame_len(out)
        for i in range(len(buf)):
            buf[i] = 0
        if not n:
            return
        buf[0] = 1
        if len(buf) > 1:
            for i in range(min(n, len(buf) - 1)):
                buf[1 + i] = out[i]
            del out[:n]


def _frame_len(out: bytearray) -> int:
    """Length of the first whole frame in out (ACK, NACK, information frame); 0: none."""
    if len(out) < 6:
        return 0
    if out[3:5] in (b"\x00\xff", b"\xff\x00"):
        return 6
    n = 7 + out[3]
    return n if len(out) >= n else 0


# -- the chip -----------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    count: int  # -1: for ever
    command: int | None = None


class Pn532Emulator:
    """A PN532 at the far end of a pty (see the module docstring)."""

    def __init__(self, rf: str | LocalField | None = None, bus: BusModel | None = None,
                 sense_wait: float = 0.25, exchange_wait: float = 2.0,
                 log_path: str | os.PathLike | None = None, keep: int = 1000):
        self.rf_path = rf
        self.bus = bus or BusModel("uart", 115_200)
        self.sense_wait = sense_wait
        self.exchange_wait = exchange_wait  # wall-clock wait for a PC card process
        self.log_path = log_path
        self.path = ""
        self.taps: collections.deque[TapTime] = collections.deque(maxlen=keep)
        self.charged: collections.deque[CommandTime] = collections.deque(maxlen=keep)
        self.counts: collections.Counter[str] = collections.Counter()
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._master = -1
        self._slave = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._parser = FrameParser()
        self._pending: list[tuple] = []
        self.outbox = bytearray()  # what the chip sent, in process (feed())
        import nfc.clf  # noqa: F401  now: its first import takes longer than a chip may

        self._rf = self._open_rf()
        self.power_on()

    def power_on(self) -> None:
        """The state after power-up (or RSTPDN): asleep on HSU, field off, defaults."""
        self.asleep = True
        self.field = False
        self.sam_done = False
        self.rf_timeout_index = 0x0A  # RFConfiguration item 2 default: 51.2 ms
        self.mx_rty_passive = 0xFF  # RFConfiguration item 5 default: retry for ever
        self.target = None
        self.brty = ""
        self.pmm = bytes(8)
        self.removed = False
        self.writes_left = -1
        self.tap: TapTime | None = None
        self.last_response = b""

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> str:
        """Open the pty (raw, as a UART is) and serve it; returns the slave's path."""
        master, slave = pty.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        self._master, self._slave = master, slave
        self.path = os.ttyname(slave)
        if isinstance(self._rf, _NoField) and self.rf_path:
            self._rf = self._open_rf()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="pn532emu", daemon=True)
        self._thread.start()
        return self.path

    def _open_rf(self):
        if not isinstance(self.rf_path, (str, type(None))):
            return self.rf_path  # an RF side given as an object (LocalField)
        if not self.rf_path:
            return _NoField()
        parts = self.rf_path.split(":")
        if parts[0] != "udp" or len(parts) != 3:
            raise ValueError(f"RF side: udp:HOST:PORT, not {self.rf_path!r}")
        return _udp_initiator(parts[1], int(parts[2]), self.sense_wait)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._rf_off()
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def __enter__(self) -> Pn532Emulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def inject(self, kind: str, count: int = 1, command: int | None = None) -> None:
        """Arm a fault (see the module docstring); command: only frames of that code."""
        if kind not in ("silent", "no_response", "nack", "garble", "remove_after_writes"):
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            if kind == "remove_after_writes":
                self.writes_left = count
            else:
                self.faults.append(Fault(kind, count, command))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()
            self.writes_left = -1

    def _fault(self, kind: str, cmd: int) -> bool:
        with self._lock:
            for f in self.faults:
                if f.kind == kind and (f.command is None or f.command == cmd) and f.count:
                    if f.count > 0:
                        f.count -= 1
                    self.counts["fault " + kind] += 1
                    if self.tap is not None:
                        self.tap.faults.append(kind)
                    return True
            return False

    # -- the host link -------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._pending:
                r, _, _ = select.select([self._master], [], [], 0.05)
                if not r:
                    continue
                self._read_host()
            while self._pending and not self._stop.is_set():
                self._event(self._pending.pop(0))

    def _read_host(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:  # the firmware closed its end
            time.sleep(0.05)
            return
        self._pending.extend(self._parser.feed(data))

    def _send(self, data: bytes) -> None:
        if self._master < 0:  # in process (feed()): the host takes it from outbox
            self.outbox += data
            return
        try:
            os.write(self._master, data)
        except OSError:
            pass

    def feed(self, data: bytes) -> None:
        """In process, without a pty: take bytes from the host, answer into outbox
        (a bus model or a test reads them from there)."""
        for ev in self._parser.feed(data):
            self._event(ev)

    def _event(self, ev: tuple) -> None:
        kind = ev[0]
        if kind == "wake":
            self.asleep = False
            return
        if self.asleep:
            self.counts["ignored asleep"] += 1
            return
        if kind == "nack":
            self.counts["nack from host"] += 1
            last = self.last_response  # the chip sends its last response again
            self._send(_garbled(last) if last and self._fault("garble", last[6] - 1)
                       else last)
            return
        if kind == "ack":
            self.counts["ack from host"] += 1  # nothing in progress: nothing to abort
            return
        if kind == "bad":
            self.counts["bad frame"] += 1  # ignored: no ACK, the host resends
            return
        data = ev[1]
        cmd = data[1] if len(data) > 1 else -1
        self.counts["frames"] += 1
        if self._fault("silent", cmd):
            return
        if self._fault("nack", cmd):
            self._send(NACK)
            return
        self._send(ACK)
        if self._fault("no_response", cmd):
            return
        if len(data) < 2 or data[0] != HOST_TO_PN:
            response = ERROR_FRAME
            timing = None
        else:
            body, timing = self._execute(cmd, bytes(data[2:]), len(data) + 7)
            response = ERROR_FRAME if body is None else frame(
                bytes([PN_TO_HOST, cmd + 1]) + body)
        self.last_response = response
        # an ACK that came while the command ran aborts it: its answer is dropped
        if self._master >= 0 and select.select([self._master], [], [], 0)[0]:
            self._read_host()
        if self._pending and self._pending[0][0] == "ack":
            self._pending.pop(0)
            self.counts["aborted"] += 1
            return
        # Charged (and a tap ended by RF off recorded) before the answer leaves: the
        # host may read chip.taps as soon as the firmware has its answer.
        if timing is not None:
            self._charge(timing, len(response))
        self._send(_garbled(response) if self._fault("garble", cmd) else response)

    # -- commands ------------------------------------------------------------------------------

    def _execute(self, cmd: int, p: bytes, tx: int) -> tuple[bytes | None, dict]:
        """Run one command; returns (response data after D5 CMD+1, or None for the
        syntax-error frame) and what it cost on the RF side."""
        self.counts[COMMANDS.get(cmd, "unknown %02X" % cmd)] += 1
        t = {"cmd": cmd, "tx": tx, "rf_us": 0.0, "status": 0, "sensed": False}
        body: bytes | None = None
        if cmd == GET_FIRMWARE_VERSION:
            body = FIRMWARE if not p else None
        elif cmd == SAM_CONFIGURATION:
            if len(p) in (2, 3) and 1 <= p[0] <= 4:
                self.sam_done = True
                body = b""
        elif cmd == RF_CONFIGURATION:
            body = self._rf_configuration(p)
        elif cmd == IN_LIST_PASSIVE_TARGET:
            body = self._in_list_passive_target(p, t)
        elif cmd == IN_COMMUNICATE_THRU:
            body = self._in_communicate_thru(p, t) if p else None
        elif cmd == IN_RELEASE:
            if len(p) == 1 and p[0] <= 2:
                ok = p[0] == 0 or self.target is not None
                body = bytes([ST_OK if ok else ST_NOT_ACCEPTABLE])
        elif cmd == GET_GENERAL_STATUS:
            if not p:
                body = bytes([0, 1 if self.field else 0, 1 if self.target is not None else 0])
                if self.target is not None:
                    br = 2 if self.brty == "424F" else 1 if self.brty == "212F" else 0
                    body += bytes([1, br, br, 0x10 if br else 0x00])
                body += b"\x00"
        elif cmd == POWER_DOWN:
            if len(p) in (1, 2):
                body = bytes([ST_OK])
                self._rf_off()
                self.asleep = True
        elif cmd == DIAGNOSE:
            if p and p[0] == 0x00:  # communication line test: the data comes back
                body = p
        return body, t

    def _rf_configuration(self, p: bytes) -> bytes | None:
        if not p or _RF_ITEM_LEN.get(p[0]) != len(p) - 1:
            return None
        item = p[0]
        if item == 0x01:
            if p[1] & 1:
                self.field = True
            else:
                self._rf_off(finish=False)  # the tap ends once this command is charged
        elif item == 0x02:
            self.rf_timeout_index = p[3] & 0x0F if p[3] <= 0x10 else 0x10
        elif item == 0x05:
            self.mx_rty_passive = p[3]
        return b""

    def _rf_off(self, finish: bool = True) -> None:
        if finish and self.tap is not None:
            self.tap.complete = True
            self._finish_tap()
        self.field = False
        self.target = None
        self.removed = False
        try:
            self._rf.mute()
        except (OSError, AttributeError):
            pass

    def _in_list_passive_target(self, p: bytes, t: dict) -> bytes | None:
        import nfc.clf

        if len(p) < 2 or p[0] not in (1, 2) or p[1] > 4:
            return None
        brty = p[1]
        if brty in (1, 2) and len(p) != 7:  # FeliCa: the 5-byte polling payload
            return None
        if self.tap is not None:  # a new polling: the last tap ended without RF off
            self._finish_tap()
        self.field = True
        self.target = None
        tries = 1 + self.mx_rty_passive if self.mx_rty_passive != 0xFF else None
        kbps = 424 if brty == 2 else 212
        found = None
        n = 0
        while tries is None or n < tries:
            n += 1
            if brty in (1, 2):
                req = bytes([6]) + p[2:7]
                t["rf_us"] += rf_frame_us(6, kbps) + POLLING_SLOT0_US + POLLING_SLOT_US * p[6]
                if not self.removed:
                    try:
                        found = self._rf.sense_ttf(nfc.clf.RemoteTarget(
                            "424F" if brty == 2 else "212F", sensf_req=bytearray(req[1:])))
                    except (OSError, nfc.clf.CommunicationError):
                        found = None
                if found is not None:
                    res = bytes(found.sensf_res)
                    t["rf_us"] += rf_frame_us(len(res) + 1, kbps) - POLLING_SLOT_US * p[6]
                    self.brty = "424F" if brty == 2 else "212F"
                    self.target = found
                    self.pmm = res[9:17]
                    t["sensed"] = True
                    return b"\x01\x01" + bytes([len(res) + 1]) + res
            elif brty == 0:
                t["rf_us"] += 1000.0  # REQA, anticollision, select: about 1 ms at 106 kbps
                if not self.removed:
                    try:
                        found = self._rf.sense_tta(nfc.clf.RemoteTarget("106A"))
                    except (OSError, nfc.clf.CommunicationError):
                        found = None
                if found is not None and found.sdd_res:
                    uid = bytes(found.sdd_res)
                    self.brty = "106A"
                    self.target = found
                    t["sensed"] = True
                    return (b"\x01\x01" + bytes(found.sens_res[::-1]) + bytes(found.sel_res)
                            + bytes([len(uid)]) + uid)
            if tries is None:  # retrying for ever: until a card comes or the host aborts
                if self._stop.is_set() or self._host_aborted():
                    break
                time.sleep(0.02)
        return b"\x00"

    def _host_aborted(self) -> bool:
        if self._master < 0:
            return True  # in process nothing runs beside: retrying for ever would hang
        if select.select([self._master], [], [], 0)[0]:
            self._read_host()
        return any(e[0] == "ack" for e in self._pending)

    def _in_communicate_thru(self, p: bytes, t: dict) -> bytes:
        import nfc.clf

        kbps = 424 if self.brty == "424F" else 212
        t["rf_us"] += rf_frame_us(len(p), kbps)
        limit = timeout_us(self.rf_timeout_index)
        if not self.field or not self.brty.endswith("F"):
            t["rf_us"] += min(limit, 100_000)
            t["status"] = ST_TIMEOUT
            return bytes([ST_TIMEOUT])
        if self.removed or (self.writes_left == 0 and len(p) > 1 and p[1] == 0x08):
            if not self.removed:
                self.counts["fault card removed"] += 1
                if self.tap is not None:
                    self.tap.faults.append("card removed")
            self.removed = True  # until the field goes off: the next tap has the card again
            self.writes_left = -1
            t["rf_us"] += limit
            t["status"] = ST_TIMEOUT
            return bytes([ST_TIMEOUT])
        if getattr(self._rf, "socket", 0) is None:  # muted since: a new link
            self._rf._create_socket()
        target = self.target or nfc.clf.RemoteTarget(self.brty)
        if getattr(target, "_addr", None) is None:
            target._addr = getattr(self._rf, "addr", None)
        try:
            rsp = self._rf.send_cmd_recv_rsp(target, bytearray(p), self.exchange_wait)
        except (OSError, nfc.clf.CommunicationError):
            rsp = None
        if len(p) > 1 and p[1] == 0x08 and self.writes_left > 0:
            self.writes_left -= 1
        card_us = card_response_us(p, self.pmm)
        if rsp is None or card_us > limit:
            t["rf_us"] += limit
            t["status"] = ST_TIMEOUT
            return bytes([ST_TIMEOUT])
        t["rf_us"] += card_us + rf_frame_us(len(rsp), kbps)
        return bytes([ST_OK]) + bytes(rsp)

    # -- time ------------------------------------------------------------------------------------

    def _charge(self, t: dict, rx: int) -> None:
        cases = {}
        for case in ("typical", "worst"):
            busy = CHIP_CMD_US[case] + t["rf_us"]
            bus_us, n_tr, n_by = self.bus.command(t["tx"], rx, busy, case)
            cases[case] = bus_us + CHIP_ACK_US[case] + busy
        ct = CommandTime(t["cmd"], t["tx"], rx, t["rf_us"], cases["typical"], cases["worst"],
                         n_tr, n_by, t["status"])
        self.charged.append(ct)
        if t["sensed"]:
            self.tap = TapTime()
        if self.tap is not None:
            self.tap.commands.append(ct)
            if t["cmd"] == RF_CONFIGURATION and not self.field:
                self.tap.complete = True
                self._finish_tap()

    def _finish_tap(self) -> None:
        tap, self.tap = self.tap, None
        if tap is None or not tap.commands:
            return
        self.taps.append(tap)
        self.counts["taps"] += 1  # every tap, beyond the last `keep` kept in taps
        if self.log_path:
            import json

            with open(self.log_path, "a") as f:
                f.write(json.dumps(tap.to_json()) + "\n")
