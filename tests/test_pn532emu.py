"""The emulated PN532 (host_tools/pn532emu.py) as a host sees it on its UART:
the datasheet's frames and answers, the syntax-error frame for what a chip
rejects, ACK/NACK handling, wake-up, faults; its RF side reaching an nfcpy
card; and the time model's figures against hand-worked ones."""

import os
import select
import time

import pytest

from host_tools.cardemu import CardEmulator, CardMemory
from host_tools.pn532emu import (
    ACK,
    ERROR_FRAME,
    NACK,
    BusModel,
    FrameParser,
    Pn532Emulator,
    card_response_us,
    frame,
    rf_frame_us,
    timeout_us,
)

H = bytes.fromhex
WAKE = b"\x55\x55" + bytes(14)
GET_FIRMWARE_VERSION = H("0000ff02fed4022a00")  # UM0701-02 section 7.2.2
FIRMWARE_VERSION = H("0000ff06fad50332010607e800")
IDM = H("02fe001122334455")


class Host:
    """The firmware's end of the pty, raw bytes in and out."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)

    def send(self, data):
        os.write(self.fd, data)

    def recv(self, wait=1.0, quiet=0.15):
        """Everything the chip sends until it is quiet for `quiet` seconds."""
        out = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.fd], [], [], quiet if out else
                                    max(0.0, deadline - time.monotonic()))
            if not r:
                if out:
                    break
                continue
            out += os.read(self.fd, 1024)
        return out

    def command(self, cmd, params=b""):
        self.send(frame(bytes([0xD4, cmd]) + params))
        return self.recv()

    def close(self):
        os.close(self.fd)


@pytest.fixture
def chip():
    emu = Pn532Emulator()
    host = Host(emu.start())
    host.send(WAKE)
    yield emu, host
    host.close()
    emu.stop()


def test_get_firmware_version_is_the_datasheets(chip):
    _, host = chip
    host.send(GET_FIRMWARE_VERSION)
    assert host.recv() == ACK + FIRMWARE_VERSION


def test_asleep_until_the_hsu_wake_up():
    emu = Pn532Emulator()
    host = Host(emu.start())
    try:
        host.send(GET_FIRMWARE_VERSION)
        assert host.recv(wait=0.4) == b""  # after power-up the chip sleeps (LowVbat)
        host.send(WAKE + GET_FIRMWARE_VERSION)
        assert host.recv() == ACK + FIRMWARE_VERSION
    finally:
        host.close()
        emu.stop()


def test_an_extended_frame_is_understood(chip):
    _, host = chip
    data = b"\xd4\x02"
    ext = b"\x00\x00\xff\xff\xff\x00\x02\xfe" + data + bytes([(-sum(data)) & 0xFF, 0])
    host.send(ext)
    assert host.recv() == ACK + FIRMWARE_VERSION
    assert frame(bytes(300))[:8] == H("0000ffffff012cd3")  # and built above 255 bytes


@pytest.mark.parametrize("bad", [
    H("0000ff02fdd4022a00"),  # LEN + LCS != 0
    H("0000ff02fed4022b00"),  # TFI + data + DCS != 0
])
def test_a_frame_with_a_wrong_checksum_is_ignored(chip, bad):
    emu, host = chip
    host.send(bad)
    assert host.recv(wait=0.4) == b""  # no ACK: the host resends
    assert emu.counts["bad frame"] == 1
    host.send(GET_FIRMWARE_VERSION)
    assert host.recv() == ACK + FIRMWARE_VERSION


@pytest.mark.parametrize("cmd, params", [
    (0x7E, b""),  # no such command
    (0x02, b"\x00"),  # GetFirmwareVersion takes nothing
    (0x14, b"\x00\x14"),  # SAMConfiguration mode 0
    (0x32, b"\x01"),  # RFConfiguration item 1 without its byte
    (0x32, b"\x03\x00"),  # no item 3
    (0x4A, b"\x03\x01\x00\xff\xff\x01\x00"),  # MaxTg 3
    (0x4A, b"\x01\x05"),  # BrTy 5
    (0x4A, b"\x01\x01\x00\xff\xff"),  # a FeliCa polling payload of 3 bytes
])
def test_what_a_chip_rejects_gets_ack_then_the_syntax_error_frame(chip, cmd, params):
    _, host = chip
    assert host.command(cmd, params) == ACK + ERROR_FRAME


def test_nack_has_the_last_response_sent_again(chip):
    _, host = chip
    host.send(GET_FIRMWARE_VERSION)
    assert host.recv() == ACK + FIRMWARE_VERSION
    host.send(NACK)
    assert host.recv() == FIRMWARE_VERSION


def test_no_card_no_field_no_rf_port(chip):
    _, host = chip
    # InListPassiveTarget 212F after MxRtyPassiveActivation = 1: no target found
    assert host.command(0x32, b"\x05\xff\x01\x01") == ACK + frame(b"\xd5\x33")
    assert host.command(0x4A, H("0101" "00ffff0100")) == ACK + frame(b"\xd5\x4b\x00")
    # InCommunicateThru to nobody: status 01, timeout
    assert host.command(0x42, H("0600ffff0100")) == ACK + frame(b"\xd5\x43\x01")


def test_faults_silent_nack_garble_no_response(chip):
    emu, host = chip
    emu.inject("silent")
    host.send(GET_FIRMWARE_VERSION)
    assert host.recv(wait=0.4) == b""
    emu.inject("nack")
    host.send(GET_FIRMWARE_VERSION)
    assert host.recv() == NACK
    emu.inject("garble", command=0x02)
    host.send(GET_FIRMWARE_VERSION)
    got = host.recv()
    assert got[:6] == ACK and got[6:] != FIRMWARE_VERSION and len(got) == 6 + 13
    host.send(NACK)  # the host asks again: the chip's own (good) response
    assert host.recv() == FIRMWARE_VERSION
    emu.inject("no_response")
    host.send(GET_FIRMWARE_VERSION)
    assert host.recv(wait=0.4) == ACK
    host.send(GET_FIRMWARE_VERSION)
    assert host.recv() == ACK + FIRMWARE_VERSION  # one fault each, then the chip is well


def test_parser_finds_frames_acks_and_wake_ups_in_a_stream():
    p = FrameParser()
    events = p.feed(b"\x55\x55\x00\x00" + ACK + GET_FIRMWARE_VERSION[:5])
    assert events == [("wake",), ("wake",), ("ack",)]
    assert p.feed(GET_FIRMWARE_VERSION[5:] + NACK) == [("frame", b"\xd4\x02"), ("nack",)]


# -- the RF side: an nfcpy card on the UDP link ---------------------------------------------


@pytest.mark.parametrize("kbps,brty", [((212, 424), 2), ((212, 424), 1), ((212,), 1)])
def test_felica_read_through_the_chip_to_an_nfcpy_card(kbps, brty):
    # over nfcpy's UDP link, at 424 kbps (BrTy 2: datagrams "424F ...") or 212 (BrTy 1)
    import threading

    image = bytes(range(96))
    with CardEmulator(CardMemory(IDM, image, kbps=kbps), "udp:127.0.0.1:0") as card:
        t = threading.Thread(target=card.serve, args=(1, 10), daemon=True)
        t.start()
        emu = Pn532Emulator(rf=f"udp:127.0.0.1:{card.port}")
        host = Host(emu.start())
        try:
            host.send(WAKE)
            assert host.command(0x32, b"\x05\xff\x01\x01") == ACK + frame(b"\xd5\x33")
            polled = b""
            for _ in range(40):  # until the card's listen() is up
                polled = host.command(0x4A, bytes([1, brty]) + H("0088b40100"))
                if polled[6 + 7] == 1:
                    break
            # NbTg 1, Tg 1, POL_RES: 20, 01, IDm, PMm (a Lite-S's), system code 88B4
            assert polled == ACK + frame(H("d54b0101" "1401") + IDM
                                         + H("00f1000000014300" "88b4"))
            read = bytes([14 + 2 * 4, 0x06]) + IDM + H("010b0004" "8000800180028003")
            rsp = host.command(0x42, read)
            assert rsp[:6] == ACK and rsp[6 + 7] == 0x00  # status OK
            assert rsp[6 + 8:-2] == bytes([13 + 64, 0x07]) + IDM + H("000004") + image[:64]
            assert host.command(0x32, b"\x01\x00") == ACK + frame(b"\xd5\x33")  # RF off
            t.join(10)
        finally:
            host.close()
            emu.stop()
    tap = emu.taps[-1]
    assert tap.complete and [c.cmd for c in tap.commands] == [0x4A, 0x42, 0x32]
    assert not t.is_alive()  # the card took the RFOFF: its session (one tap) is over
    k = 424 if brty == 2 else 212
    assert tap.commands[1].rf_us == pytest.approx(rf_frame_us(22, k) + 302.1 * 6
                                                  + rf_frame_us(77, k))


def test_a_card_that_speaks_212_only_is_silent_to_a_424_polling():
    import threading

    with CardEmulator(CardMemory(IDM, bytes(96), kbps=(212,)), "udp:127.0.0.1:0") as card:
        t = threading.Thread(target=card.serve, args=(1, 5), daemon=True)
        t.start()
        emu = Pn532Emulator(rf=f"udp:127.0.0.1:{card.port}")
        host = Host(emu.start())
        try:
            host.send(WAKE)
            assert host.command(0x32, b"\x05\xff\x01\x01") == ACK + frame(b"\xd5\x33")
            for _ in range(40):  # until the card's listen() is up: a 212 polling answers
                if host.command(0x4A, H("0101" "0088b40100"))[6 + 7] == 1:
                    break
            # NbTg 0 after the chip's 2 tries (MxRtyPassiveActivation 1), each waited for
            host.send(frame(H("d44a" "0102" "0088b40100")))
            assert host.recv(wait=3.0, quiet=1.0) == ACK + frame(H("d54b00"))
            assert host.command(0x32, b"\x01\x00") == ACK + frame(b"\xd5\x33")
        finally:
            card.stop()
            host.close()
            emu.stop()


# -- the time model -------------------------------------------------------------------------


def test_rf_and_card_times_by_hand():
    # a 4-block read frame (22 bytes + 10 of framing) at 212 kbps: 32 * 8 / 211.875 kbit/s
    assert rf_frame_us(22) == pytest.approx(1208.26, abs=0.01)
    read4 = bytes([22, 0x06]) + IDM + H("010b0004" "8000800180028003")
    # Lite-S PMm[5] = 01: 0.3021 ms x (4 + 2); PMm[6] = 43: 0.3021 ms x (1 + 4) x 4
    pmm = H("00f1000000014300")
    assert card_response_us(read4, pmm) == pytest.approx(1812.6)
    write1 = bytes([32, 0x08]) + IDM + H("010900018002") + bytes(16)
    assert card_response_us(write1, pmm) == pytest.approx(6042.0)
    assert timeout_us(8) == 12800 and timeout_us(0) == float("inf")


def test_bus_bytes_per_command_as_the_links_move_them():
    # GetFirmwareVersion: a 9-byte frame, a 13-byte answer
    i2c = BusModel("i2c", 400_000)
    t, transactions, nbytes = i2c.command(9, 13, 0, "typical")
    # write (addr + 9), poll (addr + status), ACK read (addr + status + 6),
    # poll, response read (addr + status + 13)
    assert (transactions, nbytes) == (5, 10 + 2 + 8 + 2 + 15)
    assert t == pytest.approx(sum(2 / 0.4 + 9 * (n + 1) / 0.4 for n in (9, 1, 7, 1, 14)))
    uart = BusModel("uart", 115_200)
    assert uart.command(9, 13, 0, "typical")[2] == 9 + 6 + 13


def test_the_model_counts_the_bytes_the_boards_i2c_link_really_moves():
    """The firmware's own drivers on an I2C bus to the chip, in process: what the wire
    carried for each command is what the time model charged it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))
    from drivers.cardsource import FelicaCards
    from drivers.pn532 import Pn532
    from drivers.pn532_i2c import I2CLink
    from host_tools.cardemu import FelicaCard
    from host_tools.pn532emu import I2CBus, LocalField
    from terminal import card as C

    keys = C.IssuerKeys(1)
    keys.add(1, 1, bytes(16))
    rec = C.CardRecord()
    rec.set_token(b"4980000000000001")
    rec.set_idm(IDM)
    rec.issuer_id, rec.product, rec.key_version, rec.expiry_day = 1, 1, 1, 30000
    C.seal(rec, keys)
    image = bytearray(C.RECORD_LEN)
    C.encode_into(rec, image)
    chip = Pn532Emulator(rf=LocalField(FelicaCard(CardMemory(IDM, bytes(image[8:])))),
                         bus=BusModel("i2c", 400_000))
    bus = I2CBus(chip)
    cards = FelicaCards(Pn532(I2CLink(bus)))
    assert cards.start()
    for _ in range(2):
        n0, t0, b0 = len(chip.charged), bus.transactions, bus.bytes
        raw = bytearray(C.RECORD_LEN)
        assert cards.read(raw, 100)
        got = C.CardRecord()
        assert C.read_into(raw, got, keys) == C.CARD_OK
        C.seal(got, keys)
        C.encode_into(got, raw)
        assert cards.write(raw, got.slot)
        cards.release()
        charged = list(chip.charged)[n0:]
        assert sum(c.transactions for c in charged) == bus.transactions - t0
        assert sum(c.bus_bytes for c in charged) == bus.bytes - b0
    # the warm tap: field on, polling, two reads, two one-block writes, field off
    assert [c.cmd for c in charged] == [0x32, 0x4A, 0x42, 0x42, 0x42, 0x42, 0x32]
    assert bus.bytes - b0 <= 600  # 999 before reads of the expected frame


