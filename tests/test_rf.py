"""Cards over RF on the emulated board: the firmware's own PN532 driver on the
emulated PN532, whose RF side is nfcpy's UDP link to an emulated FeliCa Lite-S;
the firmware reads the record with Read Without Encryption, decides, writes the
next counter slot back; the card carries it to the next terminal. Every board
file; and the RF faults a tap meets, each ending the sale cleanly."""

import socket

import pytest

from host_tools.link import TerminalLink
from host_tools.pos import run_sale, sale_over_rf
from host_tools.provision import push_keys
from host_tools.wallet import card_image, card_memory, describe, issue_card

NOW = 1_795_000_000


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def board(emulated_board, name, rf_port):
    emu = emulated_board(name, rf_port=rf_port)
    link = TerminalLink.open(emu.port, timeout=5)
    push_keys(link, link.keyring)
    link.set_time(NOW)
    link.set_params({"new_card_online": 0, "random_target_pct": 0, "random_max_target_pct": 0})
    return link


def tap(link, memory, rf_port, amount):
    """Present the card on the board's RF field while the POS asks for a sale; the
    card's memory then holds what the terminal wrote back."""
    result, image = sale_over_rf(link, f"udp:127.0.0.1:{rf_port}", "4980000000000001",
                                 card_image(memory), amount, wait_ms=15000)
    memory.image[:len(image) - 8] = image[8:]
    return result


@pytest.fixture
def card(keyring_path):
    from host_tools.keyring import Keyring

    image = issue_card("4980000000000001", 1, "credit", Keyring.open())
    return card_memory(image)


def test_credit_card_read_over_rf_approved_offline_and_written_back(emulated_board, card):
    rf = free_udp_port()
    link = board(emulated_board, "a", rf)
    r = tap(link, card, rf, 3000)
    assert r.outcome == "APPROVED_OFFLINE", r
    after = describe(card_image(card))
    assert (after["atc"], after["offline_today"], after["offline_count"]) == (1, 3000, 1)
    assert 0 <= r.tap_ms < 2000


def test_counters_travel_from_one_terminal_to_the_next(emulated_board, card):
    rf_a, rf_b = free_udp_port(), free_udp_port()
    a = board(emulated_board, "a", rf_a)
    b = board(emulated_board, "b", rf_b)
    assert tap(a, card, rf_a, 9000).outcome == "APPROVED_OFFLINE"
    # shop B has never seen this card: only the card's own counters know about
    # the 9,000 yen today, and they are MAC'd by the issuer
    b.set_params({"daily_offline_cap": 15000})
    r = tap(b, card, rf_b, 9000)
    assert r.outcome == "DECLINED_OFFLINE" and "daily_cap" in r.reasons
    assert describe(card_image(card))["offline_today"] == 9000


def test_prepaid_card_over_rf_goes_online(emulated_board, keyring_path):
    from host_tools.keyring import Keyring

    rf = free_udp_port()
    link = board(emulated_board, "a", rf)
    memory = card_memory(issue_card("5000000000000003", 3, "prepaid", Keyring.open()))
    r = tap(link, memory, rf, 100)
    assert r.outcome == "DECLINED_OFFLINE" and "product_online" in r.reasons


def test_no_card_within_the_wait_is_a_clear_error(emulated_board):
    from host_tools.errors import ToolError

    rf = free_udp_port()
    link = board(emulated_board, "a", rf)
    with pytest.raises(ToolError, match="no card presented within 300 ms"):
        run_sale(link, 100, None, wait_ms=300)
    assert link.status()["journal_pending"] == "0"  # no transaction, nothing journalled


# -- the board's own PN532 driver, on every board file, through the emulated PN532 ------------


def rig(emulated_board, name="a", board_file="emulator"):
    rf = free_udp_port()
    emu = emulated_board(name, board=board_file, rf_port=rf)
    link = TerminalLink.open(emu.port, timeout=10)
    push_keys(link, link.keyring)
    link.set_time(NOW)
    link.set_params({"new_card_online": 0, "random_target_pct": 0, "random_max_target_pct": 0})
    return emu, link, rf


