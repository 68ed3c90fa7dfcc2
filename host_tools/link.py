"""The host's end of the link to one terminal, over pyserial.

    with TerminalLink.open("/dev/pts/5") as t:     # or /dev/ttyACM0, socket://..., loop://
        print(t.status()["clock"])
        t.call_signed(protocol.CMD_TIME_SET, (1_790_000_000).to_bytes(8, "little"))

Ports are opened with `serial.serial_for_url`, so any pyserial URL works. A
port that does not answer, or answers with something other than the terminal
protocol (a bare MicroPython REPL, say), gives a one-line ToolError naming
the port and what was expected.
"""

from __future__ import annotations

import os
import re
import struct
import time
import typing

import serial

from host_tools.errors import LinkError, Refused, ToolError
from host_tools.keyring import Keyring
from terminal import frame, protocol

MAX_FRAME = 1024  # the largest MAX_FRAME of any board file
# A partial frame that gets no byte for this long is a length lie or a cut
# transfer (the terminal's link.py waits the same 250 ms).
IDLE_S = 0.25

ERROR_NAMES = {
    protocol.ERR_CHECKSUM: "bad checksum",
    protocol.ERR_UNKNOWN_COMMAND: "unknown command",
    protocol.ERR_MALFORMED: "malformed request",
    protocol.ERR_BAD_MAC: "bad MAC",
    protocol.ERR_REPLAY: "replayed counter",
    protocol.ERR_INVALID: "invalid value",
    protocol.ERR_STATE: "wrong state",
    protocol.ERR_INTERNAL: "internal error",
    protocol.ERR_FULL: "full",
}


def request(cmd, req, body=b""):
    """an unauthenticated request payload."""
    return bytes((cmd, req & 0xFF, (req >> 8) & 0xFF)) + bytes(body)


def signed_request(auth, cmd, req, counter, args=b""):
    """an authenticated request payload (counter, args, MAC)."""
    msg = bytes((cmd, req & 0xFF, (req >> 8) & 0xFF)) + counter.to_bytes(8, "little") + args
    return msg + auth.sign(msg)


def reason(e: Exception) -> str:
    """An OS error's reason once: pyserial wraps OSError in SerialException, whose text
    repeats the port and the inner '[Errno 2] ...'; this gives 'No such file or
    directory'."""
    errno = getattr(e, "errno", None)
    if isinstance(errno, int) and errno > 0:
        return os.strerror(errno)
    inner = re.search(r"\[Errno (\d+)\]", str(e))  # socket:// and rfc2217:// wrap it in text
    return os.strerror(int(inner.group(1))) if inner else str(e)


def parse_kv(text):
    """'a=1\nb=x' -> {'a': '1', 'b': 'x'} (status and params replies)."""
    out = {}
    for line in text.split("\n"):
        eq = line.find("=")
        if eq > 0:
            out[line[:eq]] = line[eq + 1 :]
    return out


