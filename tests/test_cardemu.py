"""The host's card emulator: wallets on disk, the FeliCa Lite-S and standard card
rules answered frame by frame, and nfcpy's own reader tapping the emulated card
over the UDP link (loopback), counters carried between taps and from one
emulator (one terminal's field) to the next."""

import json
import socket
import threading

import pytest

from host_tools.cardemu import SLOW_PMM, CardEmulator, CardMemory, FelicaCard, main
from host_tools.errors import ToolError

H = bytes.fromhex
IDM = H("02fe001122334455")
IMAGE = bytes(range(48))
LITE_S_PMM = H("00f1000000014300")  # RC-S966, as a real card answers a polling


def slow_card(**kw):
    # nfcpy's Type3Tag waits what PMm announces in wall time: give it 155 ms
    return CardMemory(IDM, IMAGE, pmm=SLOW_PMM, **kw)


def nfcpy_reader_tap(port, read_blocks=(0, 1, 2), write=None, service=0x000B):
    """One tap by nfcpy's reader: sense, read (and write) blocks, then RFOFF."""
    import nfc
    import nfc.clf
    from nfc.tag.tt3 import BlockCode, ServiceCode, Type3Tag

    clf = nfc.ContactlessFrontend("udp:127.0.0.1:%d" % port)
    try:
        target = None
        for _ in range(50):
            target = clf.sense(nfc.clf.RemoteTarget("212F"), iterations=1)
            if target is not None:
                break
        assert target is not None, "card not sensed"
        tag = Type3Tag(clf, target)
        data = tag.read_without_encryption([ServiceCode(service >> 6, service & 0x3F)],
                                           [BlockCode(b) for b in read_blocks])
        if write is not None:
            blocks, payload = write
            tag.write_without_encryption([ServiceCode(0, 0x09)],
                                         [BlockCode(b) for b in blocks], payload)
        return bytes(target.sensf_res), bytes(data)
    finally:
        clf.close()  # sends RFOFF: the emulator's session ends at once


def listening(emu):
    """Where the card's socket is bound, once serve() has it listening (or None)."""
    for _ in range(200):
        sock = emu.clf.device.socket
        try:
            bound = sock.getsockname() if sock else None
        except OSError:
            bound = None
        if bound and bound[1]:
            return bound
        threading.Event().wait(0.005)
    return None


def serving(emu, taps=1, timeout=10):
    # nfcpy's reader waits 1 s for a polling answer: tap once the card listens
    result = []
    t = threading.Thread(target=lambda: result.append(emu.serve(taps, timeout)), daemon=True)
    t.start()
    listening(emu)
    return t, result


# -- wallets ---------------------------------------------------------------------------


def test_wallet_round_trips_through_json(tmp_path):
    path = tmp_path / "w" / "card.json"
    w = CardMemory.create(path, IDM, IMAGE, system_code=0x1234, service_codes=(0x0049,),
                          kind="standard")
    data = json.loads(path.read_text())
    assert data["idm"] == IDM.hex() and data["system_code"] == "1234"
    assert data["card"] == "standard"
    assert data["blocks"] == [IMAGE[i:i + 16].hex() for i in range(0, 48, 16)]
    back = CardMemory.load(path)
    assert (back.idm, back.pmm, back.image, back.service_codes, back.kind) == (
        w.idm, w.pmm, IMAGE, (0x0049,), "standard")
    assert back.sensf_res == b"\x01" + IDM + w.pmm + b"\x12\x34"
    lite = CardMemory(IDM, IMAGE)  # a Lite-S: 88B4, its PMm, all 14 user blocks
    assert (lite.system_code, lite.pmm, len(lite.image)) == (0x88B4, LITE_S_PMM, 14 * 16)


@pytest.mark.parametrize("content, message", [
    (None, "no such wallet"),
    ("{", "not a wallet"),
    ('{"format": 2}', "format 1"),
    ('{"format": 1, "blocks": [], "idm": "02fe"}', "idm: 2 bytes"),
    ('{"format": 1}', "missing or bad"),
])
def test_bad_wallet_files(tmp_path, content, message):
    path = tmp_path / "card.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ToolError, match=message):
        CardMemory.load(path)


def test_wallet_refuses_bad_cards():
    with pytest.raises(ToolError, match="8 bytes"):
        CardMemory(IDM[:7], IMAGE)
    with pytest.raises(ToolError, match="multiple of 16"):
        CardMemory(IDM, IMAGE[:40])
    with pytest.raises(ToolError, match="without key"):
        CardMemory(IDM, IMAGE, service_codes=(0x0008,))  # random access *with* key
    with pytest.raises(ToolError, match="14 user blocks"):
        CardMemory(IDM, bytes(15 * 16))
    with pytest.raises(ToolError, match="card type"):
        CardMemory(IDM, IMAGE, kind="ultralight")


# -- the card's rules, frame by frame ------------------------------------------------------


def cmd(code, services, blocks, data=b"", idm=IDM):
    body = bytes([code]) + idm + bytes([len(services)])
    for sc in services:
        body += sc.to_bytes(2, "little")
    body += bytes([len(blocks)])
    for b in blocks:
        body += bytes([0x80, b]) if b < 256 else b"\x00" + b.to_bytes(2, "little")
    body += data
    return bytes([len(body) + 1]) + body


