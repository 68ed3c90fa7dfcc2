"""termctl: talk to an offline payment terminal (a board or the emulated one).

The command table: each command group lives in host_tools/commands/<group>.py as
an argparse factory and a `do_<group>(state, args)` handler. A ToolError
anywhere is printed as `termctl: message` with exit status 1; the terminal
link a command opened is closed here.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys

from host_tools import __version__
from host_tools.commands import (
    batch,
    card,
    centre,
    demo,
    emulate,
    flash,
    keys,
    params,
    ports,
    sale,
    simulate,
    status,
    tune,
)
from host_tools.commands import list as list_
from host_tools.commands import time as time_
from host_tools.commands.state import State
from host_tools.errors import ToolError, did_you_mean

PROG = "termctl"

EPILOG = """\
examples:
  termctl demo                             the incident on emulated boards, three policies
  termctl simulate --world adaptive        a scenario on the fast fleet (Dask when large)
  termctl tune                             the parameters' frontier: loss against cost
  termctl emulate --detach                 start an emulated board; the commands below find it
  termctl ports                            the boards running here, the serial ports
  termctl keys push && termctl time set --now
  termctl status --json
  termctl params set floor_limit=9000 daily_offline_cap=20000
  termctl centre add-card 4980000000000001
  termctl sale 5,000 --token 4980000000000001 --centre .termctl/centre.db
  termctl batch pull --centre .termctl/centre.db
  termctl centre next-list --out next.bin --version 2 && termctl list push next.bin
  termctl emulate --stop

options go before or after the command (termctl status --port /dev/ttyACM0);
the port is --port, else $TERMCTL_PORT, else the one emulated board running here.
exit status: 0 done, 1 error (one line on stderr), 2 usage, 3 sale declined
"""

# name: (argparse factory, handler)
COMMANDS = {
    "emulate": (emulate.argparse_emulate, emulate.do_emulate),
    "status": (status.argparse_status, status.do_status),
    "time": (time_.argparse_time, time_.do_time),
    "params": (params.argparse_params, params.do_params),
    "keys": (keys.argparse_keys, keys.do_keys),
    "sale": (sale.argparse_sale, sale.do_sale),
    "batch": (batch.argparse_batch, batch.do_batch),
    "card": (card.argparse_card, card.do_card),
    "list": (list_.argparse_list, list_.do_list),
    "centre": (centre.argparse_centre, centre.do_centre),
    "demo": (demo.argparse_demo, demo.do_demo),
    "simulate": (simulate.argparse_simulate, simulate.do_simulate),
    "tune": (tune.argparse_tune, tune.do_tune),
    "flash": (flash.argparse_flash, flash.do_flash),
    "ports": (ports.argparse_ports, ports.do_ports),
}


class HelpFormatter(argparse.HelpFormatter):
    """Each option's default shown where there is one to show (not None, False or
    empty, and not already told by the help text)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default in (None, False, [], argparse.SUPPRESS) or "default" in text
                or not (action.option_strings or action.nargs in ("?", "*"))):
            return text
        return text + " (default: %(default)s)"


class TopHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """termctl --help: the examples in the epilog keep their lines."""


def _global_options(p, defaults: bool) -> None:
    """Options every command takes, before or after its name (`termctl status
    --port X` as `termctl --port X status`). After the name they default to
    SUPPRESS, so they override the top level only when given."""
    def d(value):
        return value if defaults else argparse.SUPPRESS

    g = p.add_argument_group("global options")
    g.add_argument("--port", default=d(os.environ.get("TERMCTL_PORT")),
                   help="terminal serial port or pyserial URL (default $TERMCTL_PORT)")
    g.add_argument("--timeout", type=float, default=d(3.0),
                   help="seconds to wait for each reply (default 3)")
    g.add_argument("--keyring", default=d(None),
                   help="keyring file (default $TERMCTL_KEYRING or ~/.config/termctl/)")
    g.add_argument("--json", action="store_true", default=d(False),
                   help="print the result as JSON, numbers as numbers (status, sale, params "
                   "show, list status, batch pull, centre report, ports)")


class Parser(argparse.ArgumentParser):
    """argparse, with the nearest names after an invalid choice (`termctl statsu`)."""

    def error(self, message):
        bad = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if bad:
            message += did_you_mean(bad.group(1), re.findall(r"'([^']*)'", bad.group(2)))
        super().error(message)


class CommandParser(Parser):
    """A command's parser (and its subcommands'): defaults in the help, and the
    global options accepted after the command name. A command's own option of the
    same name wins (`card present --timeout` is the card's wait)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("conflict_handler", "resolve")
        super().__init__(*args, **kwargs)
        _global_options(self, defaults=False)


def build_parser():
    ap = Parser(
        prog=PROG, description="Talk to an offline NFC payment terminal: a board on a serial "
        "port or the emulated board.", epilog=EPILOG, formatter_class=TopHelpFormatter)
    _global_options(ap, defaults=True)
    ap.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND",
                            parser_class=CommandParser)
    for factory, _ in COMMANDS.values():
        factory(sub)
    return ap


def main(argv=None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `termctl status | head` exits quietly
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or argparse's usage error (2)
        return e.code if isinstance(e.code, int) else 2
    state = State(args)
    if args.json and not getattr(args, "json_output", False):
        print(f"{PROG}: {args.command} has no --json output", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command][1](state, args) or 0
    except ToolError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a file the user named: --out into a missing directory, say
        where = f"{e.filename}: " if e.filename else ""
        print(f"{PROG}: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        state.close()


if __name__ == "__main__":
    sys.exit(main())