@pytest.mark.parametrize("kbps,answered,polls", [
    ((212, 424), "424F", [2]),  # a Lite-S answers the 424 polling: read and written at 424
    ((212,), "212F", [2, 1]),  # a 212-only card is silent at 424: the 212 polling finds it
])
def test_the_terminal_polls_424_first_and_falls_back_to_212(kbps, answered, polls):
    """The board's polling order (NFC_FELICA_KBPS, 424 then 212) on the firmware's own
    drivers: the card is read at the fastest rate it answers, and the emulated chip
    charges every frame of the tap at that rate (JIS X 6319-4's 211.875/423.75 kbit/s)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))
    from drivers.cardsource import FelicaCards
    from drivers.pn532 import Pn532
    from drivers.pn532_i2c import I2CLink
    from host_tools.build import board_values
    from host_tools.cardemu import FelicaCard
    from host_tools.pn532emu import I2CBus, LocalField, rf_frame_us

    assert board_values("pico_pn532")["NFC_FELICA_KBPS"] == (424, 212)
    image = bytes(range(96))
    chip = Pn532Emulator(rf=LocalField(FelicaCard(CardMemory(IDM, image, kbps=kbps))),
                         bus=BusModel("i2c", 400_000))
    bus = I2CBus(chip)
    cards = FelicaCards(Pn532(I2CLink(bus)), rates=(424, 212))
    assert cards.start()
    n0 = len(chip.charged)
    raw = bytearray(104)
    assert cards.read(raw, 100)
    assert chip.brty == answered and cards.kbps == int(answered[:3])
    assert cards.write(raw, 0)
    cards.release()
    assert raw[8:] == image[:96]
    charged = list(chip.charged)[n0:]
    # the polling rounds: one InListPassiveTarget per rate tried, 424 (BrTy 2) first
    assert len([c for c in charged if c.cmd == 0x4A]) == len(polls)
    read1 = [c for c in chip.taps[-1].commands if c.cmd == 0x42][0]  # blocks 0-3 read
    k = int(answered[:3])
    card_us = 302.1 * ((0 + 1) * 4 + 1 + 1)  # PMm[5] = 01: E 0, B 0, A 1
    assert read1.rf_us == pytest.approx(rf_frame_us(22, k) + card_us + rf_frame_us(77, k))
