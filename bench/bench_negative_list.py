"""Negative list: flash reads and time per lookup, RAM, bytes per entry and on the wire.

The lists are built on CPython with the host's encoder (random 8-byte keys, one
issuer), then pushed into the MicroPython unix port through the terminal's own
update path (begin / write_chunk / commit) onto LittleFS2 over a file-backed
image of the emulator's size (16 MB, 4096-byte blocks), under the emulated
board's heap cap. The firmware runs compiled by mpy-cross, as on a board.
Each size runs on a terminal of that capacity, so what is sized from the
capacity (the nl.dir block table, the buckets) grows with it: a flat figure is
measured, not built in.

Reads per lookup are block-device reads (readblocks calls on the flash). The
terminal is given the block device, so lookups read the list's blocks directly
through its physical directory (nl.dir): one read for the bucket's entry, one
for the bucket. For comparison the same lists are also looked up through the
LittleFS file (no block device), which adds LittleFS's walk along the file's
CTZ skip-list (4-byte pointer reads, growing with log2 of the file's blocks).

RAM is measured in a fresh process, as at start-up: mount the flash, build the
NegativeList over the installed list, drop the modules it loaded on demand (as
terminal.service does), collect, and take gc.mem_alloc() against before.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(FIRMWARE))
sys.path.insert(0, str(ROOT))

from bench import goal  # noqa: E402
from host_tools import listbuild as lb  # noqa: E402
from host_tools.build import MPY_OPT  # noqa: E402
from terminal import nl_format as nl  # noqa: E402

DAY = 20_400
ISSUER = 0x0101
BOARDS = ("emulator", "pico_pn532", "esp32s3_pn532")
RAM_GOAL = 4096
WIRE_GOAL = 1.15
DELTA_GOAL_ENTRIES = 1000
ON_DEMAND = ("terminal.nl_update", "terminal.nl_transfer", "terminal.nl_check",
             "terminal.nl_format", "terminal.nl_dir", "drivers.lfsfile")


def pty_push(blob, base=None):
    """`termctl list push` of a list file to a fresh emulated board over its pty (a
    delta after its base, pushed first and not counted): (wire bytes, seconds) of the
    whole command, both ways: the identity exchange, the list status a full list
    checks first, begin, chunks and commit."""
    from host_tools.emulator import Emulator
    from host_tools.link import TerminalLink
    from host_tools.transfer import push_list_file

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TERMCTL_KEYRING"] = str(Path(tmp) / "keyring.json")
        with Emulator(flash=Path(tmp) / "push.img") as emu:
            if base is not None:
                (Path(tmp) / "base.bin").write_bytes(base)
                with TerminalLink.open(emu.port, timeout=30) as t:
                    push_list_file(t, Path(tmp) / "base.bin")
            (Path(tmp) / "list.bin").write_bytes(blob)
            with TerminalLink.open(emu.port, timeout=30) as t:  # what the command opens
                t0 = time.monotonic()
                push_list_file(t, Path(tmp) / "list.bin")
                return t.bytes_sent + t.bytes_received, time.monotonic() - t0


# (list bytes, base list bytes or None) -> (wire bytes, seconds); None: "-" columns.
PUSH_HOOK = pty_push

_PRELUDE = r"""
import sys
sys.path.insert(0, %(mpydir)r)
import gc, json, os, time, vfs
from drivers.filebdev import FileBlockDevice
"""

_PUSH = _PRELUDE + r"""
gc.collect()
m0 = gc.mem_alloc()
from terminal import negative_list as nl
gc.collect()
out = {"heap_module": gc.mem_alloc() - m0}
bd = FileBlockDevice(%(img)r, 4096, %(blocks)d)
vfs.VfsLfs2.mkfs(bd)
vfs.mount(vfs.VfsLfs2(bd), "/flash")
t = nl.NegativeList("/flash", %(cap)d, bdev=bd)
total = os.stat(%(lst)r)[6]
buf = bytearray(1024)
t0 = time.ticks_ms()
assert t.begin(1, 1, 0, total) is None
with open(%(lst)r, "rb") as f:
    off = 0
    while off < total:
        n = f.readinto(buf)
        err = t.write_chunk(off, memoryview(buf)[:n])
        assert err is None, err
        off += n
