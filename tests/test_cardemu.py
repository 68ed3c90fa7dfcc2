"""The host's card emulator: wallets on disk, and nfcpy's own reader tapping the
emulated card over the UDP link (loopback), counters carried between taps and
from one emulator (one terminal's field) to the next."""

import json
import socket
import threading

import pytest

from host_tools.cardemu import CardEmulator, CardMemory, main
from host_tools.errors import ToolError

H = bytes.fromhex
IDM = H("02fe001122334455")
IMAGE = bytes(range(48))


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
    w = CardMemory.create(path, IDM, IMAGE, system_code=0x1234, service_codes=(0x0049,))
    data = json.loads(path.read_text())
    assert data["idm"] == IDM.hex() and data["system_code"] == "1234"
    assert data["blocks"] == [IMAGE[i:i + 16].hex() for i in range(0, 48, 16)]
    back = CardMemory.load(path)
    assert (back.idm, back.pmm, back.image, back.service_codes) == (
        w.idm, w.pmm, IMAGE, (0x0049,))
    assert back.sensf_res == b"\x01" + IDM + w.pmm + b"\x12\x34"


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


# -- taps with nfcpy's own reader ---------------------------------------------------------


def test_nfcpy_reader_reads_and_writes_and_the_wallet_keeps_it(tmp_path):
    path = tmp_path / "card.json"
    CardMemory.create(path, IDM, IMAGE)
    written = []
    with CardEmulator(CardMemory.load(path), "udp:127.0.0.1:0", on_write=written.append) as emu:
        assert emu.clf.device.addr[0] == "127.0.0.1"
        t, served = serving(emu)
        sensf_res, data = nfcpy_reader_tap(emu.port, write=((1, 2), b"\x77" * 32))
        t.join(10)
    assert served == [1]
    assert sensf_res[:9] == b"\x01" + IDM
    assert data == IMAGE
    assert CardMemory.load(path).image == IMAGE[:16] + b"\x77" * 32
    assert written == [IMAGE[:16] + b"\x77" * 32]  # one write command, two blocks
    assert CardMemory.load(path).taps == 1

    # the same card at another terminal: a new emulator on another port, same wallet
    with CardEmulator(CardMemory.load(path), "udp:127.0.0.1:0") as emu2:
        t, served = serving(emu2)
        _, data = nfcpy_reader_tap(emu2.port, read_blocks=(1, 2), service=0x0009)
        t.join(10)
    assert data == b"\x77" * 32
    assert CardMemory.load(path).taps == 2


def test_card_listens_on_loopback_only(tmp_path):
    with CardEmulator(CardMemory(IDM, IMAGE), "udp:127.0.0.1:0") as emu:
        t, served = serving(emu, timeout=3)
        bound = listening(emu)
        nfcpy_reader_tap(emu.port)
        t.join(5)
    assert bound == ("127.0.0.1", emu.port)  # nfcpy alone would bind 0.0.0.0


def test_serves_n_taps_and_a_poll_without_read_does_not_count(tmp_path):
    with CardEmulator(CardMemory(IDM, IMAGE), "udp:127.0.0.1:0") as emu:
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
    assert served == [2] and emu.taps == 2 and emu.reads == 4


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
    assert CardMemory.load(path).image == IMAGE
    assert main([str(tmp_path / "none.json")]) == 1
    assert "no such wallet" in capsys.readouterr().err
