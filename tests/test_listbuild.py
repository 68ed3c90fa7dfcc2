"""host_tools/listbuild.py: negative lists from CSV, checked against the terminal's code."""

import datetime

import pytest

from host_tools import listbuild as lb
from host_tools.errors import ToolError
from terminal import nl_format as nl
from terminal.negative_list import NegativeList
from terminal.tokenhash import TokenHasher

KEY = bytes(range(16))
DAY = lb.day_number(datetime.date(2026, 11, 21))
ISSUERS = {257: 5, 258: None, 0x0300: 100}


def build(text, version=1, issuers=ISSUERS, capacity=1000, **kw):
    return lb.build_full(text, version=version, issuers=issuers, list_key=KEY, key_id=1,
                         capacity=capacity, today=DAY, **kw)


def delta(text, base, issuers=ISSUERS, capacity=1000, **kw):
    return lb.build_delta(text, base=base, issuers=issuers, list_key=KEY, capacity=capacity,
                          today=DAY, **kw)


def install(tmp_path, *lists):
    t = NegativeList(str(tmp_path), 1000, key_id=1)
    for b in lists:
        err = t.begin(b.kind, b.version, b.base_version, len(b.data))
        assert err is None, err
        assert t.write_chunk(0, b.data) is None
        err = t.commit()
        assert err is None, err
    return t


def listed(t, issuer, token, day=DAY):
    return t.lookup(TokenHasher(KEY).hash(token.encode()), issuer, day)


def test_malformed_lines_reported_with_numbers():
    bad = [
        ("257,4980000000000002", "expected issuer,token,action[,expiry], got 2 fields"),
        ("x57,4980000000000003,add", "issuer 'x57' is not a number"),
        ("257,49800000000000041234,add", "must be 1-16 letters or digits"),
        ("257,4980000000000005,block", "action 'block' must be add or remove"),
        ("257,4980000000000006,add,2026-13-01", "expiry '2026-13-01' is not a YYYY-MM-DD"),
        ("999,4980000000000007,add", "unknown issuer 999"),
        ("257,4980-0000,add", "token '4980-0000' must be 1-16 letters or digits"),
    ]
    lines = ["issuer,token,action,expiry", "257,4980000000000001,add", bad[0][0],
             bad[1][0], bad[2][0], "", "# a comment"] + [b for b, _ in bad[3:]]
    with pytest.raises(ToolError) as e:
        build("\n".join(lines))
    # one line: how many, and the first (README: a CSV error is one line)
    assert str(e.value) == ("list CSV: 7 bad lines; the first, line 3: expected "
                            "issuer,token,action[,expiry], got 2 fields")
    for line, why in bad:
        with pytest.raises(ToolError) as e:
            build("257,4980000000000001,add\n" + line)
        assert str(e.value).startswith("list CSV: line 2: ") and why in str(e.value)


def test_full_list_from_csv_on_the_terminal(tmp_path):
    text = """issuer,token,action,expiry
257,4980000000000001,add
257,4980000000000002,add,2026-11-30
0x0102,4980000000000003,add
257,4980000000000004,add,2026-11-20
258,4980000000000005,remove
"""
    b = build(text)
    assert b.kind == nl.KIND_FULL and b.entries == 3 and b.per_issuer == {257: 2, 258: 1}
    assert b.expired == 1 and any("expired" in w for w in b.warnings)
    t = install(tmp_path, b)
    assert listed(t, 257, "4980000000000001") and listed(t, 258, "4980000000000003")
    exp = lb.day_number(datetime.date(2026, 11, 30))
    assert listed(t, 257, "4980000000000002", exp)
    assert not listed(t, 257, "4980000000000002", exp + 1)
    assert not listed(t, 257, "4980000000000004")
    assert not listed(t, 257, "4980000000000003")  # listed under its own issuer only
    f = lb.decode(b.data)
    assert f.version == 1 and f.base_day == DAY and f.key_id == 1 and f.entries() == 3


def test_duplicates_merged_last_line_wins(tmp_path):
    text = """257,111,add
257,222,add
257,111,remove
257,222,add,2026-12-01
257,333,remove
257,333,add
"""
    b = build(text)
    assert b.duplicates == 3 and b.entries == 2
    t = install(tmp_path, b)
    assert not listed(t, 257, "111") and listed(t, 257, "222") and listed(t, 257, "333")
    assert not listed(t, 257, "222", lb.day_number(datetime.date(2026, 12, 2)))
    with pytest.raises(ToolError, match="issuer 257 on line 1 and issuer 258 on line 2"):
        build("257,444,add\n258,444,add\n")


