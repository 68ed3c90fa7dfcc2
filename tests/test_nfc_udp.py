"""The emulated board's RF: the UDP link driver under the unix port against a
real nfcpy card emulator on loopback, and the datagrams themselves against a
plain socket that plays the card."""

import socket
import threading

import pytest

from drivers.nfc_udp import NfcUdp
from host_tools.cardemu import CardEmulator, CardMemory
from terminal.errors import NfcProtocolError, NfcTimeout

H = bytes.fromhex
IDM = H("02fe001122334455")
IMAGE = bytes(range(48))


@pytest.fixture
def card(tmp_path):
    """An nfcpy-emulated FeliCa card on 127.0.0.1 (a free port), served in a thread."""
    wallet = CardMemory.create(tmp_path / "card.json", IDM, IMAGE)
    emu = CardEmulator(wallet, "udp:127.0.0.1:0").open()
    threads = []

    def serve(taps=1, timeout=15):
        t = threading.Thread(target=emu.serve, args=(taps, timeout), daemon=True)
        t.start()
        threads.append(t)
        return t

    emu.start = serve
    yield emu
    emu.stop()
    for t in threads:
        t.join(5)
    emu.close()


TAP = r'''
import micropython
from drivers.nfc_udp import NfcUdp
from drivers.felica import Felica
nfc = NfcUdp("127.0.0.1", PORT)
card = Felica(nfc)
out = bytearray(48)
data = memoryview(bytearray(b"\xbb" * 16))
polls = [0]
def tap():
    s = None
    while s is None:
        polls[0] += 1
        s = nfc.sense_ttf(0xFFFF)
    card.activate(s)
    card.read_without_encryption(0x000B, b"\x00\x01\x02", out)
    card.write_without_encryption(0x0009, b"\x01", data)  # a Lite-S: one block a write
    card.write_without_encryption(0x0009, b"\x02", data)
    nfc.rf_off()
    return s
'''


def test_tap_under_unix_port_allocates_nothing_once_warm(mpy, mpydir, card):
    served = card.start(taps=2)
    code = "import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + TAP.replace(
        "PORT", str(card.port)) + r'''
first = bytes(tap()).hex()
result = "ALLOCATES"
micropython.heap_lock()
try:
    tap()
    result = "no-allocation"
except MemoryError:
    pass
micropython.heap_unlock()
print(result, first, bytes(out).hex())
'''
    result, sensf_res, data = mpy(code, heap="64k").split()
    served.join(5)  # the second tap ends when the card has taken the RFOFF
    assert result == "no-allocation"
    assert sensf_res == "01" + IDM.hex() + card.wallet.pmm.hex() + "88b4"
    assert data == (IMAGE[:16] + b"\xbb" * 32).hex()  # the second read saw the first write
    assert card.taps == 2
    assert CardMemory.load(card.wallet.path).image[:48] == IMAGE[:16] + b"\xbb" * 32


def test_polling_with_another_system_code_finds_no_card(mpy, mpydir, card):
    card.start(taps=1, timeout=5)
    code = "import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + r'''
from drivers.nfc_udp import NfcUdp
nfc = NfcUdp("127.0.0.1", %d)
seen = None
for i in range(40):
    seen = nfc.sense_ttf(0x88B4)
    if seen is not None:
        break
other = nfc.sense_ttf(0x1234, timeout_ms=50)
print(seen is not None, other)
''' % card.port
    assert mpy(code).split() == ["True", "None"]


def test_nobody_listening_is_no_card(mpy, mpydir):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: ICMP port unreachable
    code = "import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + r'''
from drivers.nfc_udp import NfcUdp
from terminal.errors import NfcTimeout
nfc = NfcUdp("127.0.0.1", %d)
a = nfc.sense_ttf()
b = nfc.sense_ttf()
try:
    nfc.exchange(b"\x06\x00\xff\xff\x01\x00", 5)
    c = "answered"
except NfcTimeout:
    c = "timeout"
print(a, b, c)
''' % port
    assert mpy(code).split() == ["None", "None", "timeout"]


def test_iso14443a_uid_from_nfcpy_listener(mpy, mpydir):
    import nfc
    import nfc.clf

    clf = nfc.ContactlessFrontend()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert clf.open("udp:127.0.0.1:%d" % port)
    CardEmulator._bind_loopback(clf.device)
    target = nfc.clf.LocalTarget("106A")
    target.sens_res = H("4400")
    target.sdd_res = H("04112233445566")  # 7-byte UID: two cascade levels
    target.sel_res = H("00")
    t = threading.Thread(target=clf.listen, args=(target, 1.0), daemon=True)
    t.start()
    code = "import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + r'''
from drivers.nfc_udp import NfcUdp
nfc = NfcUdp("127.0.0.1", %d)
uid = None
for i in range(50):
    uid = nfc.sense_tta()
    if uid is not None:
        break
nfc.rf_off()
print(bytes(uid).hex())
''' % port
    try:
        assert mpy(code).strip() == "04112233445566"
    finally:
        t.join(6)
        clf.close()


# -- the datagrams, against a plain socket playing the card (CPython) --------------------


class ScriptedCard:
    """Answers each datagram from a script: (expected, answers...) per step."""

    def __init__(self, script):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.script = script
        self.got = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for answers in self.script:
            try:
                data, addr = self.sock.recvfrom(2048)
            except OSError:
                return
            self.got.append(data)
            for a in answers:
                if isinstance(a, float):
                    threading.Event().wait(a)
                else:
                    self.sock.sendto(a, addr)

    def close(self):
        self.thread.join(5)
        self.sock.close()


SENSF_FRAME = b"14" + b"01" + IDM.hex().upper().encode() + b"00F1000000014300" + b"88B4"


def test_datagrams_are_nfcpys_format():
    card = ScriptedCard([
        [b"212F " + SENSF_FRAME],
        [b"106A 0400", b"212F 020b"],  # another bit rate first: ignored, as nfcpy does
        [],
    ])
    nfc = NfcUdp("127.0.0.1", card.port)
    nfc.rf_off()  # nothing answered yet: no RFOFF (nfcpy's reader does the same)
    assert bytes(nfc.sense_ttf()) == H(SENSF_FRAME.decode())[1:]
    assert bytes(nfc.exchange(b"\x05\x0c\xaa\xbb\xcc" + bytes(10), 20)) == H("020b")
    nfc.rf_off()
    nfc.rf_off()
    card.close()
    assert card.got == [b"212F 0600ffff0100", b"212F 050caabbcc", b"RFOFF"]


def test_late_answer_is_not_taken_for_the_next_one():
    card = ScriptedCard([
        [0.3, b"212F 03aaaa"],  # answers after the reader gave up
        [b"212F 03bbbb"],
    ])
    nfc = NfcUdp("127.0.0.1", card.port, slack_ms=50)
    with pytest.raises(NfcTimeout):
        nfc.exchange(b"\x02\x01", 10)
    threading.Event().wait(0.4)
    assert bytes(nfc.exchange(b"\x02\x02", 10)) == H("03bbbb")
    card.close()


@pytest.mark.parametrize("answer", [b"212F 0g", b"212F 030", b"212F0300", b"212F 0400"])
def test_malformed_answers_are_protocol_errors(answer):
    card = ScriptedCard([[answer]])
    nfc = NfcUdp("127.0.0.1", card.port)
    with pytest.raises(NfcProtocolError):
        nfc.exchange(b"\x02\x01", 50)
    card.close()
