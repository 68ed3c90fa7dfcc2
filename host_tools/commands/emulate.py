"""termctl emulate: run the firmware on an emulated board."""

from __future__ import annotations

import argparse
from pathlib import Path


def argparse_emulate(sub):
    p = sub.add_parser(
        "emulate", help="run the firmware on an emulated board (unix port + pty + LittleFS)",
        description="Run firmware/main.py in the MicroPython unix port under the board's heap "
        "cap, on a LittleFS2 flash image in a file, with a pty as its serial port. Prints the "
        "port; stop with Ctrl-C or SIGTERM (the flash image is kept).")
    p.add_argument("--board", default="emulator", help="board file in boards/")
    p.add_argument("--flash", default=None,
                   help="flash image file (default .termctl/emulator.img; created if missing)")
    p.add_argument("--heap", default=None,
                   help="heap cap of the unix port, e.g. 64k (default: the board's budget, "
                        "times 4/3 for a 32-bit board: docs/boards.md)")
    p.add_argument("--rf-port", type=int, default=None,
                   help="UDP port of the RF field: the board's PN532 driver talks to an "
                   "emulated PN532 whose RF side is nfcpy's UDP link to this port, where "
                   "`termctl card present --rf-port N` presents cards (default: no reader)")
    p.add_argument("--rf-driver", choices=["pn532", "udp"], default="pn532",
                   help="pn532 (default): the board's own drivers/pn532.py on the emulated "
                   "chip, with its bus and RF time model; udp: drivers/nfc_udp.py speaks "
                   "nfcpy's link straight from the firmware (no chip, no time model)")
    p.add_argument("--detach", action="store_true",
                   help="start in the background, print port and pid, return")
    p.add_argument("--stop", action="store_true",
                   help="stop the detached emulator that runs on --flash")
    p.add_argument("--format", action="store_true",
                   help="format the image if it does not mount (everything on it is lost); "
                   "without it such an image is refused and nothing is written")
    p.add_argument("--strict-flash", action="store_true",
                   help="a program over unerased flash fails (as the tests run) instead of "
                   "being ANDed, counted in status and logged")
    p.add_argument("--announce-json", action="store_true", help=argparse.SUPPRESS)


def do_emulate(state, args):
    from host_tools import emulator

    flash = Path(args.flash or emulator.DEFAULT_FLASH).resolve()
    heap = emulator.parse_size(args.heap) if args.heap else None
    if args.stop:
        pid = emulator.stop_detached(flash)
        print(f"stopped emulator pid {pid}")
        return 0
    if args.detach:
        info = emulator.detach(args.board, flash, heap, rf_port=args.rf_port,
                               rf_driver=args.rf_driver, format_image=args.format)
        print(f"port: {info['port']}\npid: {info['pid']}\nterminal: {info['terminal_id']}\n"
              f"boot: {info['boot_ms']:.0f} ms\nflash: {flash}\n"
              f"stop: termctl emulate --flash {flash} --stop   (or kill {info['pid']})")
        return 0
    ring = state.keyring() if state.keyring_path else None
    emu = emulator.Emulator(board=args.board, flash=flash, heap=heap, keyring=ring,
                            rf_port=args.rf_port, rf_driver=args.rf_driver,
                            format_image=args.format, strict_flash=args.strict_flash or None)

    def announce(e):
        if args.announce_json:
            emulator.announce_to_launcher(e)
        else:
            print(f"emulated board '{e.board}' ready in {e.boot_ms:.0f} ms "
                  f"(heap cap {e.heap} bytes, flash {e.flash})")
            print(f"port: {e.port}")
            print("stop with Ctrl-C", flush=True)

    return emulator.serve(emu, announce)
