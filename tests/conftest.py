"""Shared fixtures: run firmware code in the real MicroPython unix port.

    def test_x(mpy):
        out = mpy("from terminal import frame; print(frame.MAGIC)")

`mpy(code, heap=...)` runs `code` with firmware/ and boards/ on the module
path, under the given heap cap, and returns stdout; a non-zero exit fails the
test with the firmware's traceback.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"
sys.path.insert(0, str(FIRMWARE))


def micropython_binary() -> str:
    venv = Path(sys.executable).parent / "micropython"
    if venv.exists():
        return str(venv)
    found = shutil.which("micropython")
    if not found:
        pytest.fail("the MicroPython unix port (`micropython`) is not installed; run `make test`")
    return found


def run_micropython(code: str, heap: str = "64k", timeout: float = 120, cwd=None) -> str:
    env = dict(os.environ, MICROPYPATH=f"{FIRMWARE}:{BOARDS}:{ROOT / 'tests' / 'mpy'}:.frozen")
    proc = subprocess.run(
        [micropython_binary(), "-X", f"heapsize={heap}", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
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


def pytest_addoption(parser):
    parser.addoption("--port", default=None, help="serial port of a flashed board (hil tests)")
    parser.addoption("--nfc", default=None, help="nfcpy device path, e.g. usb:054c:06c3 (hil)")


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
