"""Emulate a FeliCa card with nfcpy: a FeliCa Lite-S (or a standard FeliCa card)
whose 16-byte blocks are served with Read and Write Without Encryption under
that card's rules, kept in a JSON wallet between taps.

    wallet = CardMemory.create("card.json", idm=bytes.fromhex("02fe001122334455"),
                           image=blocks)                   # or CardMemory.load("card.json")
    with CardEmulator(wallet, "udp:127.0.0.1:0") as card:  # port 0: pick a free port
        print(card.port)                                   # give this to the emulated board
        served = card.serve(taps=1, timeout=30)            # until read once (or N taps)

The device is any nfcpy path that can listen as a Type F target: `udp:HOST:PORT`
for the emulated board (nfcpy's UDP link, see docs/nfc.md), or a reader on a
bench (`usb:054c:06c3` RC-S380; a PN532/PN533 listens with 64-byte frames at
most, enough for a 4-block read). The emulator knows nothing of the card
record layout: it serves the block image it is given under the service codes
it is given, with the rules of its card type (FelicaCard: a Lite-S reads at
most 4 blocks and writes one per command, its system blocks are read only),
and writes land in the image, which is saved to the wallet file after every
completed write, so the counters a terminal writes travel with the card to
the next terminal. nfcpy's listen() answers the first polling (for the card's
system code or FFFF) and hands over the first command; FelicaCard answers the
rest.

A tap is one activation (polling, commands, then RFOFF or silence); it counts
towards `taps` once the reader has read at least one block.
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from host_tools import jsonfile
from host_tools.errors import ToolError

BLOCK = 16
CARD_TYPES = ("lite-s", "standard")
# A FeliCa Lite-S (RC-S966), as its user's manual has it: system code 88B4,
# services 0009 (read/write) and 000B (read only) over the same blocks, and
# PMm 00 F1 00 00 00 01 43 00 (IC type F1; Read answers within 0.3021 ms x
# (n + 2), Write within 1.208 ms x (n + 4)). A PC process answers in
# milliseconds or tens of them, later than that: the emulated PN532 judges the
# card's time on its model, not the wall clock (host_tools/pn532emu.py), so the
# emulated card can announce the real bytes. A reader that waits exactly what
# PMm says in wall time (nfcpy's own Type3Tag over UDP) needs a slower PMm
# (pmm=SLOW_PMM).
DEFAULT_SYSTEM_CODE = 0x88B4
DEFAULT_SERVICE_CODES = (0x0009, 0x000B)
DEFAULT_PMM = bytes.fromhex("00f1000000014300")
SLOW_PMM = bytes.fromhex("00f1bfbfbfbfbfbf")  # E 2, B 7, A 7: 155 ms for 3 blocks
# A standard FeliCa card, in this model: its own system (code 0003 by default, a
# transit card's), several services per command, up to 15 blocks read and 11
# written per command, and response-time bytes of tens of ms for a few blocks
# (not a particular product's: cards differ and announce theirs in PMm).
STANDARD_SYSTEM_CODE = 0x0003
STANDARD_PMM = bytes.fromhex("0120220427674eff")
STANDARD_READ_MAX = 15
STANDARD_WRITE_MAX = 11
LITE_S_READ_MAX = 4  # Read Without Encryption: 1..4 blocks (Lite-S user's manual)
# Bit rates a card answers at (docs/nfc.md, "Bit rates"): every FeliCa card speaks
# 212 kbps (JIS X 6319-4); standard FeliCa cards also 424 (Sony's comparison of
# FeliCa Lite and standard cards: "FeliCa Lite only supports 212kbps, while
# standard FeliCa supports both"), and so does the Lite-S, the Lite's successor, by
# the sources found (not its user's manual, which was not at hand: docs/nfc.md).
# kbps=(212,) makes a card of the older kind, found only by a reader's 212 polling.
DEFAULT_KBPS = (212, 424)
LITE_S_USER_BLOCKS = 14  # S_PAD0-13
WALLET_FORMAT = 1
_RW = 0b001001  # service attribute: random access, read/write, no key
_RO = 0b001011  # random access, read only, no key
# Lite-S blocks beyond S_PAD0-13 (the manual's memory map; nfcpy tt3_sony.py)
REG, RC, MAC, ID, D_ID, SER_C, SYS_C, CKV, CK, MC = (0x0E, 0x80, 0x81, 0x82, 0x83, 0x84,
                                                   0x85, 0x86, 0x87, 0x88)
WCNT, MAC_A, STATE, CRC_CHECK = 0x90, 0x91, 0x92, 0xA0
# Status flag 2 codes the emulated cards answer with (FeliCa card user's manual;
# docs/nfc.md): where the Lite-S manual gives no code for a case, the nearest one.
ST_SERVICES = 0xA1  # illegal number of services
ST_BLOCKS = 0xA2  # illegal number of blocks
ST_SERVICE_INDEX = 0xA3  # a block list element names a service beyond the list
ST_ACCESS = 0xA5  # access not allowed (a write through a read-only service)
ST_SERVICE_CODE = 0xA6  # not a service of this card
ST_BLOCK_NUMBER = 0xA8  # no such block, or not readable / writable as asked
ST_MAC = 0xB2  # Lite-S: MAC block without a session (no RC written), MAC mismatch


def _hex(text: str, what: str, length: int | None = None) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except (TypeError, ValueError):
        raise ToolError(f"{what}: not hex: {text!r}") from None
    if length is not None and len(raw) != length:
        raise ToolError(f"{what}: {len(raw)} bytes, expected {length}")
    return raw


class CardMemory:
    """The card's state: its type, IDm, PMm, system code, service codes and its
    block image (blocks 0.., S_PAD0-13 on a Lite-S; the rest of a Lite-S's
    memory map is made from these, see FelicaCard).

    With a path, save() writes it as JSON (atomically: temp file + rename).
    """

    def __init__(self, idm: bytes, image: bytes, pmm: bytes | None = None,
                 system_code: int | None = None,
                 service_codes: tuple[int, ...] = DEFAULT_SERVICE_CODES,
                 path: str | Path | None = None, taps: int = 0, kind: str = "lite-s",
                 wcnt: int = 0, kbps: tuple[int, ...] = DEFAULT_KBPS):
        if kind not in CARD_TYPES:
            raise ToolError(f"card type {kind!r}: one of {', '.join(CARD_TYPES)}")
        if pmm is None:
            pmm = DEFAULT_PMM if kind == "lite-s" else STANDARD_PMM
        if system_code is None:
            system_code = DEFAULT_SYSTEM_CODE if kind == "lite-s" else STANDARD_SYSTEM_CODE
        if len(idm) != 8 or len(pmm) != 8:
            raise ToolError("IDm and PMm are 8 bytes each")
        if not image or len(image) % BLOCK:
            raise ToolError(f"block image: {len(image)} bytes, not a multiple of {BLOCK}")
        if kind == "lite-s" and len(image) > BLOCK * LITE_S_USER_BLOCKS:
            raise ToolError(f"a FeliCa Lite-S has {LITE_S_USER_BLOCKS} user blocks, "
                            f"not {len(image) // BLOCK}")
        if 212 not in kbps or not set(kbps) <= {212, 424}:
            raise ToolError(f"card bit rates {tuple(kbps)}: 212 and optionally 424 kbps")
        for code in service_codes:
            if code & 0x3F not in (_RW, _RO):
                raise ToolError(f"service code {code:04X}: only random access without key "
                                "(attribute 09 read/write, 0B read only) is emulated")
        self.kind = kind
        self.kbps = tuple(sorted(set(kbps)))
        self.idm = bytes(idm)
        self.pmm = bytes(pmm)
        self.system_code = system_code
        self.service_codes = tuple(service_codes)
        if kind == "lite-s":  # all 14 user blocks exist; those not given are zero
            image = bytes(image) + bytes(BLOCK * LITE_S_USER_BLOCKS - len(image))
        self.image = bytearray(image)
        self.path = Path(path) if path else None
        self.taps = taps
        self.wcnt = wcnt  # Lite-S write count (WCNT): one up per block written

    @classmethod
    def create(cls, path: str | Path, idm: bytes, image: bytes, **kw) -> CardMemory:
        wallet = cls(idm, image, path=path, **kw)
        wallet.save()
        return wallet

    @classmethod
    def load(cls, path: str | Path) -> CardMemory:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ToolError(f"{path}: no such wallet file") from None
        except (OSError, ValueError) as e:
            raise ToolError(f"{path}: not a wallet file ({e})") from None
        if not isinstance(data, dict) or data.get("format") != WALLET_FORMAT:
            raise ToolError(f"{path}: not a wallet file of format {WALLET_FORMAT}")
        try:
            blocks = data["blocks"]
            image = b"".join(_hex(b, f"{path}: block {i}", BLOCK) for i, b in enumerate(blocks))
            return cls(_hex(data["idm"], f"{path}: idm", 8), image,
                       pmm=_hex(data["pmm"], f"{path}: pmm", 8),
                       system_code=int(data["system_code"], 16),
                       service_codes=tuple(int(c, 16) for c in data["service_codes"]),
                       path=path, taps=int(data.get("taps", 0)),
                       kind=str(data.get("card", "lite-s")), wcnt=int(data.get("wcnt", 0)),
                       kbps=tuple(int(k) for k in data.get("kbps", DEFAULT_KBPS)))
        except (KeyError, TypeError, ValueError) as e:
            raise ToolError(f"{path}: wallet field missing or bad ({e})") from None

    def to_json(self) -> dict:
        return {
            "format": WALLET_FORMAT,
            "card": self.kind,
            "idm": self.idm.hex(),
            "pmm": self.pmm.hex(),
            "system_code": f"{self.system_code:04x}",
            "service_codes": [f"{c:04x}" for c in self.service_codes],
            "blocks": [self.image[i:i + BLOCK].hex() for i in range(0, len(self.image), BLOCK)],
            "taps": self.taps,
            "wcnt": self.wcnt,
            "kbps": list(self.kbps),
        }

    def save(self) -> None:
        if self.path is not None:
            jsonfile.save(self.path, self.to_json())

    @property
    def sensf_res(self) -> bytes:
        """What the card answers to a polling: 01, IDm, PMm, system code."""
        return b"\x01" + self.idm + self.pmm + self.system_code.to_bytes(2, "big")

    def block(self, number: int) -> bytes | None:
        at = number * BLOCK
        if number < 0 or at + BLOCK > len(self.image):
            return None
        return bytes(self.image[at:at + BLOCK])

    def put_block(self, number: int, data: bytes) -> bool:
        at = number * BLOCK
        if number < 0 or at + BLOCK > len(self.image) or len(data) != BLOCK:
            return False
        self.image[at:at + BLOCK] = data
        return True


class FelicaCard:
    """The card's side of the FeliCa commands, with its type's rules.

        card = FelicaCard(memory)
        rsp = card.process(cmd)     # a frame with its LEN byte in, the answer (or None) out

    Lite-S (its user's manual; nfcpy tt3_sony.FelicaLiteS follows it): one
    service per command; Read Without Encryption of 1..4 blocks; Write Without
    Encryption of one block, or of a data block plus MAC_A (0x91), the MAC
    write, which needs the card key and a session (an RC written) that this
    emulation does not hold, so it is refused with status B2 as a card refuses
    a MAC it cannot verify; the system blocks ID, D_ID, SER_C, SYS_C, CKV and
    CK are not writable (the card as issued), RC and CK not readable, MAC and
    MAC_A readable only in a session (B2). WCNT counts the blocks written.
    Standard: up to 16 services per command, 15 blocks read, 11 written.
    A command to another IDm, or an unknown command, gets no answer.
    """

    def __init__(self, memory: CardMemory):
        self.m = memory
        self.reads = 0  # Read commands answered with data
        self.writes = 0  # Write commands that changed the card
        self.refused: list[tuple[int, int, int]] = []  # (command, status 1, status 2)
        self.on_write: Callable[[], None] | None = None

    # -- dispatch -------------------------------------------------------------------

    def process(self, cmd: bytes) -> bytes | None:
        m = self.m
        if len(cmd) < 2 or cmd[0] != len(cmd):
            return None
        code = cmd[1]
        if code == 0x00:
            return self._polling(cmd)
        if len(cmd) < 10 or cmd[2:10] != m.idm:
            return None  # addressed to another card
        if code == 0x04:  # Request Response: mode 0
            return bytes([11, 0x05]) + m.idm + b"\x00"
        if code == 0x0C:  # Request System Code: this card's one system
            return bytes([13, 0x0D]) + m.idm + b"\x01" + m.system_code.to_bytes(2, "big")
        if code == 0x06:
            return self._read(cmd)
        if code == 0x08:
            return self._write(cmd)
        return None

    def _polling(self, cmd: bytes) -> bytes | None:
        if len(cmd) != 6:
            return None
        hi, lo = self.m.system_code >> 8, self.m.system_code & 0xFF
        if cmd[2] not in (0xFF, hi) or cmd[3] not in (0xFF, lo):  # FF: any, byte by byte
            return None
        rsp = b"\x01" + self.m.idm + self.m.pmm
        if cmd[4] == 1:
            rsp += self.m.system_code.to_bytes(2, "big")
        elif cmd[4] == 2:  # communication performance: bit 0 212, bit 1 424, bit 7 automatic
            rsp += b"\x00\x83" if 424 in self.m.kbps else b"\x00\x01"  # rate detection
        return bytes([len(rsp) + 1]) + rsp

    def _status(self, code: int, s1: int, s2: int) -> bytes:
        self.refused.append((code, s1, s2))
        return bytes([12, code + 1]) + self.m.idm + bytes([s1, s2])

    def _parse(self, cmd: bytes, writing: bool):
        """(services, [(element bit, service index, block)], data offset) or a status."""
        m = self.m
        code = cmd[1]
        lite = m.kind == "lite-s"
        k = cmd[10] if len(cmd) > 10 else 0
        if k < 1 or k > (1 if lite else 16) or len(cmd) < 12 + 2 * k:
            return self._status(code, 0xFF, ST_SERVICES)
        services = [cmd[11 + 2 * i] | (cmd[12 + 2 * i] << 8) for i in range(k)]
        p = 11 + 2 * k
        n = cmd[p] if len(cmd) > p else 0
        limit = (LITE_S_READ_MAX if lite else STANDARD_READ_MAX) if not writing else (
            2 if lite else STANDARD_WRITE_MAX)
        if n < 1 or n > limit:
            return self._status(code, 0xFF, ST_BLOCKS)
        p += 1
        elements = []
        for i in range(n):
            if p >= len(cmd):
                return None
            head = cmd[p]
            if head & 0x80:
                if p + 2 > len(cmd):
                    return None
                block, p = cmd[p + 1], p + 2
            else:
                if p + 3 > len(cmd):
                    return None
                block, p = cmd[p + 1] | (cmd[p + 2] << 8), p + 3
            if head & 0x0F >= k:
                return self._status(code, 1 << i if i < 8 else 0xFF, ST_SERVICE_INDEX)
            elements.append((1 << i if i < 8 else 0xFF, head & 0x0F, block))
        for sc in services:
            if sc not in m.service_codes:
                return self._status(code, 0xFF, ST_SERVICE_CODE)
        return services, elements, p

    # -- read -----------------------------------------------------------------------

    def _read(self, cmd: bytes) -> bytes | None:
        parsed = self._parse(cmd, writing=False)
        if not isinstance(parsed, tuple):
            return parsed
        _, elements, _ = parsed
        data = b""
        for bit, _, block in elements:
            got = self._read_block(block)
            if isinstance(got, int):
                return self._status(0x06, bit, got)
            data += got
        self.reads += 1
        return bytes([13 + len(data), 0x07]) + self.m.idm + b"\x00\x00" + bytes(
            [len(elements)]) + data

    def _read_block(self, block: int) -> bytes | int:
        m = self.m
        if block < len(m.image) // BLOCK:
            return bytes(m.image[block * BLOCK:(block + 1) * BLOCK])
        if m.kind != "lite-s":
            return ST_BLOCK_NUMBER
        if block == REG:
            return b"\xff" * BLOCK
        if block == ID:
            return m.idm + b"\x00\x00" + bytes(6)  # IDd (= IDm), DFC 0000, free 6 bytes
        if block == D_ID:
            return m.idm + m.pmm
        if block == SER_C:
            return (0x000B).to_bytes(2, "little") + bytes(14)
        if block == SYS_C:
            return m.system_code.to_bytes(2, "big") + bytes(14)
        if block == CKV:
            return bytes(BLOCK)
        if block == MC:  # as issued: system blocks read only (MC[2] = 00), S_PAD read/write
            return b"\xff\xff\x00\x00" + bytes(12)
        if block == WCNT:
            return m.wcnt.to_bytes(3, "little") + bytes(13)
        if block == STATE or block == CRC_CHECK:
            return bytes(BLOCK)
        if block in (MAC, MAC_A):
            return ST_MAC  # generated for a session (RC written): none here
        return ST_BLOCK_NUMBER  # RC and CK are write only; no other block exists

    # -- write ----------------------------------------------------------------------

    def _write(self, cmd: bytes) -> bytes | None:
        m = self.m
        parsed = self._parse(cmd, writing=True)
        if not isinstance(parsed, tuple):
            return parsed
        services, elements, p = parsed
        if len(cmd) != p + BLOCK * len(elements):
            return None  # a malformed frame: no answer
        if m.kind == "lite-s" and len(elements) == 2:
            if elements[1][2] != MAC_A:  # the one two-block write: data + MAC_A
                return self._status(0x08, 0xFF, ST_BLOCKS)
            return self._status(0x08, elements[1][0], ST_MAC)  # no session: MAC fails
        for bit, index, block in elements:
            if services[index] & 0x3F != _RW:
                return self._status(0x08, bit, ST_ACCESS)
            if block >= len(m.image) // BLOCK:
                return self._status(0x08, bit, ST_BLOCK_NUMBER)  # system blocks too
        for i, (_, _, block) in enumerate(elements):
            m.put_block(block, cmd[p + BLOCK * i:p + BLOCK * (i + 1)])
            m.wcnt = min(m.wcnt + 1, 0xFFFFFF)
        self.writes += 1
        m.save()
        if self.on_write is not None:
            self.on_write()
        return bytes([12, 0x09]) + m.idm + b"\x00\x00"


class CardEmulator:
    """Serve one wallet's card on an nfcpy device until it has been tapped N times."""

    def __init__(self, wallet: CardMemory, device: str = "udp:127.0.0.1:0",
                 brty: str | None = None, session_timeout: float = 1.0,
                 listen_window: float = 2.0, on_write: Callable[[bytes], None] | None = None):
        rates = tuple(f"{k}F" for k in wallet.kbps)
        if brty is not None and brty not in rates:
            raise ToolError(f"this card listens at {' or '.join(rates)}, not {brty}")
        self.wallet = wallet
        self.device = device
        # the bit rates it answers a polling at (every one its card speaks, unless told)
        self.brtys = rates if brty is None else (brty,)
        self.brty = self.brtys[0]
        self.session_timeout = session_timeout
        # nfcpy's listen() is one activation window: a polling answered just
        # before it ends is forgotten by the next listen() (which also re-binds
        # the socket), and that reader's first command goes unanswered. Long
        # windows make such a split tap rare (stop() does not wait for them on udp).
        self.listen_window = listen_window
        self.on_write = on_write  # called with the new image after every completed write
        self.clf = None
        self.port: int | None = None  # the UDP port the card listens on (udp devices)
        self.taps = 0  # taps served by this emulator (the wallet counts all of them)
        self.reads = 0
        self.writes = 0
        self.refused: list[tuple[int, int, int]] = []  # commands refused: code, status 1, 2
        self._stop = threading.Event()

    # -- device -------------------------------------------------------------------

    def open(self) -> CardEmulator:
        import nfc
        import nfc.clf.udp

        self._stop.clear()
        path = self.device
        if path.startswith("udp"):
            path = self._udp_path(path)
        clf = nfc.ContactlessFrontend()
        try:
            ok = clf.open(path)
        except OSError as e:
            raise ToolError(f"cannot open NFC device {path}: {e}") from None
        if not ok:
            raise ToolError(f"no NFC device at {path}")
        self.clf = clf
        if isinstance(clf.device, nfc.clf.udp.Device):
            self._bind_loopback(clf.device)
            self._listen_at(clf.device, self.brtys)
        return self

    def _udp_path(self, path: str) -> str:
        """udp:HOST:PORT with port 0 -> a free port on HOST (bound, read, released)."""
        parts = path.split(":")
        host = parts[1] if len(parts) > 1 and parts[1] else "127.0.0.1"
        port = int(parts[2]) if len(parts) > 2 and parts[2] else 54321
        if port == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.port = port
        return f"udp:{host}:{port}"

    @staticmethod
    def _bind_loopback(device) -> None:
        # nfcpy's listener binds 0.0.0.0 (every interface); bind the host the
        # path named instead, so a card on 127.0.0.1 is reachable from this
        # machine only.
        def bind(time_to_return, device=device):
            try:
                device.socket.bind(device.addr)
                return True
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return False
                raise

        device._bind_socket = bind

    @staticmethod
    def _listen_at(device, brtys: tuple[str, ...]) -> None:
        # nfcpy's udp listener takes datagrams of its target's one bit rate; a card
        # answers a polling at every rate it speaks, at the rate it came in (its
        # _listen_ttf answers with the datagram's brty). Once activated, the session
        # keeps to that rate (its target's brty).
        recv, listen = device._recv_data, device.listen_ttf
        listening = [False]

        def recv_data(timeout, *brty_list):
            return recv(timeout, *(brtys if listening[0] else brty_list))

        def listen_ttf(target, timeout):
            listening[0] = True
            try:
                return listen(target, timeout)
            finally:
                listening[0] = False

        device._recv_data = recv_data
        device.listen_ttf = listen_ttf

    def close(self) -> None:
        self.stop()
        if self.clf is not None:
            self.clf.close()
            self.clf = None

    def __enter__(self) -> CardEmulator:
        return self.open() if self.clf is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    def stop(self) -> None:
        """Make serve() return (from another thread). On a udp device the card
        taps itself awake (a polling and one command, the activation nfcpy's
        listen() waits for), so serve() returns at once instead of at the end of
        its listen window; serve() drops that session unanswered."""
        self._stop.set()
        clf = self.clf
        addr = getattr(clf.device, "addr", None) if clf is not None else None
        if self.port is None or addr is None:
            return
        wake = bytes([10, 0x04]) + self.wallet.idm  # Request Response, addressed to the card
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(f"{self.brty} 0600ffff0000".encode(), addr)
            s.sendto(f"{self.brty} {wake.hex()}".encode(), addr)

    # -- serving ------------------------------------------------------------------

    def serve(self, taps: int = 1, timeout: float | None = None) -> int:
        """Answer taps until `taps` of them read the card, `timeout` seconds pass or
        stop() is called; returns the number of taps that read the card."""
        import nfc.clf

        if self.clf is None:
            self.open()
        deadline = None if timeout is None else time.monotonic() + timeout
        served = 0
        target = nfc.clf.LocalTarget(self.brty)
        target.sensf_res = bytearray(self.wallet.sensf_res)
        while served < taps and not self._stop.is_set():
            wait = self.listen_window
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            clf = self.clf
            if clf is None:
                break
            try:
                activated = clf.listen(target, wait)
            except OSError as e:
                if self._stop.is_set() or self.clf is None:
                    break  # closed from another thread
                raise ToolError(f"NFC device {self.device} failed: {e}") from None
            if activated is None or self._stop.is_set():
                continue
            if self._session(activated):
                served += 1
        return served

    def _session(self, activated) -> bool:
        """One tap: answer commands until RFOFF or silence. True if a block was read."""
        import nfc.clf

        clf = self.clf
        if clf is None:
            return False
        card = FelicaCard(self.wallet)
        card.on_write = self._written
        rsp = card.process(bytes([len(activated.tt3_cmd) + 1]) + bytes(activated.tt3_cmd))
        while True:
            try:
                cmd = clf.exchange(bytearray(rsp) if rsp is not None else None,
                                   timeout=self.session_timeout)
            except nfc.clf.CommunicationError:  # RFOFF (BrokenLinkError), silence, garbage
                break
            if cmd is None:
                break
            rsp = card.process(bytes(cmd))
        self.reads += card.reads
        self.writes += card.writes
        self.refused.extend(card.refused)
        if card.reads:
            self.taps += 1
            self.wallet.taps += 1
            self.wallet.save()
        return card.reads > 0

    def _written(self) -> None:
        # the card's write is complete: the wallet holds it (saved by the card)
        if self.on_write is not None:
            self.on_write(bytes(self.wallet.image))


def _kbps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError:
        raise ToolError(f"--kbps: 212 or 212,424, not {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """python -m host_tools.cardemu WALLET [--device udp:127.0.0.1:0] [--taps N]
    [--card lite-s|standard]"""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="cardemu", description=main.__doc__)
    p.add_argument("wallet", help="wallet JSON file (made with --idm/--image if missing)")
    p.add_argument("--device", default="udp:127.0.0.1:54321", help="nfcpy device path")
    p.add_argument("--taps", type=int, default=1, help="taps that read the card (default 1)")
    p.add_argument("--timeout", type=float, default=None, help="give up after SECONDS")
    p.add_argument("--idm", help="hex IDm for a new wallet")
    p.add_argument("--image", help="hex block image for a new wallet")
    p.add_argument("--kbps", default="212,424",
                   help="for a new wallet: the bit rates the card answers at (212 or "
                   "212,424; default 212,424)")
    p.add_argument("--card", choices=CARD_TYPES, default="lite-s",
                   help="for a new wallet: lite-s (FeliCa Lite-S rules, system 88B4; the "
                   "default) or standard (a standard FeliCa card, system 0003)")
    args = p.parse_args(argv)
    try:
        path = Path(args.wallet)
        if not path.exists() and args.idm and args.image:
            wallet = CardMemory.create(path, _hex(args.idm, "--idm", 8),
                                       _hex(args.image, "--image"), kind=args.card,
                                       kbps=_kbps(args.kbps))
        else:
            wallet = CardMemory.load(path)
        with CardEmulator(wallet, args.device) as card:
            print(json.dumps({"port": card.port, "idm": wallet.idm.hex()}), flush=True)
            served = card.serve(args.taps, args.timeout)
        print(json.dumps({"taps": served, "reads": card.reads, "writes": card.writes}))
        return 0 if served >= args.taps else 1
    except ToolError as e:
        print(f"cardemu: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
