"""termctl flash: compile the firmware for a board and copy it there."""

from __future__ import annotations

from host_tools.errors import ToolError


def argparse_flash(sub):
    p = sub.add_parser(
        "flash", help="compile the firmware for a board and copy it there (mpremote)",
        description="Compile firmware/ to .mpy with mpy-cross for the board's CPU (-march "
        "from the board file), copy it with mpremote together with the board file (as "
        "board.py) and a new terminal key (added to the keyring), then reset the board. "
        "--dry-run prints what would be written.")
    p.add_argument("--board", required=True, help="board file in boards/, e.g. pico_pn532")
    p.add_argument("--keep-key", action="store_true",
                   help="leave the board's terminal key as it is")
    p.add_argument("--dry-run", action="store_true", help="compile and list, copy nothing")


def do_flash(state, args):
    from host_tools.flash import flash, plan_flash

    plan = plan_flash(args.board)
    print(f"{plan.board}: mpy-cross -march={plan.march or 'bytecode'}, {len(plan.files)} files, "
          f"{plan.total:,} bytes")
    for _local, remote, n in plan.files:
        print(f"  {remote:<34} {n:>7,} B")
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    if not state.port:
        raise ToolError("give the board's serial port: --port /dev/ttyACM0 (or TERMCTL_PORT)")
    tid = flash(plan, state.port, state.keyring(), keep_key=args.keep_key)
    print(f"written to {state.port}" + (f"; terminal {tid:08x}, key in the keyring"
                                        if tid is not None else "; key kept"))
    return 0