def status(rsp):
    return rsp[10], rsp[11]


def test_lite_s_reads_at_most_four_blocks():
    card = FelicaCard(CardMemory(IDM, IMAGE))
    rsp = card.process(cmd(0x06, [0x000B], [0, 1, 2, 3]))
    assert status(rsp) == (0, 0) and rsp[12] == 4 and rsp[13:] == IMAGE + bytes(16)
    assert status(card.process(cmd(0x06, [0x000B], [0, 1, 2, 3, 4]))) == (0xFF, 0xA2)
    assert status(card.process(cmd(0x06, [0x000B, 0x0009], [0]))) == (0xFF, 0xA1)
    assert status(card.process(cmd(0x06, [0x1009], [0]))) == (0xFF, 0xA6)


def test_lite_s_writes_one_block_and_counts_it():
    m = CardMemory(IDM, IMAGE)
    card = FelicaCard(m)
    assert status(card.process(cmd(0x08, [0x0009], [5], b"\x55" * 16))) == (0, 0)
    assert m.block(5) == b"\x55" * 16 and m.wcnt == 1
    # two plain blocks in one command: refused, nothing written
    assert status(card.process(cmd(0x08, [0x0009], [1, 2], b"\x66" * 32))) == (0xFF, 0xA2)
    assert m.block(1) == IMAGE[16:32] and m.wcnt == 1
    # the one two-block write is data + MAC_A, which needs a session: its MAC fails
    assert status(card.process(cmd(0x08, [0x0009], [1, 0x91], b"\x66" * 32))) == (0x02, 0xB2)
    # through the read-only service, or to a system block: refused
    assert status(card.process(cmd(0x08, [0x000B], [1], b"\x66" * 16))) == (0x01, 0xA5)
    for block in (0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x90):  # ID .. CK, WCNT
        assert status(card.process(cmd(0x08, [0x0009], [block], bytes(16)))) == (0x01, 0xA8)
    assert m.block(1) == IMAGE[16:32] and m.wcnt == 1
    wcnt = card.process(cmd(0x06, [0x000B], [0x90]))
    assert wcnt[13:16] == b"\x01\x00\x00"


def test_lite_s_system_blocks_read_as_the_manual_maps_them():
    card = FelicaCard(CardMemory(IDM, IMAGE))
    rsp = card.process(cmd(0x06, [0x000B], [0x83, 0x85]))  # D_ID, SYS_C
    assert rsp[13:29] == IDM + LITE_S_PMM and rsp[29:31] == b"\x88\xb4"
    assert status(card.process(cmd(0x06, [0x000B], [0x80]))) == (0x01, 0xA8)  # RC: write only
    assert status(card.process(cmd(0x06, [0x000B], [0x87]))) == (0x01, 0xA8)  # CK: never read
    assert status(card.process(cmd(0x06, [0x000B], [0, 0x81]))) == (0x02, 0xB2)  # MAC: session


def test_polling_answers_its_system_only_and_another_idm_gets_nothing():
    card = FelicaCard(CardMemory(IDM, IMAGE))
    assert card.process(H("0600ffff0100")) == bytes([20, 1]) + IDM + LITE_S_PMM + H("88b4")
    assert card.process(H("060088b40000")) == bytes([18, 1]) + IDM + LITE_S_PMM
    assert card.process(H("0600ff030100")) is None  # another system
    assert card.process(cmd(0x06, [0x000B], [0], idm=H("0123456789abcdef"))) is None


def test_a_standard_card_takes_many_blocks_and_has_its_own_system():
    m = CardMemory(IDM, bytes(16 * 16), kind="standard")
    card = FelicaCard(m)
    assert m.system_code == 0x0003 and m.pmm != LITE_S_PMM
    assert card.process(H("060088b40100")) is None  # not a Lite-S: no answer for 88B4
    assert card.process(H("0600ffff0100"))[-2:] == b"\x00\x03"
    assert status(card.process(cmd(0x08, [0x0009], list(range(8)), b"\x11" * 128))) == (0, 0)
    assert m.image[:128] == b"\x11" * 128
    assert card.process(cmd(0x06, [0x000B], list(range(15))))[12] == 15
    assert status(card.process(cmd(0x06, [0x000B], list(range(16))))) == (0xFF, 0xA2)
    assert status(card.process(cmd(0x08, [0x0009], list(range(12)), bytes(192)))) == (
        0xFF, 0xA2)


# -- taps with nfcpy's own reader ---------------------------------------------------------