def present(link, rf, image, amount, wait_ms=8000, kind="lite-s"):
    """A tap: the card (as `image`) on the field while the POS asks for the sale."""
    from host_tools.cardemu import CardEmulator
    from host_tools.pos import run_sale

    memory = card_memory(image, kind)
    import threading

    with CardEmulator(memory, f"udp:127.0.0.1:{rf}") as card:
        t = threading.Thread(target=lambda: card.serve(taps=1, timeout=30), daemon=True)
        t.start()
        try:
            result = run_sale(link, amount, None, wait_ms=wait_ms)
        finally:
            card.stop()
            t.join(30)
    return result, card_image(memory)


def state(image, ring):
    d = describe(image, ring)
    return d["status"], d["seq"], d["atc"], d["offline_today"]


@pytest.mark.parametrize("board_file", ["emulator", "pico_pn532", "esp32s3_pn532"])
def test_every_board_file_taps_through_its_own_pn532_driver(emulated_board, board_file):
    from host_tools.build import board_values

    emu, link, rf = rig(emulated_board, board_file=board_file)
    image = issue_card("4980000000000001", 1, "credit", link.keyring)
    r, after = present(link, rf, image, 700)
    assert r.outcome == "APPROVED_OFFLINE", r
    assert state(after, link.keyring) == ("ok", 2, 1, 700)
    chip = emu.pn532
    assert chip.bus.kind == board_values(board_file)["NFC_BUS"]
    tap = chip.taps[-1]
    assert tap.complete and not tap.faults
    # after sensing: two reads, two one-block writes, RF off; no RFConfiguration for timings
    names = tap.to_json()["commands"]
    assert names[0] == "InListPassiveTarget" and names[-1] == "RFConfiguration"
    assert names[1:-1].count("InCommunicateThru") == 4
    st = link.status()
    assert st["nfc_reader"] == "ok" and st["nfc_writes"] == "1" and st["nfc_errors"] == "0"
    assert chip.field is False  # the tap ended with the field off


def test_a_garbled_polling_answer_is_asked_again_and_the_sale_goes_on(emulated_board):
    emu, link, rf = rig(emulated_board)
    emu.pn532.inject("garble", count=1, command=0x4A)
    r, _ = present(link, rf, issue_card("4980000000000001", 1, "credit", link.keyring), 500)
    assert r.outcome == "APPROVED_OFFLINE"
    assert link.status()["nfc_nacks"] == "1" and emu.pn532.counts["fault garble"] == 1


def test_answers_garbled_every_time_end_the_sale_cleanly_with_the_field_off(emulated_board):
    from host_tools.errors import ToolError

    emu, link, rf = rig(emulated_board)
    image = issue_card("4980000000000001", 1, "credit", link.keyring)
    emu.pn532.inject("garble", count=-1, command=0x42)  # every read's answer garbled
    with pytest.raises(ToolError, match="no card presented within 1500 ms: the card left or "
                                        "garbled while read"):
        present(link, rf, image, 500, wait_ms=1500)
    assert emu.pn532.field is False
    st = link.status()
    assert int(st["nfc_errors"]) >= 1 and int(st["nfc_resets"]) >= 1  # reset after errors
    assert st["journal_pending"] == "0"  # no transaction
    emu.pn532.clear_faults()
    r, _ = present(link, rf, image, 500)
    assert r.outcome == "APPROVED_OFFLINE" and link.status()["nfc_reader"] == "ok"


@pytest.mark.parametrize("written", [0, 1])
def test_a_card_pulled_away_after_each_block_write(emulated_board, written):
    """The card leaves after `written` of the slot's two block writes: the offline
    approval is declined, the field goes off, the card keeps its old state valid,
    and the next tap goes on from it."""
    emu, link, rf = rig(emulated_board)
    image = issue_card("4980000000000001", 1, "credit", link.keyring)
    r, image = present(link, rf, image, 1000)  # slot B now holds sequence 2
    assert r.outcome == "APPROVED_OFFLINE" and state(image, link.keyring) == ("ok", 2, 1, 1000)
    emu.pn532.inject("remove_after_writes", written)
    r, after = present(link, rf, image, 300)
    assert r.outcome == "DECLINED_OFFLINE" and "card_data_bad" in r.reasons
    assert emu.pn532.field is False and "card removed" in emu.pn532.taps[-1].faults
    assert state(after, link.keyring) == ("ok", 2, 1, 1000)  # the slot it was read from holds
    if written:
        assert after != image  # half of the other slot was written, and is ignored
    r, again = present(link, rf, after, 300)
    assert r.outcome == "APPROVED_OFFLINE", r
    assert state(again, link.keyring) == ("ok", 3, 2, 1300)


