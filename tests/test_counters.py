"""The counter table across reboots (firmware/terminal/counters.py): the snapshot
is read straight into the table's buffer, and one that cannot be used is noted
and rebuilt from the journal."""

from fakes import Board, MemoryPort
from host_tools.link import parse_kv, request
from terminal import frame, protocol
from terminal.counters import COUNTERS_FILE
from terminal.service import KEY_FILE, TerminalService

KEY = bytes(range(32))
KEY8 = b"\x11" * 8
DAY = 20_000


def boot(root):
    (root / KEY_FILE).write_bytes((0x11223344).to_bytes(4, "little") + KEY)
    return TerminalService(Board, str(root), MemoryPort(), "test")


def status(svc):
    svc.link.port.inbox += frame.encode(request(protocol.CMD_STATUS, 1))
    for _ in range(4):
        svc.step(0)
    (reply,) = svc.link.port.replies()
    return parse_kv(reply[4:].decode()), [line[5:] for line in reply[4:].decode().split("\n")
                                          if line.startswith("note=")]


def test_snapshot_comes_back_whole_at_boot(tmp_path):
    svc = boot(tmp_path)
    table = svc.engine.table
    slot = table.insert(KEY8, 100, DAY, 900)
    table.record_approval(slot, 700, 100, False, 5)
    svc.close()
    again = boot(tmp_path)
    t = again.engine.table
    slot = t.lookup(KEY8, 100, DAY, 900)
    assert slot >= 0 and t.offline_today(slot) == 700 and t.atc(slot) == 5
    st, notes = status(again)
    assert (st["counters"], st["counters_replayed_at_boot"]) == ("1/64 cards", "0")
    assert notes == []


def test_snapshot_of_another_size_is_noted_and_ignored(tmp_path):
    boot(tmp_path).close()
    path = tmp_path / COUNTERS_FILE
    path.write_bytes(path.read_bytes()[:-5] + path.read_bytes()[-4:])  # one byte short
    svc = boot(tmp_path)
    st, notes = status(svc)
    assert st["counters"] == "0/64 cards"
    n = len(svc.engine.table.buf)
    assert notes == ["counter snapshot not restored (counter table has %d bytes, expected %d):"
                     " rebuilt from journal" % (n - 1, n)]


def test_damaged_snapshot_leaves_an_empty_table(tmp_path):
    svc = boot(tmp_path)
    svc.engine.table.insert(KEY8, 100, DAY, 900)
    svc.close()
    path = tmp_path / COUNTERS_FILE
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF  # magic
    path.write_bytes(bytes(data))
    svc = boot(tmp_path)
    assert svc.engine.table.count == 0
    assert bytes(svc.engine.table.buf) == bytes(len(svc.engine.table.buf))
    st, notes = status(svc)
    assert notes == ["counter snapshot not restored (not a counter table (magic/version)):"
                     " rebuilt from journal"]