def test_nfcpy_reader_reads_and_writes_and_the_wallet_keeps_it(tmp_path):
    path = tmp_path / "card.json"
    CardMemory.create(path, IDM, IMAGE, pmm=SLOW_PMM)
    written = []
    with CardEmulator(CardMemory.load(path), "udp:127.0.0.1:0", on_write=written.append) as emu:
        assert emu.clf.device.addr[0] == "127.0.0.1"
        t, served = serving(emu)
        sensf_res, data = nfcpy_reader_tap(emu.port, write=((1,), b"\x77" * 16))
        t.join(10)
    assert served == [1]
    assert sensf_res[:9] == b"\x01" + IDM
    assert data == IMAGE
    after = IMAGE[:16] + b"\x77" * 16 + IMAGE[32:] + bytes(11 * 16)
    assert CardMemory.load(path).image == after
    assert written == [after]  # one write command, one block
    assert CardMemory.load(path).taps == 1

    # the same card at another terminal: a new emulator on another port, same wallet
    with CardEmulator(CardMemory.load(path), "udp:127.0.0.1:0") as emu2:
        t, served = serving(emu2)
        _, data = nfcpy_reader_tap(emu2.port, read_blocks=(1, 2), service=0x0009)
        t.join(10)
    assert data == b"\x77" * 16 + IMAGE[32:]
    assert CardMemory.load(path).taps == 2


def test_nfcpy_reader_gets_the_lite_s_refusal_of_a_two_block_write(tmp_path):
    import nfc.tag.tt3

    with CardEmulator(slow_card(), "udp:127.0.0.1:0") as emu:
        t, served = serving(emu)
        with pytest.raises(nfc.tag.tt3.Type3TagCommandError) as e:
            nfcpy_reader_tap(emu.port, write=((1, 2), b"\x77" * 32))
        t.join(10)
    assert e.value.errno == 0xFFA2  # status flags FF A2: illegal number of blocks
    assert emu.refused == [(0x08, 0xFF, 0xA2)] and emu.writes == 0


def test_card_listens_on_loopback_only(tmp_path):
    with CardEmulator(slow_card(), "udp:127.0.0.1:0") as emu:
        t, served = serving(emu, timeout=3)
        bound = listening(emu)
        nfcpy_reader_tap(emu.port)
        t.join(5)
    assert bound == ("127.0.0.1", emu.port)  # nfcpy alone would bind 0.0.0.0


def test_serves_n_taps_and_a_poll_without_read_does_not_count(tmp_path):
    with CardEmulator(slow_card(), "udp:127.0.0.1:0") as emu:
        t, served = serving(emu, taps=2)
        import nfc
        import nfc.clf

        clf = nfc.ContactlessFrontend("udp:127.0.0.1:%d" % emu.port)
        for _ in range(50):  # a reader that only polls, then leaves
            if clf.sense(nfc.clf.RemoteTarget("212F"), iterations=1):
                break
        clf.close()
        nfcpy_reader_tap(emu.port)
        assert t.is_alive()  # one reading tap so far
        nfcpy_reader_tap(emu.port, read_blocks=(2,))
        t.join(10)
    assert served == [2] and emu.taps == 2 and emu.reads == 2  # read commands


def test_serve_gives_up_after_timeout_and_stop():
    with CardEmulator(CardMemory(IDM, IMAGE), "udp:127.0.0.1:0") as emu:
        assert emu.serve(taps=1, timeout=0.2) == 0
        emu.stop()
        assert emu.serve(taps=1) == 0


def test_unknown_device_is_a_tool_error():
    with pytest.raises(ToolError, match="no NFC device"):
        CardEmulator(CardMemory(IDM, IMAGE), "tty:ZZ_no_such_port").open()
    with pytest.raises(ToolError, match="212F or 424F"):
        CardEmulator(CardMemory(IDM, IMAGE), brty="106A")


def test_command_line_makes_a_wallet_and_reports(tmp_path, capsys):
    path = tmp_path / "card.json"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main([str(path), "--device", "udp:127.0.0.1:%d" % port, "--timeout", "0.2",
                 "--idm", IDM.hex(), "--image", IMAGE.hex()])
    out = capsys.readouterr().out.splitlines()
    assert code == 1  # nobody tapped
    assert json.loads(out[0]) == {"port": port, "idm": IDM.hex()}
    assert json.loads(out[1])["taps"] == 0
    assert CardMemory.load(path).image[:48] == IMAGE
    assert main([str(tmp_path / "none.json")]) == 1
    assert "no such wallet" in capsys.readouterr().err


def test_a_card_says_and_keeps_the_bit_rates_it_speaks(tmp_path):
    # Polling with request code 2 (communication performance): bit 0 212 kbps, bit 1
    # 424, bit 7 automatic rate detection; the rates travel in the wallet file.
    both = CardMemory.create(tmp_path / "a.json", IDM, IMAGE)
    only = CardMemory.create(tmp_path / "b.json", IDM, IMAGE, kbps=(212,))
    assert FelicaCard(both).process(bytes.fromhex("0600ffff0200"))[-2:] == b"\x00\x83"
    assert FelicaCard(only).process(bytes.fromhex("0600ffff0200"))[-2:] == b"\x00\x01"
    assert CardMemory.load(tmp_path / "a.json").kbps == (212, 424)
    assert CardMemory.load(tmp_path / "b.json").kbps == (212,)
    with pytest.raises(ToolError, match="212 and optionally 424"):
        CardMemory(IDM, IMAGE, kbps=(424,))
    with pytest.raises(ToolError, match="listens at 212F, not 424F"):
        CardEmulator(only, brty="424F")