def test_a_reader_that_does_not_answer_at_boot(tmp_path, keyring_path):
    """The terminal serves the host link and clearing, shows the reader fault, and
    starts the reader once it answers."""
    from host_tools.emulator import Emulator
    from host_tools.errors import ToolError
    from host_tools.pn532emu import Pn532Emulator
    from host_tools.transfer import pull_batch

    rf = free_udp_port()
    emu = Emulator(flash=tmp_path / "dead.img", rf_port=rf)
    emu.pn532 = Pn532Emulator(rf=f"udp:127.0.0.1:{rf}")
    emu.pn532.inject("silent", count=-1)  # the chip never answers
    emu.start()
    try:
        with TerminalLink.open(emu.port, timeout=10) as link:
            push_keys(link, link.keyring)
            link.set_time(NOW)
            link.set_params({"new_card_online": 0, "random_target_pct": 0,
                             "random_max_target_pct": 0})
            st = link.status()
            assert st["nfc_reader"].startswith("fault: the PN532 does not answer")
            image = issue_card("4980000000000001", 1, "credit", link.keyring)
            with pytest.raises(ToolError, match="card reader fault"):
                run_sale(link, 500, None, wait_ms=300)
            r = run_sale(link, 500, image)  # an injected card image: no reader needed
            assert r.outcome == "APPROVED_OFFLINE"
            image = r.card_image
            assert pull_batch(link).count == 1  # clearing goes on
            emu.pn532.clear_faults()  # the chip answers again: the next sale starts it
            r, _ = present(link, rf, image, 500)
            assert r.outcome == "APPROVED_OFFLINE" and link.status()["nfc_reader"] == "ok"
    finally:
        emu.stop()


def test_a_standard_felica_card_is_not_taken(emulated_board):
    from host_tools.errors import ToolError

    emu, link, rf = rig(emulated_board)
    image = issue_card("4980000000000001", 1, "credit", link.keyring)
    with pytest.raises(ToolError, match="no card presented within 1000 ms"):
        present(link, rf, image, 500, wait_ms=1000, kind="standard")
    assert link.status()["journal_pending"] == "0"


def test_a_nack_or_a_silent_chip_mid_tap_is_resent_or_reset(emulated_board):
    from host_tools.errors import ToolError

    emu, link, rf = rig(emulated_board)
    image = issue_card("4980000000000001", 1, "credit", link.keyring)
    emu.pn532.inject("nack", count=1, command=0x42)  # a NACK where the ACK should be
    r, image = present(link, rf, image, 400)
    assert r.outcome == "APPROVED_OFFLINE" and link.status()["nfc_resends"] == "1"
    # the chip hangs at every read: resends, NfcBusError, a reset (which it answers),
    # until the wait is over: the sale ends saying so, the field off
    emu.pn532.inject("silent", count=-1, command=0x42)
    with pytest.raises(ToolError, match="the PN532 stopped answering and was reset"):
        present(link, rf, image, 400, wait_ms=1500)
    assert emu.pn532.field is False
    st = link.status()
    assert int(st["nfc_resets"]) >= 1 and st["nfc_reader"] == "ok"  # its start() answered
    emu.pn532.clear_faults()
    r, _ = present(link, rf, image, 400)
    assert r.outcome == "APPROVED_OFFLINE"


def test_the_direct_udp_driver_stays_an_explicit_option(emulated_board):
    rf = free_udp_port()
    emu = emulated_board("u", rf_port=rf, rf_driver="udp")
    link = TerminalLink.open(emu.port, timeout=10)
    push_keys(link, link.keyring)
    link.set_time(NOW)
    link.set_params({"new_card_online": 0, "random_target_pct": 0, "random_max_target_pct": 0})
    r, after = present(link, rf, issue_card("4980000000000001", 1, "credit", link.keyring), 600)
    assert r.outcome == "APPROVED_OFFLINE" and emu.pn532 is None  # no chip: nfc_udp.py
    assert state(after, link.keyring) == ("ok", 2, 1, 600)