def test_over_quota_refused_unless_resolved(tmp_path):
    text = "".join("257,%d,add\n" % (1000 + i) for i in range(8))
    with pytest.raises(ToolError, match="issuer 257 would list 8 entries, 3 over its quota of 5"):
        build(text)
    b = build(text, resolve="keep-newest")
    assert b.entries == 5 and b.dropped_quota == {257: 3}
    t = install(tmp_path, b)
    assert [listed(t, 257, str(1000 + i)) for i in range(8)] == [False] * 3 + [True] * 5
    # the three left out are not approved offline: the issuer is online-only
    assert b.withheld == {257: 3} and lb.decode(b.data).withheld == {257: 3}
    assert t.overflowing() == [257] and t.online_only(257)
    assert t.status()["issuers"] == [(257, 5, 0, 3)]
    with pytest.raises(ToolError, match="unknown quota resolution"):
        build(text, resolve="drop-all")


def test_capacity_refused_before_transfer():
    text = "".join("258,%d,add\n" % i for i in range(50))
    with pytest.raises(ToolError, match="50 entries, the board holds 40"):
        build(text, capacity=40)
    assert build(text, capacity=50).entries == 50


def test_expiry_too_far_refused():
    with pytest.raises(ToolError, match="more than 4093 days"):
        build("257,1,add,2040-01-01\n")


def test_delta_from_csv(tmp_path):
    base = build("257,1,add\n257,2,add\n258,3,add\n258,4,add,2026-12-24\n")
    d = delta("257,1,remove\n257,9,remove\n257,5,add\n0x300,6,add\n258,4,add,2026-12-31\n"
              "258,3,add\n", base.data)
    assert (d.kind, d.version, d.base_version) == (nl.KIND_DELTA, 2, 1)
    assert d.adds == 3 and d.removes == 1 and d.entries == 5  # 3 unchanged: left out
    assert any("not on the list" in w for w in d.warnings)
    t = install(tmp_path, base, d)
    assert t.version == 2 and t.entries == 5
    assert not listed(t, 257, "1") and listed(t, 257, "2") and listed(t, 257, "5")
    assert listed(t, 0x300, "6") and listed(t, 258, "3")
    assert listed(t, 258, "4", lb.day_number(datetime.date(2026, 12, 31)))
    # the same content as a full build of everything
    full = build("257,2,add\n257,5,add\n0x300,6,add\n258,3,add\n258,4,add,2026-12-31\n",
                 version=2)
    installed = lb.decode((tmp_path / "nl.bin").read_bytes())
    assert installed.sections == lb.decode(full.data).sections
    with pytest.raises(ToolError, match="from version 1 to 2, not 5"):
        delta("257,7,add\n", base.data, version=5)
    with pytest.raises(ToolError, match="must be a full list"):
        delta("257,7,add\n", d.data)


def test_delta_over_quota(tmp_path):
    base = build("".join("257,%d,add,2026-12-%02d\n" % (i, 10 + i) for i in range(5)))
    with pytest.raises(ToolError, match="issuer 257 would list 7 entries, 2 over"):
        delta("257,100,add\n257,101,add\n", base.data)
    d = delta("257,100,add\n257,101,add\n", base.data, resolve="keep-newest")
    assert d.entries == 5 and d.dropped_quota == {257: 2}
    t = install(tmp_path, base, d)
    # the two entries expiring first made room for the new ones
    assert [listed(t, 257, str(i)) for i in (0, 1, 2, 3, 4, 100, 101)] == [
        False, False, True, True, True, True, True]
    assert d.withheld == {257: 2} and t.overflowing() == [257]
    assert t.status()["issuers"] == [(257, 5, 0, 2)]


def test_within_quota_and_withheld_in_the_list():
    rows = {1: [(bytes([i]) * 8, 0) for i in range(1, 8)], 2: [(b"\x09" * 8, 0)], 3: []}
    kept, withheld = lb.within_quota(rows, {1: 5, 2: None})
    assert kept[1] == rows[1][2:] and kept[2] == rows[2] and withheld == {1: 2}
    data = lb.encode_full(kept, version=1, base_day=DAY, key_id=1, quotas={1: 5},
                          withheld=withheld)
    f = lb.decode(data)
    assert f.withheld == {1: 2, 2: 0, 3: 0} and f.quota[1] == 5
    with pytest.raises(ToolError, match="withheld count -1 out of range"):
        lb.encode_full(kept, version=1, base_day=DAY, key_id=1, withheld={1: -1})


