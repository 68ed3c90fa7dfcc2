"""Flash a real board: compile the firmware for its CPU, copy it with mpremote,
provision the terminal key (`make flash BOARD=.. PORT=..`).

    plan = plan_flash("pico_pn532")          # what would be written, with sizes
    flash(plan, "/dev/ttyACM0", ring)        # copy + key, then reset the board

The board file goes to the board as board.py; main.py stays source (MicroPython
runs it by name), every other module as .mpy for the board's -march. A new
terminal id and key are made, added to the keyring, and written as
terminal.key, unless --keep-key leaves the board's key alone.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from host_tools.build import ROOT, board_values, build_dir, compile_firmware, venv_tool
from host_tools.errors import ToolError
from host_tools.progress import Progress

BOARDS = ROOT / "boards"
# Drivers of the emulated board only (file-backed flash, nfcpy's UDP link).
UNIX_ONLY = {"drivers/unix_platform.mpy", "drivers/unix_flash.mpy", "drivers/filebdev.mpy",
             "drivers/nfc_udp.mpy", "drivers/ptyuart.mpy"}


@dataclass
class Plan:
    board: str
    march: str | None
    build: Path
    files: list[tuple[Path, str, int]]  # local file, path on the board, bytes

    @property
    def total(self) -> int:
        return sum(n for _, _, n in self.files)




def plan_flash(board: str) -> Plan:
    values = board_values(board)
    if values.get("MCU") == "unix":
        raise ToolError(f"{board} is the emulated board: run it with `termctl emulate`")
    march = values.get("MPY_MARCH")
    build = build_dir(board)
    sizes = compile_firmware(build, march=march)
    files = [(build / rel, ":" + rel, n) for rel, n in sorted(sizes.items())
             if rel not in UNIX_ONLY]
    board_file = BOARDS / f"{board}.py"
    files.append((board_file, ":board.py", board_file.stat().st_size))
    return Plan(board, march, build, files)


def flash(plan: Plan, port: str, ring, keep_key: bool = False) -> int | None:
    """Copy the plan's files (and a new key) to the board; returns the terminal id."""
    mpremote = venv_tool("mpremote", "mpremote")
    for d in sorted({str(Path(remote[1:]).parent) for _, remote, _ in plan.files} - {"."}):
        # an existing directory makes mkdir fail, which is fine
        subprocess.run([mpremote, "connect", port, "fs", "mkdir", f":{d}"],
                       capture_output=True, text=True, timeout=60)
    cmd = [mpremote, "connect", port]
    for local, remote, _ in plan.files:
        cmd += ["fs", "cp", str(local), remote, "+"]
    tid = key = None
    with tempfile.TemporaryDirectory() as tmp:
        if not keep_key:
            tid = secrets.randbits(32)
            key = secrets.token_bytes(32)
            key_file = Path(tmp) / "terminal.key"
            key_file.write_bytes(tid.to_bytes(4, "little") + key)
            key_file.chmod(0o600)
            cmd += ["fs", "cp", str(key_file), ":terminal.key", "+"]
            # a new key restarts the request counter (the way out when it reaches
            # protocol.COUNTER_END); the old key's requests no longer verify anyway
            ctr_file = Path(tmp) / "auth.ctr"
            ctr_file.write_bytes(bytes(8))
            cmd += ["fs", "cp", str(ctr_file), ":auth.ctr", "+"]
        cmd += ["reset"]
        code, detail = _copy(cmd, plan, port)
    if code != 0:
        raise ToolError(f"mpremote on {port} failed: {detail or 'exit %d' % code}")
    if tid is not None and key is not None:
        ring.add(tid, key, note=f"{plan.board} on {port}")
    return tid


def _copy(cmd: list[str], plan: Plan, port: str, timeout: float = 300) -> tuple[int, str]:
    """Run mpremote, the bar moving as it names each file it copies ('cp LOCAL
    :REMOTE'); returns its exit status and its last line."""
    sizes = {str(local): n for local, _, n in plan.files}
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # its lines as they happen, not at exit
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    expired = threading.Event()

    def give_up():
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, give_up)
    timer.start()
    last = ""
    try:
        with Progress(f"flash {port}", plan.total, "B") as bar:
            copying = 0
            assert proc.stdout is not None
            for line in proc.stdout:
                last = line.strip() or last
                words = line.split()
                if len(words) == 3 and words[0] == "cp":
                    bar.update(copying)  # the previous file is on the board
                    copying = sizes.get(words[1], 0)
            code = proc.wait()
            if code == 0:
                bar.update(copying)
    finally:
        timer.cancel()
    if expired.is_set():
        return code, f"no progress in {timeout:g} s"
    return code, last
