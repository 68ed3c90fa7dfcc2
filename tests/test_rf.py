"""Cards over RF on the emulated board: nfcpy emulates the FeliCa card on its
UDP link, the firmware reads the record with Read Without Encryption, decides,
writes the counters back; the card carries them to the next terminal."""

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