def test_delta_carries_the_base_lists_withheld_count(tmp_path):
    text = "".join("257,%d,add\n" % (1000 + i) for i in range(8))
    base = build(text, resolve="keep-newest")
    assert base.withheld == {257: 3}
    # a delta that touches issuer 257 must not clear what its base withheld
    d = delta("257,1007,remove\n258,5,add\n", base.data)
    assert d.withheld == {257: 3} and lb.decode(d.data).withheld == {257: 3, 258: 0}
    t = install(tmp_path, base, d)
    assert t.overflowing() == [257] and not t.online_only(258)


def test_bad_arguments():
    with pytest.raises(ToolError, match="16 bytes"):
        lb.build_full("", version=1, issuers=ISSUERS, list_key=b"short", key_id=1,
                      capacity=10, today=DAY)
    with pytest.raises(ToolError, match="list version 0 out of range"):
        build("257,1,add\n", version=0)
    with pytest.raises(ToolError, match="list version 4294967296 out of range"):
        build("257,1,add\n", version=2**32)
    with pytest.raises(ToolError, match="not a usable negative list"):
        delta("257,1,add\n", b"garbage" * 10)
    assert issubclass(ToolError, Exception)


# -- termctl list build: bad input is one line and writes nothing ------------------------


def _termctl_build(tmp_path, capsys, csv_bytes, *extra):
    from host_tools import cli

    src = tmp_path / "list.csv"
    src.write_bytes(csv_bytes)
    out = tmp_path / "v.bin"
    code = cli.main(["list", "build", str(src), "--out", str(out), *extra])
    got = capsys.readouterr()
    assert "Traceback" not in got.err
    return code, got.out, got.err.splitlines(), out


@pytest.mark.parametrize("csv_bytes,extra,message", [
    (bytes(range(256)), (), "line 2 is not UTF-8 text (byte 0x80); save the CSV as UTF-8"),
    ("1,4980000000000001,add # café\n".encode("latin-1"), (),
     "line 1 is not UTF-8 text (byte 0xe9)"),
    (b"1,4980000000000001,add\n", ("--version", "0"),
     "list version 0 out of range: give 1..4294967295"),
    (b"1,4980000000000001,add\n", ("--version", "4294967296"),
     "list version 4294967296 out of range"),
    (b"1,4980000000000001,add\n", ("--base", "missing.bin"),
     "cannot read --base missing.bin: No such file or directory"),
    (b"issuer,token,action\nx,1,add\n1,2,add\n1,3,drop\n9,4,add\n", (),
     "4 bad lines; the first, line 2: issuer 'x' is not a number"),
], ids=["binary", "latin-1", "version-0", "version-2^32", "base-missing", "bad-lines"])
def test_cli_list_build_bad_input(keyring_path, tmp_path, capsys, monkeypatch, csv_bytes,
                                  extra, message):
    monkeypatch.chdir(tmp_path)
    if message.startswith("4 bad lines"):  # one good line among them: still refused
        csv_bytes = csv_bytes.replace(b"1,2,add", b"1,2,add,2026-13-01")
    code, _, err, out = _termctl_build(tmp_path, capsys, csv_bytes, *extra)
    assert code == 1 and len(err) == 1 and err[0].startswith("termctl: ")
    assert message in err[0]
    assert not out.exists()


def test_cli_list_build_out_into_a_missing_directory(keyring_path, tmp_path, capsys):
    from host_tools import cli

    (tmp_path / "list.csv").write_text("1,4980000000000001,add\n")
    code = cli.main(["list", "build", str(tmp_path / "list.csv"), "--out",
                     str(tmp_path / "no" / "such" / "v1.bin")])
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and len(err) == 1
    assert "cannot write" in err[0] and "No such file or directory" in err[0]


def test_cli_list_build_reads_a_spreadsheet_csv(keyring_path, tmp_path, capsys):
    # UTF-8 with a byte-order mark, quoted fields, CRLF, trailing empty columns
    sheet = ('\ufeff"issuer","token","action","expiry",""\r\n'
             '"1","4980000000000001","add","",""\r\n'
             '1, "4980000000000002" ,add,2027-12-31,\r\n'
             '"2","4980000000000003","add"\r\n')
    code, out, err, path = _termctl_build(tmp_path, capsys, sheet.encode("utf-8"))
    assert code == 0 and err == []
    assert "3 entries on the terminal" in out
    f = lb.decode(path.read_bytes())
    assert {i: len(r) for i, r in f.sections.items()} == {1: 2, 2: 1}
    assert sorted(e for e in f.sections[1].values()) == [
        0, lb.day_number(datetime.date(2027, 12, 31))]