class TerminalLink:
    def __init__(self, ser, name: str, timeout: float = 2.0, keyring: Keyring | None = None):
        self.ser = ser
        self.name = name
        self.timeout = timeout
        self._keyring = keyring
        self.rx = frame.FrameReader(MAX_FRAME)
        self._rest = b""  # bytes read but not yet taken by rx (its buffer was full)
        self._req = int(time.monotonic() * 1000) & 0xFFFF
        self._status: dict[str, str] | None = None
        self._ident: dict[str, str] | None = None
        self.events: list[tuple[int, int, bytes]] = []  # (evt, seq, body) seen while waiting
        # Called for each event as it arrives (e.g. an online request during a sale);
        # it may itself make requests: replies are matched by (command, request id).
        self.on_event = None
        self._replies: dict[tuple[int, int], tuple[int, bytes]] = {}
        self._seen = bytearray()  # raw bytes seen while waiting, for diagnosing a non-terminal
        self.rf_device: str | None = None  # the board's RF field, if the host can reach it
        self.pn532: typing.Any = None  # the emulated PN532 behind that field (emulated board)
        self.bytes_sent = 0  # frames on the wire, for transfer figures
        self.bytes_received = 0

    @classmethod
    def open(cls, port: str | None, timeout: float = 2.0,
             keyring: Keyring | None = None) -> TerminalLink:
        if not port:
            raise ToolError("no port given: use --port PORT or set TERMCTL_PORT")
        try:
            ser = serial.serial_for_url(port, baudrate=115200, timeout=0.02, write_timeout=5)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open {port}: {reason(e)}") from None
        try:
            ser.reset_input_buffer()
        except (serial.SerialException, OSError):
            pass
        return cls(ser, port, timeout, keyring)

    def close(self) -> None:
        self.ser.close()

    def __enter__(self) -> TerminalLink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            self._keyring = Keyring.open()
        return self._keyring

    # -- raw exchange ---------------------------------------------------------

    def send_payload(self, payload: bytes) -> None:
        wire = frame.encode(payload)
        try:
            self.ser.write(wire)
            self.bytes_sent += len(wire)
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"{self.name}: write failed: {reason(e)}") from None

    def _next_req(self) -> int:
        self._req = (self._req + 1) & 0xFFFF
        return self._req

    def read_frame(self, deadline: float) -> bytes | None:
        """The next good frame's payload, or None at the deadline. A header that lies
        about its length stalls the reader until the line is quiet for IDLE_S; then
        every stalled header goes at once (FrameReader.expire), as on the terminal."""
        quiet = time.monotonic()
        while True:
            kind, payload = self.rx.pop()
            if kind == frame.FRAME:
                return bytes(payload)
            if kind == frame.CORRUPT:
                continue
            if self._rest:  # bytes that did not fit the reader's buffer last time
                self._rest = self._rest[self.rx.feed(self._rest):]
                continue
            now = time.monotonic()
            if now >= deadline:
                return None
            if self.rx.pending() and now - quiet > IDLE_S:
                self.rx.expire()
                quiet = now
                continue
            try:
                data = self.ser.read(max(1, min(self.ser.in_waiting, 4096)))
            except (serial.SerialException, OSError) as e:
                raise LinkError(f"{self.name}: read failed: {reason(e)}") from None
            if data:
                quiet = time.monotonic()
                self.bytes_received += len(data)
                if len(self._seen) < 256:
                    self._seen += data[:256]
                self._rest = data

    def exchange(self, cmd: int, req: int, payload: bytes,
                 timeout: float | None = None) -> tuple[int, bytes]:
        """Send one request payload and wait for its reply: (status, body)."""
        self._seen = bytearray()
        self.send_payload(payload)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        key = (cmd | protocol.REPLY_BIT, req)
        while True:
            if key in self._replies:
                return self._replies.pop(key)
            got = self.read_frame(deadline)
            if got is None:
                raise LinkError(self._silence_message())
            if len(got) >= 3:
                self._dispatch(got)

    def _dispatch(self, got: bytes) -> None:
        """A frame from the terminal: keep a reply, hand an event to on_event."""
        kind, seq = got[0], protocol.u16(got, 1)
        if kind & protocol.REPLY_BIT:
            if kind != protocol.CMD_FRAME_ERROR | protocol.REPLY_BIT and len(got) >= 4:
                self._replies[(kind, seq)] = (got[3], got[4:])
                if len(self._replies) > 64:  # replies nobody waits for (send_signed)
                    self._replies.pop(next(iter(self._replies)))
        elif kind & protocol.EVENT_BIT:
            event = (kind & 0x3F, seq, got[3:])
            if self.on_event is not None:
                self.on_event(*event)
            else:
                self.events.append(event)

    def _silence_message(self) -> str:
        seen = bytes(self._seen)
        if b">>>" in seen or b"MicroPython" in seen or b"Traceback" in seen:
            return (f"{self.name}: a MicroPython REPL answered, not the terminal firmware "
                    "(expected framed terminal replies; flash it with `make flash`)")
        if seen:
            return (f"{self.name}: answered with something other than the terminal protocol "
                    f"(got {seen[:40]!r}; expected framed terminal replies)")
        return (f"{self.name}: no answer within {self.timeout:g} s (expected the terminal "
                "firmware's framed reply): is the board running there (`termctl ports`), "
                "and not busy waiting for a card for a sale (up to the sale's --wait)?")

    # -- commands -------------------------------------------------------------

    def call(self, cmd: int, body: bytes = b"", timeout: float | None = None) -> bytes:
        req = self._next_req()
        status, reply = self.exchange(cmd, req, request(cmd, req, body), timeout)
        return self._check(cmd, status, reply)

    def identity(self) -> dict[str, str]:
        """terminal_id, provisioned, max_frame, auth_counter (as status() spells
        them): what a signed request needs, from the 15-byte IDENT reply rather than
        the whole status (~800 bytes on the wire); cached like status(cached=True),
        and kept up to date by the signed requests this link sends."""
        if self._status is not None:
            return self._status
        if self._ident is None:
            req = self._next_req()
            status, body = self.exchange(protocol.CMD_IDENT, req,
                                         request(protocol.CMD_IDENT, req))
            if status == protocol.ERR_UNKNOWN_COMMAND:  # firmware older than IDENT
                return self.status(cached=True)
            tid, provisioned, max_frame, counter = struct.unpack(
                "<IBHQ", self._check(protocol.CMD_IDENT, status, body))
            self._ident = {"terminal_id": "%08x" % tid, "provisioned": str(provisioned),
                           "max_frame": str(max_frame), "auth_counter": str(counter)}
        return self._ident

    def authenticator(self) -> protocol.Authenticator:
        st = self.identity()
        if st.get("provisioned") != "1":
            raise ToolError(f"{self.name}: terminal {st.get('terminal_id')} has no key yet")
        tid = int(st["terminal_id"], 16)
        return protocol.Authenticator(self.keyring.get(tid)[0], tid)

    def next_counter(self) -> int:
        """The counter the next signed request uses: max(keyring, terminal) + 1. The
        terminal's counter is public; taking the max keeps two hosts (or a lost
        keyring) from being refused as replays. ToolError, saying how to re-key,
        once it reaches protocol.COUNTER_END."""
        st = self.identity()
        tid = int(st["terminal_id"], 16)
        counter = max(self.keyring.get(tid)[1], int(st.get("auth_counter", "0"))) + 1
        if counter >= protocol.COUNTER_END:
            raise ToolError(f"{self.name}: terminal {tid:08x}'s request counter is at the end "
                            f"of its range ({counter - 1}): {protocol.REKEY_HINT}")
        return counter

    def _signed_payload(self, cmd: int, args: bytes) -> tuple[int, bytes]:
        auth = self.authenticator()
        counter = self.next_counter()
        st = self.identity()
        self.keyring.set_counter(int(st["terminal_id"], 16), counter)
        st["auth_counter"] = str(counter)
        req = self._next_req()
        return req, signed_request(auth, cmd, req, counter, args)

    def call_signed(self, cmd: int, args: bytes = b"", timeout: float | None = None) -> bytes:
        req, payload = self._signed_payload(cmd, args)
        status, reply = self.exchange(cmd, req, payload, timeout)
        return self._check(cmd, status, reply)

    def send_signed(self, cmd: int, args: bytes = b"") -> int:
        """Send a signed request without waiting for its reply (answering an event
        while the terminal waits for it); the reply is kept and otherwise ignored."""
        req, payload = self._signed_payload(cmd, args)
        self.send_payload(payload)
        return req

    def cancel_sale(self, timeout: float) -> tuple[int, bytes] | None:
        """The POS gave up on the sale the terminal is serving (Ctrl-C): read the sale's
        own reply (status, body) within `timeout`, or None if none came, so that no
        late reply is left on the line. The terminal answers when its card wait ends
        (or at once, when a card was read meanwhile: then the result is the real one)."""
        key = protocol.CMD_SALE | protocol.REPLY_BIT
        deadline = time.monotonic() + timeout
        while True:
            done = [k for k in self._replies if k[0] == key]
            if done:
                return self._replies.pop(done[-1])
            got = self.read_frame(deadline)
            if got is None:
                return None
            if len(got) >= 3:
                self._dispatch(got)

    def pump(self) -> None:
        """Handle whatever has arrived (events to on_event, replies kept) without waiting."""
        try:
            data = self.ser.read(self.ser.in_waiting) if self.ser.in_waiting else b""
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"{self.name}: read failed: {reason(e)}") from None
        self.bytes_received += len(data)
        data, self._rest = self._rest + data, b""
        while True:
            data = data[self.rx.feed(data):]
            kind, payload = self.rx.pop()
            if kind == frame.FRAME and len(payload) >= 3:
                self._dispatch(bytes(payload))
            elif kind == frame.NONE and not data:
                return

    def _check(self, cmd: int, status: int, reply: bytes) -> bytes:
        if status != protocol.OK:
            what = ERROR_NAMES.get(status, f"error {status}")
            raise Refused(f"{self.name}: terminal refused ({what}): "
                          f"{reply.decode(errors='replace')}", status)
        return reply

    def status(self, cached: bool = False) -> dict[str, str]:
        if cached and self._status is not None:
            return self._status
        text = self.call(protocol.CMD_STATUS).decode()
        fields = parse_kv(text)
        notes = [line[5:] for line in text.split("\n") if line.startswith("note=")]
        if notes:
            fields["note"] = "; ".join(notes)
        self._status = fields
        return fields

    def params(self) -> dict[str, int]:
        return {k: int(v) for k, v in
                parse_kv(self.call(protocol.CMD_PARAMS_GET).decode()).items()}

    def set_params(self, assignments: dict[str, int]) -> str:
        text = "\n".join(f"{k}={v}" for k, v in assignments.items())
        return self.call_signed(protocol.CMD_PARAMS_SET, text.encode()).decode()

    def set_time(self, unix_seconds: int) -> str:
        return self.call_signed(protocol.CMD_TIME_SET, int(unix_seconds).to_bytes(8, "little")
                                ).decode()
