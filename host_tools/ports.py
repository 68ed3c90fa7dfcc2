"""Where the terminals are: emulated boards started from this directory, and the
machine's serial ports (`termctl ports`, as `mpremote devs`).

    ports.running()        # [Running(port="/dev/pts/5", pid=123, flash=..., terminal="1a2b..")]
    ports.default_port()   # the one running emulated board's port; ToolError if none or several
    ports.serial_ports()   # [(device, description, hwid)] from pyserial

A detached or foreground `termctl emulate` records itself beside its flash image
(`<image>.run.json`, host_tools.emulator.state_path); the default image is under
.termctl/, and images given by name are usually in the directory itself, so
both are searched. A record whose process is gone is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from host_tools.errors import ToolError

SEARCH = (Path(".termctl"), Path("."))


@dataclass
class Running:
    port: str
    pid: int
    flash: str
    terminal: str


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(dirs=SEARCH) -> list[Running]:
    found = []
    for d in dirs:
        for f in sorted(Path(d).glob("*.run.json")):
            try:
                rec = json.loads(f.read_text())
                pid, port = int(rec["pid"]), str(rec["port"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if _alive(pid) and os.path.exists(port):
                found.append(Running(port, pid, str(f)[: -len(".run.json")],
                                     str(rec.get("terminal_id", "?"))))
    return found


def default_port() -> str:
    """The port to use when neither --port nor TERMCTL_PORT names one."""
    boards = running()
    if len(boards) == 1:
        return boards[0].port
    if not boards:
        raise ToolError("no port given and no emulated board runs here: use --port PORT, "
                        "set TERMCTL_PORT, or start one (termctl emulate --detach); "
                        "`termctl ports` lists the serial ports")
    names = ", ".join(f"{b.port} ({b.flash})" for b in boards)
    raise ToolError(f"{len(boards)} emulated boards run here ({names}): choose one with "
                    "--port or TERMCTL_PORT")


def serial_ports() -> list[tuple[str, str, str]]:
    from serial.tools import list_ports

    return [(p.device, p.description or "", p.hwid or "") for p in list_ports.comports()]
