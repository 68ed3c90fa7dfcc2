"""Hardware in the loop: a real board on --port and an nfcpy device on --nfc.

    pytest -m hil --port /dev/ttyACM0 --nfc usb:054c:06c3 --board pico_pn532

Without --port every test here is skipped, saying why (tests/conftest.py). With
hardware they flash the firmware, install keys, push a list, tap a card emulated
by the nfcpy device on the board's PN532, and pull the batch.
"""

import time

import pytest

from host_tools.cardemu import CardEmulator
from host_tools.keyring import Keyring
from host_tools.link import TerminalLink
from host_tools.pos import run_sale
from host_tools.provision import push_keys
from host_tools.transfer import ack_batch, pull_batch
from host_tools.wallet import card_image, card_memory, describe, issue_card

pytestmark = pytest.mark.hil


@pytest.fixture(scope="module")
def hw(request, tmp_path_factory):
    port = request.config.getoption("--port")
    nfc = request.config.getoption("--nfc")
    board = request.config.getoption("--board")
    if not nfc:
        pytest.skip("hardware-in-the-loop: no nfcpy device (give --nfc DEVICE)")
    from host_tools.flash import flash, plan_flash

    ring = Keyring.open(tmp_path_factory.mktemp("hil") / "keyring.json")
    flash(plan_flash(board), port, ring)
    time.sleep(3)  # the board resets into the new firmware
    link = TerminalLink.open(port, timeout=10, keyring=ring)
    push_keys(link, ring)
    link.set_time(int(time.time()))
    yield link, nfc, ring
    link.close()


def test_flashed_board_answers_with_its_board_file(hw, request):
    link, _, _ = hw
    st = link.status()
    assert st["board"] == request.config.getoption("--board")
    assert st["platform"] == "board" and st["provisioned"] == "1"


def test_list_push_and_status(hw):
    import datetime

    from host_tools import listbuild
    from host_tools.link import parse_kv
    from host_tools.transfer import push_list
    from terminal import nl_format as nl
    from terminal import protocol

    link, _, ring = hw
    key_id, list_key = ring.list_key()
    status = parse_kv(link.call(protocol.CMD_LIST_STATUS).decode())
    # a few flash blocks of entries, so that lookups read the board's flash blocks
    # directly through nl.dir (board file's open_flash())
    csv = "1,4980000000000666,add\n" + "".join("1,35%014d,add\n" % i for i in range(3000))
    built = listbuild.build_full(csv,
                                 version=int(status["list_version"]) + 1, issuers={1: None},
                                 list_key=list_key, key_id=key_id,
                                 capacity=int(status["list_capacity"]),
                                 today=listbuild.day_number(datetime.date.today()))
    h = nl.parse_header(built.data[:nl.HEADER_LEN])
    summary = push_list(link, built.data, h[0], h[1], h[2])
    assert summary.entries == 3001
    status = parse_kv(link.call(protocol.CMD_LIST_STATUS).decode())
    assert status["list_entries"] == "3001"
    assert status["list_direct_reads"] == "yes", status


def test_tap_a_card_on_the_pn532_and_pull_the_batch(hw):
    link, nfc, ring = hw
    link.set_params({"new_card_online": 0})
    memory = card_memory(issue_card("4980000000000001", 1, "credit", ring))
    with CardEmulator(memory, nfc) as card:
        import threading

        t = threading.Thread(target=lambda: card.serve(taps=1, timeout=30))
        t.start()
        r = run_sale(link, 500, None, wait_ms=20000)
        card.stop()
        t.join(30)
    assert r.outcome == "APPROVED_OFFLINE", r
    assert describe(card_image(memory))["atc"] == 1
    print(f"tap to result on the board: {r.tap_ms} ms")
    batch = pull_batch(link)
    assert batch.records and batch.records[-1]["amount"] == 500
    ack_batch(link, batch.batch_id)
