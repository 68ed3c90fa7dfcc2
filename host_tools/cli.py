"""termctl: talk to an offline payment terminal (a board or the emulated one).

Each command is an argparse factory plus a `do_<name>(args)` handler; a
ToolError anywhere is printed as `termctl: message` with exit status 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time
from pathlib import Path

from host_tools import __version__
from host_tools.errors import ToolError
from host_tools.keyring import Keyring

PROG = "termctl"

EPILOG = """\
examples:
  termctl emulate --detach                 start an emulated board, print its port
  export TERMCTL_PORT=/dev/pts/5           (or give --port to every command)
  termctl status
  termctl time set --now
  termctl params show
  termctl params set floor_limit=9000 daily_offline_cap=20000
"""


def _link(args):
    from host_tools.link import TerminalLink

    ring = Keyring.open(args.keyring) if args.keyring else None
    return TerminalLink.open(args.port, timeout=args.timeout, keyring=ring)


# -- emulate --------------------------------------------------------------------

def argparse_emulate(sub):
    p = sub.add_parser(
        "emulate", help="run the firmware on an emulated board (unix port + pty + LittleFS)",
        description="Run firmware/main.py in the MicroPython unix port under the board's heap "
        "cap, on a LittleFS2 flash image in a file, with a pty as its serial port. Prints the "
        "port; stop with Ctrl-C or SIGTERM (the flash image is kept).")
    p.add_argument("--board", default="emulator", help="board file in boards/ (default emulator)")
    p.add_argument("--flash", default=None,
                   help="flash image file (default .termctl/emulator.img; created if missing)")
    p.add_argument("--heap", default=None, help="heap cap, e.g. 64k (default: the board's)")
    p.add_argument("--detach", action="store_true",
                   help="start in the background, print port and pid, return")
    p.add_argument("--stop", action="store_true",
                   help="stop the detached emulator that runs on --flash")
    p.add_argument("--announce-json", action="store_true", help=argparse.SUPPRESS)


def do_emulate(args):
    from host_tools import emulator

    flash = Path(args.flash or emulator.DEFAULT_FLASH).resolve()
    heap = emulator.parse_size(args.heap) if args.heap else None
    if args.stop:
        return _stop_detached(flash)
    if args.detach:
        info = emulator.detach(args.board, flash, heap)
        print(f"port: {info['port']}\npid: {info['pid']}\nterminal: {info['terminal_id']}\n"
              f"boot: {info['boot_ms']:.0f} ms\nflash: {flash}\n"
              f"stop: termctl emulate --flash {flash} --stop   (or kill {info['pid']})")
        return 0
    ring = Keyring.open(args.keyring) if args.keyring else None
    emu = emulator.Emulator(board=args.board, flash=flash, heap=heap, keyring=ring)

    def announce(e):
        if args.announce_json:
            print(json.dumps({"port": e.port, "pid": os.getpid(), "boot_ms": e.boot_ms,
                              "terminal_id": "%08x" % e.terminal_id}), flush=True)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
        else:
            print(f"emulated board '{e.board}' ready in {e.boot_ms:.0f} ms "
                  f"(heap cap {e.heap} bytes, flash {e.flash})")
            print(f"port: {e.port}")
            print("stop with Ctrl-C", flush=True)

    return emulator.serve(emu, announce)


def _stop_detached(flash: Path) -> int:
    from host_tools.emulator import state_path

    st = state_path(flash)
    if not st.exists():
        raise ToolError(f"no detached emulator runs on {flash}")
    pid = json.loads(st.read_text())["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        st.unlink()
        raise ToolError(f"emulator pid {pid} is gone; removed its stale state file") from None
    for _ in range(100):
        if not st.exists():
            print(f"stopped emulator pid {pid}")
            return 0
        time.sleep(0.05)
    raise ToolError(f"emulator pid {pid} did not stop within 5 s")


# -- status -----------------------------------------------------------------------

def argparse_status(sub):
    p = sub.add_parser("status", help="show the terminal's status",
                       description="Firmware version, board, heap, flash, clock and versions.")
    p.add_argument("--json", action="store_true", help="print as JSON")


def do_status(args):
    with _link(args) as t:
        st = t.status()
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        width = max(len(k) for k in st)
        for k, v in st.items():
            print(f"{k:<{width}}  {v}")
    return 0


# -- time -------------------------------------------------------------------------

def argparse_time(sub):
    p = sub.add_parser("time", help="set the terminal's clock",
                       description="Set the terminal's wall clock (UTC). Authenticated.")
    tsub = p.add_subparsers(dest="time_cmd", required=True)
    s = tsub.add_parser("set", help="set the clock")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--now", action="store_true", help="this host's current time")
    g.add_argument("iso", nargs="?", help="ISO 8601 time, e.g. 2026-11-21T09:30:00Z")


def parse_iso(text: str) -> int:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(f"bad time {text!r}: use ISO 8601, e.g. 2026-11-21T09:30:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp())


def do_time(args):
    seconds = int(time.time()) if args.now else parse_iso(args.iso)
    with _link(args) as t:
        shown = t.set_time(seconds)
    print(f"clock set: {shown}")
    return 0


# -- params -----------------------------------------------------------------------

def argparse_params(sub):
    p = sub.add_parser("params", help="show or set the terminal's parameters",
                       description="Parameters are integers (amounts in yen). `set` checks "
                       "every value first: one bad value and nothing changes. Authenticated.")
    psub = p.add_subparsers(dest="params_cmd", required=True)
    psub.add_parser("show", help="list every parameter and its value")
    s = psub.add_parser("set", help="set KEY=VALUE ... atomically")
    s.add_argument("assignments", nargs="+", metavar="KEY=VALUE")


def do_params(args):
    with _link(args) as t:
        if args.params_cmd == "show":
            from host_tools.paramdoc import MEANING
            from terminal.params import TABLE

            values = t.params()
            print(f"version {values.pop('version', 0)}")
            ranges = {row[0]: f"{row[2]}..{row[3]}" for row in TABLE}
            for k, v in values.items():
                rng = ranges.get(k, "")
                note = MEANING.get(k, "")
                print(f"{k:<28} {v:>10}   {rng:<14} {note}")
            return 0
        changes = {}
        for a in args.assignments:
            k, eq, v = a.partition("=")
            if not eq or not k:
                raise ToolError(f"expected KEY=VALUE, got {a!r}")
            try:
                changes[k] = int(v.replace("_", ""))
            except ValueError:
                raise ToolError(f"{k}: {v!r} is not an integer") from None
        shown = t.set_params(changes)
        print(f"params set ({shown})")
    return 0


# -- demo -------------------------------------------------------------------------

def argparse_demo(sub):
    p = sub.add_parser("demo", help="bench demonstration on emulated boards",
                       description="Start an emulated board, set its clock, push parameters "
                       "and show its status: the end-to-end path as it stands.")
    p.add_argument("--flash", default=None, help="flash image (default .termctl/demo.img)")


def do_demo(args):
    from host_tools.emulator import Emulator
    from host_tools.link import TerminalLink

    ring = Keyring.open(args.keyring) if args.keyring else None
    flash = Path(args.flash or ".termctl/demo.img")
    print(f"[1/4] starting an emulated board on {flash} ...", flush=True)
    with Emulator(flash=flash, keyring=ring) as emu:
        print(f"      ready in {emu.boot_ms:.0f} ms on {emu.port} "
              f"(heap cap {emu.heap} bytes)", flush=True)
        with TerminalLink.open(emu.port, timeout=args.timeout, keyring=ring) as t:
            print(f"[2/4] clock set: {t.set_time(int(time.time()))}")
            print(f"[3/4] params: {t.set_params({'floor_limit': 10000})}")
            print("[4/4] status:")
            st = t.status()
            width = max(len(k) for k in st)
            for k, v in st.items():
                print(f"      {k:<{width}}  {v}")
    return 0


# -- flash ------------------------------------------------------------------------

def argparse_flash(sub):
    p = sub.add_parser("flash", help="compile the firmware and copy it to a board",
                       description="Compile firmware/ to .mpy for the board and copy it with "
                       "mpremote, provisioning the terminal key.")
    p.add_argument("--board", required=True, help="board file in boards/")


def do_flash(args):
    raise ToolError("flashing real boards is not there yet: the board files and PN532 driver "
                    "land with the NFC/boards issue; use `termctl emulate` meanwhile")


COMMANDS = {
    "emulate": (argparse_emulate, do_emulate),
    "status": (argparse_status, do_status),
    "time": (argparse_time, do_time),
    "params": (argparse_params, do_params),
    "demo": (argparse_demo, do_demo),
    "flash": (argparse_flash, do_flash),
}


def build_parser():
    ap = argparse.ArgumentParser(
        prog=PROG, description="Talk to an offline NFC payment terminal: a board on a serial "
        "port or the emulated board.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", default=os.environ.get("TERMCTL_PORT"),
                    help="terminal serial port or pyserial URL (default $TERMCTL_PORT)")
    ap.add_argument("--timeout", type=float, default=3.0,
                    help="seconds to wait for each reply (default 3)")
    ap.add_argument("--keyring", default=None,
                    help="keyring file (default $TERMCTL_KEYRING or ~/.config/termctl/)")
    ap.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for factory, _ in COMMANDS.values():
        factory(sub)
    return ap


def main(argv=None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `termctl status | head` exits quietly
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args) or 0
    except ToolError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
