"""Emulate a FeliCa card with nfcpy: a memory of 16-byte blocks served with
Read and Write Without Encryption, kept in a JSON wallet between taps.

    wallet = CardMemory.create("card.json", idm=bytes.fromhex("02fe001122334455"),
                           image=record48)                 # or CardMemory.load("card.json")
    with CardEmulator(wallet, "udp:127.0.0.1:0") as card:  # port 0: pick a free port
        print(card.port)                                   # give this to the emulated board
        served = card.serve(taps=1, timeout=30)            # until read once (or N taps)

The device is any nfcpy path that can listen as a Type F target: `udp:HOST:PORT`
for the emulated board (nfcpy's UDP link, see docs/nfc.md), or a reader on a
bench (`usb:054c:06c3` RC-S380; a PN532/PN533 listens with 64-byte frames at
most, enough for a 3-block read). The emulator knows nothing of the card
record layout: it serves the block image it is given under the service codes
it is given, and writes land in the image, which is saved to the wallet file
after every completed write, so the counters a terminal writes travel with the
card to the next terminal.

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
# A FeliCa Lite-S is the memory card this emulates: plain Read/Write Without
# Encryption on 16-byte blocks, system code 88B4, services 0009 (read/write)
# and 000B (read only) over the same blocks, IC type F1 in the PMm. Its
# response-time bytes are not a Lite-S's (about 2 ms for 3 blocks): a card
# emulated by a PC process answers in milliseconds to tens of them, and readers
# that wait exactly what PMm announces (nfcpy's own Type3Tag, drivers.felica
# on a PN532) would give up. BF = E 2, B 7, A 7: 155 ms for a 3-block read.
DEFAULT_SYSTEM_CODE = 0x88B4
DEFAULT_SERVICE_CODES = (0x0009, 0x000B)
DEFAULT_PMM = bytes.fromhex("00f1bfbfbfbfbfbf")
WALLET_FORMAT = 1
_RW = 0b001001  # service attribute: random access, read/write, no key
_RO = 0b001011  # random access, read only, no key


def _hex(text: str, what: str, length: int | None = None) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except (TypeError, ValueError):
        raise ToolError(f"{what}: not hex: {text!r}") from None
    if length is not None and len(raw) != length:
        raise ToolError(f"{what}: {len(raw)} bytes, expected {length}")
    return raw


class CardMemory:
    """The card's state: IDm, PMm, system code, service codes and its block image.

    With a path, save() writes it as JSON (atomically: temp file + rename).
    """

    def __init__(self, idm: bytes, image: bytes, pmm: bytes = DEFAULT_PMM,
                 system_code: int = DEFAULT_SYSTEM_CODE,
                 service_codes: tuple[int, ...] = DEFAULT_SERVICE_CODES,
                 path: str | Path | None = None, taps: int = 0):
        if len(idm) != 8 or len(pmm) != 8:
            raise ToolError("IDm and PMm are 8 bytes each")
        if not image or len(image) % BLOCK:
            raise ToolError(f"block image: {len(image)} bytes, not a multiple of {BLOCK}")
        for code in service_codes:
            if code & 0x3F not in (_RW, _RO):
                raise ToolError(f"service code {code:04X}: only random access without key "
                                "(attribute 09 read/write, 0B read only) is emulated")
        self.idm = bytes(idm)
        self.pmm = bytes(pmm)
        self.system_code = system_code
        self.service_codes = tuple(service_codes)
        self.image = bytearray(image)
        self.path = Path(path) if path else None
        self.taps = taps

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
                       path=path, taps=int(data.get("taps", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ToolError(f"{path}: wallet field missing or bad ({e})") from None

    def to_json(self) -> dict:
        return {
            "format": WALLET_FORMAT,
            "idm": self.idm.hex(),
            "pmm": self.pmm.hex(),
            "system_code": f"{self.system_code:04x}",
            "service_codes": [f"{c:04x}" for c in self.service_codes],
            "blocks": [self.image[i:i + BLOCK].hex() for i in range(0, len(self.image), BLOCK)],
            "taps": self.taps,
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


class CardEmulator:
    """Serve one wallet's card on an nfcpy device until it has been tapped N times."""

    def __init__(self, wallet: CardMemory, device: str = "udp:127.0.0.1:0", brty: str = "212F",
                 session_timeout: float = 1.0, listen_window: float = 2.0,
                 on_write: Callable[[bytes], None] | None = None):
        if brty not in ("212F", "424F"):
            raise ToolError(f"a FeliCa card listens at 212F or 424F, not {brty}")
        self.wallet = wallet
        self.device = device
        self.brty = brty
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
        self._read_in_tap = False
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
        from nfc.tag.tt3 import Type3TagEmulation

        tag = Type3TagEmulation(self.clf, activated)
        for code in self.wallet.service_codes:
            writable = code & 0x3F == _RW
            tag.add_service(code, self._read_block, self._write_block if writable else None)
        self._read_in_tap = False
        rsp = tag.process_command(tag.cmd)
        while True:
            try:
                cmd = tag.send_response(rsp, timeout=self.session_timeout)
            except nfc.clf.CommunicationError:  # RFOFF (BrokenLinkError), silence, garbage
                break
            if cmd is None:
                break
            rsp = tag.process_command(cmd)
        if self._read_in_tap:
            self.taps += 1
            self.wallet.taps += 1
            self.wallet.save()
        return self._read_in_tap

    def _read_block(self, number: int, rb: bool, re: bool) -> bytes | None:
        data = self.wallet.block(number)
        if data is not None:
            self.reads += 1
            self._read_in_tap = True
        return data

    def _write_block(self, number: int, data: bytes, wb: bool, we: bool) -> bool:
        if not self.wallet.put_block(number, bytes(data)):
            return False
        self.writes += 1
        if we:  # the last block of the command: the card's write is complete
            self.wallet.save()
            if self.on_write is not None:
                self.on_write(bytes(self.wallet.image))
        return True


def main(argv: list[str] | None = None) -> int:
    """python -m host_tools.cardemu WALLET [--device udp:127.0.0.1:0] [--taps N]"""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="cardemu", description=main.__doc__)
    p.add_argument("wallet", help="wallet JSON file (made with --idm/--image if missing)")
    p.add_argument("--device", default="udp:127.0.0.1:54321", help="nfcpy device path")
    p.add_argument("--taps", type=int, default=1, help="taps that read the card (default 1)")
    p.add_argument("--timeout", type=float, default=None, help="give up after SECONDS")
    p.add_argument("--idm", help="hex IDm for a new wallet")
    p.add_argument("--image", help="hex block image for a new wallet")
    args = p.parse_args(argv)
    try:
        path = Path(args.wallet)
        if not path.exists() and args.idm and args.image:
            wallet = CardMemory.create(path, _hex(args.idm, "--idm", 8),
                                       _hex(args.image, "--image"))
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