t1 = time.ticks_ms()
err = t.commit()
assert err is None, err
t2 = time.ticks_ms()
out["stage_ms"] = time.ticks_diff(t1, t0)
out["commit_ms"] = time.ticks_diff(t2, t1)
out["file_bytes"] = os.stat("/flash/nl.bin")[6]
out["pdir_bytes"] = os.stat("/flash/nl.dir")[6]
from terminal import nl_dir
out["placed"] = nl_dir.placed
out["direct"] = t.status()["direct_reads"]
out["entries"] = t.entries
key = bytearray(8)
t.lookup(key, %(issuer)d, %(day)d)


def run(path):
    us = []
    hits = reads = pages = 0
    with open(path, "rb") as f:
        while f.readinto(key) == 8:
            r0 = bd.reads
            p0 = t.page_reads
            a = time.ticks_us()
            hit = t.lookup(key, %(issuer)d, %(day)d)
            b = time.ticks_us()
            reads += bd.reads - r0
            pages += t.page_reads - p0
            hits += hit
            us.append(time.ticks_diff(b, a))
    us.sort()
    return {"median_us": us[len(us) // 2], "hits": hits, "n": len(us),
            "bdev_reads": reads / len(us), "list_reads": pages / len(us)}


gc.collect()
out["present"] = run(%(present)r)
out["absent"] = run(%(absent)r)
t.close()
del t
gc.collect()
t = nl.NegativeList("/flash", %(cap)d)  # the same list read through the LittleFS file
out["file_present"] = run(%(present)r)
out["file_absent"] = run(%(absent)r)
print(json.dumps(out))
"""

# A fresh process: the list's RAM as after start-up (tables loaded, file open,
# nl.dir attached), with what it loaded on demand dropped again. Loading a module
# interns its names (MicroPython never frees a qstr): that stays too, and is
# measured apart, by loading and dropping the modules once before.
_FRESH = _PRELUDE + r"""
bd = FileBlockDevice(%(img)r, 4096, %(blocks)d)
vfs.mount(vfs.VfsLfs2(bd), "/flash")
from terminal.negative_list import NegativeList
pkgs = [sys.modules[p] for p in ("terminal", "drivers")]


def drop():
    for name in %(on_demand)r:
        sys.modules.pop(name, None)
        for p in pkgs:
            if hasattr(p, name.split(".")[1]):
                delattr(p, name.split(".")[1])
    gc.collect()


gc.collect()
m0 = gc.mem_alloc()
import terminal.nl_format, terminal.nl_dir
drop()
m1 = gc.mem_alloc()
t = NegativeList("/flash", %(cap)d, %(issuers)d, bdev=bd)
drop()
print(json.dumps({"ram": gc.mem_alloc() - m1, "names": m1 - m0,
                  "direct": t.status()["direct_reads"], "entries": t.entries}))
"""


def _mpy(code, heap="128k"):
    proc = subprocess.run([str(BIN / "micropython"), "-X", "heapsize=" + heap, "-c", code],
                          capture_output=True, text=True, timeout=900,
                          env={"MICROPYPATH": "%s:%s" % (FIRMWARE, ROOT / "boards")})
    if proc.returncode != 0:
        raise RuntimeError("micropython failed:\n%s\n%s" % (proc.stdout, proc.stderr))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compile(dest):
    for name in ("terminal/compat", "terminal/negative_list", "terminal/nl_format",
                 "terminal/nl_update", "terminal/nl_transfer", "terminal/nl_check",
                 "terminal/nl_dir",
                 "drivers/lfsfile", "drivers/filebdev"):
        pkg = dest / name.split("/")[0]
        if not pkg.exists():
            pkg.mkdir(parents=True)
            (pkg / "__init__.py").write_text("")
        subprocess.run([str(BIN / "mpy-cross"), MPY_OPT, "-o", str(dest / (name + ".mpy")),
                        str(FIRMWARE / (name + ".py"))], check=True)


def _fresh_ram(mpydir, img, blocks, cap, issuers):
    return _mpy(_FRESH % dict(mpydir=str(mpydir), img=str(img), blocks=blocks, cap=cap,
                              issuers=issuers, on_demand=ON_DEMAND))


def _measure(tmp, mpydir, n, probes, rnd):
    keys = [rnd.randbytes(8) for _ in range(n)]
    t0 = time.monotonic()
    data = lb.encode_full({ISSUER: [(k, 0) for k in keys]}, version=1, base_day=DAY,
                          key_id=1)
    build_s = time.monotonic() - t0
    lst = tmp / ("list%d.bin" % n)
    lst.write_bytes(data)
    (tmp / "present.bin").write_bytes(b"".join(rnd.sample(keys, min(probes, n))))
    (tmp / "absent.bin").write_bytes(b"".join(rnd.randbytes(8) for _ in range(probes)))
    img = tmp / "flash.img"
    img.unlink(missing_ok=True)
    out = _mpy(_PUSH % dict(mpydir=str(mpydir), img=str(img), blocks=4096, cap=n,
                            lst=str(lst), present=str(tmp / "present.bin"),
                            absent=str(tmp / "absent.bin"), issuer=ISSUER, day=DAY))
    fresh = _fresh_ram(mpydir, img, 4096, n, 32)
    img.unlink(missing_ok=True)
    for how in ("", "file_"):
        assert out[how + "present"]["hits"] == out[how + "present"]["n"]
        assert out[how + "absent"]["hits"] == 0
    assert out["direct"] and fresh["direct"], "direct reads are off"
    assert fresh["entries"] == n
    out["heap_list"] = fresh["ram"]
    out["heap_names"] = fresh["names"]
    out["build_s"] = build_s
    out["list_bytes"] = len(data)
    return out, keys, data


def _board_ram(tmp, mpydir, rnd):
    """Each board's list RAM, fresh, at its own capacity and issuers, with a list
    installed (the RAM does not depend on the list's size: the sizes above show it)."""
    from host_tools.build import board_values

    data = lb.encode_full({ISSUER: [(rnd.randbytes(8), 0) for _ in range(3000)]}, version=1,
                          base_day=DAY, key_id=1)
    lst = tmp / "board.bin"
    lst.write_bytes(data)
    rows, goals = [], []
    for board in BOARDS:
        v = board_values(board)
        cap, issuers = v["LIST_CAPACITY"], v["ISSUER_CAPACITY"]
        blocks = v["FLASH_SIZE"] // v["FLASH_BLOCK_SIZE"]
        img = tmp / ("%s.img" % board)
        img.unlink(missing_ok=True)
        code = _PRELUDE + r"""
bd = FileBlockDevice(%(img)r, 4096, %(blocks)d)
vfs.VfsLfs2.mkfs(bd)
vfs.mount(vfs.VfsLfs2(bd), "/flash")
from terminal.negative_list import NegativeList
t = NegativeList("/flash", %(cap)d, %(issuers)d, bdev=bd)
total = os.stat(%(lst)r)[6]
assert t.begin(1, 1, 0, total) is None
buf = bytearray(1024)
with open(%(lst)r, "rb") as f:
    off = 0
    while off < total:
        n = f.readinto(buf)
        assert t.write_chunk(off, memoryview(buf)[:n]) is None
        off += n
print(json.dumps({"err": t.commit()}))
"""
        assert _mpy(code % dict(mpydir=str(mpydir), img=str(img), blocks=blocks, cap=cap,
                                issuers=issuers, lst=str(lst)))["err"] is None
        fresh = _fresh_ram(mpydir, img, blocks, cap, issuers)
        img.unlink(missing_ok=True)
        assert fresh["direct"] and fresh["entries"] == 3000
        rows.append([board, "{:,}".format(cap), issuers, "{:,}".format(fresh["ram"])])
        goals.append(goal("list RAM, fresh process, %s" % board, fresh["ram"], "<=", RAM_GOAL,
                          unit=" B"))
    return rows, goals


def _bytes_per_entry(keys, data, rnd, base_n):
    """Full list and deltas of 1 % and 10 % of the entries (half adds, half removes),
    and the delta of DELTA_GOAL_ENTRIES entries whatever the size."""
    n = len(keys)
    rows = [("full", n, data, nl.REC_LEN)]
    shares = sorted({max(2, int(n * s)) for s in (0.01, 0.10)} | {DELTA_GOAL_ENTRIES})
    for k in shares:
        changes = [(rnd.randbytes(8), 0, False) for _ in range(k // 2)]
        changes += [(key, 0, True) for key in rnd.sample(keys, k - k // 2)]
        d = lb.encode_delta({ISSUER: changes}, version=2, base_version=1, base_day=DAY,
                            key_id=1)
        rows.append(("delta %s %%" % ("%g" % (100 * k / base_n)), k, d, nl.DREC_LEN))
    out = []
    ratio = None
    for kind, entries, blob, rec in rows:
        size = len(blob)
        wire = per = whole = "-"
        if PUSH_HOOK is not None:
            wbytes, secs = PUSH_HOOK(blob, None if kind == "full" else data)
            wire = "%.2f" % (wbytes / entries)
            whole = "%.3f" % (wbytes / (entries * rec))
            per = "%.0f ms" % (secs * 1000)
            if kind != "full" and entries == DELTA_GOAL_ENTRIES:
                ratio = wbytes / (entries * rec)
        out.append([kind, entries, size, "%.3f" % (size / entries), rec,
                    "%.3f" % (size / entries / rec), wire, whole, per])
    return out, ratio


def run(quick=False):
    sizes = (1_000, 10_000, 100_000) if quick else (1_000, 10_000, 100_000, 1_000_000)
    probes = 300 if quick else 1000
    rnd = random.Random(2026)
    lookup_rows, ram_rows, read_goals, wire_goals = [], [], [], []
    bpe, ratio = [], None
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        mpydir = tmp / "mpy"
        _compile(mpydir)
        for n in sizes:
            out, keys, data = _measure(tmp, mpydir, n, probes, rnd)
            p, a = out["present"], out["absent"]
            fp, fa = out["file_present"], out["file_absent"]
            buckets = 1 << nl.bucket_bits(n)
            lookup_rows.append([
                "{:,}".format(n), "%.2f" % (out["file_bytes"] / 2**20),
                "%.0f" % (out["pdir_bytes"] / 2**10),
                "%.1f %%" % (100 * out["placed"][1] / buckets),
                p["median_us"], a["median_us"], "%.2f" % p["bdev_reads"],
                "%.2f" % a["bdev_reads"], "%.1f" % fp["bdev_reads"], "%.1f" % fa["bdev_reads"],
                fp["median_us"],
                "%.1f" % (out["stage_ms"] / 1000), "%.1f" % (out["commit_ms"] / 1000)])
            ram_rows.append(["{:,}".format(n), out["heap_list"], out["heap_module"],
                             out["heap_names"]])
            read_goals.append(goal("flash reads per hit, %s entries" % "{:,}".format(n),
                                   p["bdev_reads"], "<=", 2, fmt="%.2f"))
            read_goals.append(goal("flash reads per miss, %s entries" % "{:,}".format(n),
                                   a["bdev_reads"], "<=", 2, fmt="%.2f"))
            if n == sizes[-2]:
                bpe, ratio = _bytes_per_entry(keys, data, rnd, n)
        board_rows, board_goals = _board_ram(tmp, mpydir, rnd)
    if ratio is not None:
        wire_goals.append(goal("termctl list push of a %s-entry delta: wire / record bytes"
                          % "{:,}".format(DELTA_GOAL_ENTRIES), ratio, "<=", WIRE_GOAL,
                          fmt="%.3f", unit="x"))
    return [
        {"title": "Negative list lookup (unix port, LittleFS2 on a 16 MB file image)",
         "columns": ["entries", "nl.bin MB", "nl.dir KB", "buckets copied",
                     "hit µs (median)", "miss µs (median)", "flash reads/hit",
                     "flash reads/miss", "via file: reads/hit", "via file: reads/miss",
                     "via file: hit µs", "push s (stage)", "commit s"],
         "rows": lookup_rows,
         "goals": read_goals,
         "notes": "Each size on a terminal of that capacity. Flash reads: block-device "
                  "readblocks calls per lookup, lookups reading the blocks through nl.dir "
                  "(goal: <= 2 at every size, flat). Via file: the same list read through "
                  "the LittleFS file, which walks the file's CTZ skip-list. Buckets "
                  "copied: buckets straddling two blocks of nl.bin, copied whole into "
                  "nl.dir. Commit checks the CRC and the order of every entry and writes "
                  "nl.dir. %d present and %d absent keys per size." % (probes, probes)},
        {"title": "Negative list RAM per size (fresh process, unix port 64-bit)",
         "columns": ["entries = capacity", "list structures B", "module bytecode B",
                     "names left by on-demand modules B"],
         "rows": ram_rows,
         "notes": "List structures: the NegativeList object with its tables and buffers "
                  "(sized from the capacity and 32 issuers) and its open LittleFS file, "
                  "measured in a fresh process as after start-up. Module bytecode: "
                  "terminal.negative_list imported alone, what stays in RAM; the format, "
                  "update and nl.dir code (nl_format, nl_transfer, nl_update, nl_dir, "
                  "drivers.lfsfile) "
                  "is imported to load or change a list and dropped after it, but the "
                  "names it interned stay (MicroPython frees no qstr): last column, for "
                  "nl_format and nl_dir, which every start-up loads. The "
                  "bytecode is loaded into the heap, here and on a board that runs .mpy "
                  "from its filesystem; a 32-bit port holds it in about 0.9 times the "
                  "bytes (docs/boards.md)."},
        {"title": "Negative list RAM per board (fresh process, unix port 64-bit)",
         "columns": ["board", "list capacity", "issuers", "list structures B"],
         "rows": board_rows, "goals": board_goals,
         "notes": "As after start-up on each board file's capacities, a 3,000-entry list "
                  "installed on an image of the board's flash size (goal <= %d B; "
                  "object headers and pointers are half that on the 32-bit boards)."
                  % RAM_GOAL},
        {"title": "Negative list bytes per entry (list file, and the push on the wire)",
         "columns": ["list", "entries", "file B", "B/entry", "record B", "file/record",
                     "wire B/entry", "wire/record", "push (pty)"],
         "rows": bpe,
         "goals": wire_goals,
         "notes": "Full: 6-byte records plus a 4-byte directory entry per bucket of <= 32 "
                  "and a header/footer; delta: 8-byte records (52 key bits, expiry or "
                  "remove); deltas as a share of the %s-entry list. Wire: every byte of "
                  "the whole `termctl list push` (push_list_file on a fresh link to a "
                  "fresh emulated board over its pty), both ways: the 15-byte identity "
                  "exchange, the list status a full list checks first, the signed begin, "
                  "the chunks and their replies, the signed commit (goal for the "
                  "%s-entry delta: <= %.2fx the record bytes). Push time includes the "
                  "commit." % ("{:,}".format(sizes[-2]), "{:,}".format(DELTA_GOAL_ENTRIES),
                               WIRE_GOAL)},
    ]


if __name__ == "__main__":
    for table in run(quick="--quick" in sys.argv):
        print(json.dumps(table))
