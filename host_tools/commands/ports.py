"""termctl ports: the emulated boards running here and the serial ports."""

from __future__ import annotations

from host_tools.commands.common import json_output, print_json


def argparse_ports(sub):
    p = sub.add_parser(
        "ports", help="list the emulated boards running here and the serial ports",
        description="Emulated boards started from this directory (their records under "
        ".termctl/ or beside their flash image) and the machine's serial ports. With no "
        "--port and no TERMCTL_PORT, commands use the emulated board running here if "
        "there is exactly one.")
    json_output(p)


def do_ports(state, args):
    from host_tools.ports import running, serial_ports

    boards = running()
    serial = serial_ports()
    if args.json:
        print_json({"emulated": [vars(b) for b in boards],
                    "serial": [{"port": d, "description": desc, "hwid": hw}
                               for d, desc, hw in serial]})
        return 0
    for b in boards:
        print(f"{b.port:<16} emulated board, terminal {b.terminal}, pid {b.pid}, "
              f"flash {b.flash}")
    for device, desc, hwid in serial:
        desc = desc if desc and desc != "n/a" else "serial port"
        print(f"{device:<16} {desc}" + (f" [{hwid}]" if hwid and hwid != "n/a" else ""))
    if not boards and not serial:
        print("no emulated board runs here and no serial port was found")
    return 0
