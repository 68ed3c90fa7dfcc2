"""Per board: the firmware and the board file compile with mpy-cross for the
board's -march, and the firmware with the board file's capacities runs a full
cycle in the MicroPython unix port under that board's heap cap.

The cycle is what a terminal does in a day: keys provisioned, the clock set, a
negative list pushed and installed (its nl.dir written), sales tapped over RF
(the board's own PN532 driver and FeliCa code resident, on the emulated PN532:
card read and its next slot written, decision, list lookup, journal append,
counters) including a listed card, the clearing batch pulled and acknowledged.
The emulated board runs with `micropython -X heapsize=<board_heap(board)>`,
so any allocation past the cap raises MemoryError in the firmware and the link
fails. The unix port is 64-bit: a 32-bit board's HEAP_SIZE is emulated as
4/3 of it (host_tools.emulator.UNIX_PER_32BIT, measured: docs/boards.md). The
day itself is bench/bench_boards.py's, which also finds the heap it needs.
"""


import pytest

from host_tools.build import board_values
from host_tools.emulator import board_heap
from host_tools.link import TerminalLink

BOARDS = ("emulator", "pico_pn532", "esp32s3_pn532")


@pytest.mark.parametrize("board", BOARDS)
def test_a_day_of_work_fits_the_board_heap(board, emulated_board):
    from bench.bench_boards import after_reboot, day_of_work
    from host_tools.demo import free_udp_port

    cap = board_heap(board)
    values = board_values(board)
    # a 32-bit board's budget, scaled for the 64-bit unix port (docs/boards.md)
    assert cap == values["HEAP_SIZE"] * (4 if values["WORD_BITS"] == 32 else 3) // 3
    rf = free_udp_port()
    emu = emulated_board(board, board=board, rf_port=rf)
    assert emu.heap == cap
    with TerminalLink.open(emu.port, timeout=20) as t:
        outcomes, injected, batch, acked, st = day_of_work(t, board, rf)
    used, free = int(st["heap_used"]), int(st["heap_free"])
    assert used + free <= cap  # the unix port really ran under the board's cap
    assert outcomes == ["APPROVED_OFFLINE"] * 3 + ["DECLINED_OFFLINE"]
    assert injected == "APPROVED_OFFLINE" and acked
    assert st["list_entries"] == "2000" and st["list_direct_reads"] == "yes"
    assert st["nfc_reads"] == "4" and st["nfc_writes"] == "3"  # the RF stack did the taps
    assert len([tp for tp in emu.pn532.taps if tp.complete]) == 4
    assert batch.count == 5
    # the next morning: a reboot with the list, journal and counters on flash
    outcome, st = after_reboot(emu, rf)
    assert outcome == "DECLINED_OFFLINE" and st["list_entries"] == "2000"
    assert int(st["heap_used"]) + int(st["heap_free"]) <= cap


@pytest.mark.parametrize("board", BOARDS)
def test_firmware_and_board_file_compile_with_mpy_cross(board, tmp_path):
    # What `termctl flash` copies to that board: every firmware module for its -march;
    # board files and main.py go as source, so compile them too to catch what only
    # MicroPython's compiler refuses.
    import subprocess
    from pathlib import Path

    from host_tools.build import build_dir, compile_firmware, mpy_cross

    march = board_values(board).get("MPY_MARCH")
    sizes = compile_firmware(build_dir(board), march=march)  # the build flash copies
    assert "terminal/negative_list.mpy" in sizes and "terminal/nl_update.mpy" in sizes
    root = Path(__file__).resolve().parent.parent
    for src in (root / "boards" / f"{board}.py", root / "firmware" / "main.py"):
        cmd = [mpy_cross(), "-o", str(tmp_path / (src.stem + ".mpy"))]
        cmd += [f"-march={march}"] if march else []
        proc = subprocess.run(cmd + [str(src)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
