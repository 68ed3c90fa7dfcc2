"""Per board: the firmware's .mpy bytes (mpy-cross for the board's -march) and
the smallest heap in which the unix port boots with that board's file and runs
sales, found by bisection, beside the board's own heap cap."""

import os
import tempfile
import time
from pathlib import Path

BOARDS = ("emulator", "pico_pn532", "esp32s3_pn532")


def runs_in(board, heap_kb, work):
    from host_tools.demo import free_udp_port
    from host_tools.emulator import Emulator
    from host_tools.errors import ToolError
    from host_tools.link import TerminalLink
    from host_tools.pos import run_sale, sale_over_rf
    from host_tools.provision import push_keys
    from host_tools.wallet import issue_card

    rf = free_udp_port()  # the RF stack resident: taps through the board's PN532 driver
    emu = Emulator(board=board, flash=work / f"{board}-{heap_kb}.img", heap=heap_kb * 1024,
                   rf_port=rf)
    try:
        emu.start()
        with TerminalLink.open(emu.port, timeout=10) as t:
            push_keys(t, t.keyring)
            t.set_time(int(time.time()))
            image = issue_card("4980000000000001", 1, "credit", t.keyring)
            for _ in range(5):
                r, image = sale_over_rf(t, f"udp:127.0.0.1:{rf}", "4980000000000001", image,
                                        500, wait_ms=5000)
            image = run_sale(t, 500, image).card_image  # and an injected one
            return int(t.status()["heap_used"])
    except ToolError:
        return None
    finally:
        emu.stop()


def run(quick=False):
    from host_tools.build import board_values, compile_firmware
    from host_tools.flash import UNIX_ONLY

    size_rows, heap_rows = [], []
    modules: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["TERMCTL_KEYRING"] = str(work / "keyring.json")
        for board in BOARDS:
            values = board_values(board)
            march = values.get("MPY_MARCH")
            sizes = compile_firmware(work / "build" / board, march=march)
            if board != "emulator":
                sizes = {k: v for k, v in sizes.items() if k not in UNIX_ONLY}
            modules[board] = sizes
            size_rows.append([board, march or "bytecode", len(sizes),
                              "{:,}".format(sum(sizes.values()))])
            lo, hi = 96, 512
            used = None
            while hi - lo > (16 if quick else 4):
                mid = (lo + hi) // 2
                got = runs_in(board, mid, work)
                if got is None:
                    lo = mid
                else:
                    hi, used = mid, got
            cap = values["HEAP_SIZE"] // 1024
            heap_rows.append([board, f"{cap} KB", f"{hi} KB", "{:,}".format(used or 0),
                              "fits" if hi <= cap else f"over by {hi - cap} KB"])
    names = sorted(modules["emulator"], key=lambda k: -modules["emulator"][k])
    per_module = [[n] + ["{:,}".format(modules[b].get(n, 0)) if n in modules[b] else "-"
                         for b in BOARDS] for n in names]
    return [
        {"title": "Firmware .mpy bytes per board", "columns": ["board", "-march", "files",
                                                               "bytes"],
         "rows": size_rows,
         "notes": "What `termctl flash` copies (the emulated board's unix-only drivers "
                  "excluded for real boards); main.py and board.py are source."},
        {"title": ".mpy bytes per module", "columns": ["module"] + list(BOARDS),
         "rows": per_module},
        {"title": "Heap a tap cycle needs on the unix port, per board file",
         "columns": ["board", "board's cap", "needs (unix port)", "heap used after",
                     "verdict"],
         "rows": heap_rows,
         "notes": "Smallest -X heapsize in which the firmware boots with the board's "
                  "capacities, installs keys and runs 5 sales over RF (the board's PN532 "
                  "driver on the emulated PN532) and one injected (bisection, 4 KB steps); "
                  "heap used after: gc.mem_alloc() read by the status command after the "
                  "sales. The unix port is 64-bit; most of this heap is the firmware's "
                  "bytecode, which a 32-bit port holds in about 0.9 times the bytes "
                  "(measured under MicroPython's wasm32 build, docs/boards.md), so the "
                  "figures are a slight upper bound for the boards."},
    ]
