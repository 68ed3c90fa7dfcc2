"""The emulated board's flash: firmware/drivers/filebdev.py behaves as NOR flash.

The same walk runs under CPython and in the MicroPython unix port (the driver
is firmware code): programs only clear bits, a 0xFF byte leaves the flash as it
is, an erase sets 0xFF, the rp2.Flash / esp32.Partition block protocol
(writeblocks without offset erases first), alignment to the board's program
unit, the datasheet time charged per page and per erase, the power-cut hook,
and images that are short or long.
"""

from pathlib import Path

from drivers import filebdev

WALK = r"""
def walk(FileBlockDevice, PowerLost, img):
    out = []

    def say(*a):
        out.append(" ".join([str(x) for x in a]))

    def tryit(f, *a):
        try:
            f(*a)
            return "ok"
        except OSError as e:
            return "OSError %d" % e.args[0]
        except PowerLost:
            return "PowerLost"

    def get(bd, block, n, off=0):
        b = bytearray(n)
        bd.readblocks(block, b, off)
        return bytes(b)

    bd = FileBlockDevice(img, 512, 8, page_size=256, prog_size=1,
                         timing=(400, 3000, 45000, 400000), strict=True, create=True)
    say("new", get(bd, 7, 4) == b"\xff" * 4, bd.found)
    say("clear", tryit(bd.writeblocks, 0, b"\xf0\x0f", 0), get(bd, 0, 2) == b"\xf0\x0f")
    say("set a bit", tryit(bd.writeblocks, 0, b"\x0f\x0f", 0), get(bd, 0, 2) == b"\xf0\x0f",
        bd.violations)
    say("0xFF keeps", tryit(bd.writeblocks, 0, b"\xff\x07", 0), get(bd, 0, 2) == b"\xf0\x07",
        bd.violations)
    bd.strict = False
    say("ANDs", tryit(bd.writeblocks, 0, b"\x0f\x0f", 0), get(bd, 0, 2) == b"\x00\x07",
        bd.violations)
    p, t = bd.programs, bd.typ_us
    say("pages", tryit(bd.writeblocks, 1, b"\x01" * 300, 100), bd.programs - p,
        bd.typ_us - t)  # 100..400 in block 1 = bytes 612..911: pages 2 and 3
    e, m = bd.erases, bd.max_us
    bd.ioctl(6, 1)
    say("erase", get(bd, 1, 512) == b"\xff" * 512, bd.erases - e, bd.max_us - m)
    bd.writeblocks(2, b"\x00" * 512, 0)
    say("writeblocks no offset", tryit(bd.writeblocks, 2, b"\x5a" * 512),
        get(bd, 2, 512) == b"\x5a" * 512, bd.erases - e)
    bd.close()
    bd = FileBlockDevice(img, 512, 8, prog_size=256, strict=True, create=False)
    say("misaligned", tryit(bd.writeblocks, 3, b"\x00" * 64, 64), get(bd, 3, 1)[0],
        tryit(bd.writeblocks, 3, b"\x00" * 256, 256), get(bd, 3, 1, 256)[0])
    bd.close()
    bd = FileBlockDevice(img, 512, 8, create=False)
    bd.cut_after(1)
    say("cut", tryit(bd.writeblocks, 4, b"\x00" * 8, 0), tryit(bd.writeblocks, 4, b"\x11" * 8, 8),
        tryit(bd.readblocks, 4, bytearray(1)), bd.dead)
    bd.close()
    bd = FileBlockDevice(img, 512, 8, create=False)
    say("torn program", get(bd, 4, 16) == b"\x00" * 8 + b"\x11" * 4 + b"\xff" * 4)
    bd.writeblocks(5, b"\x00" * 512, 0)
    bd.cut_after(0)
    say("torn erase", tryit(bd.ioctl, 6, 5))
    bd.close()
    bd = FileBlockDevice(img, 512, 8, create=False)
    say("first half erased", get(bd, 5, 512) == b"\xff" * 256 + b"\x00" * 256)
    bd.writeblocks(6, b"\x00" * 512, 0)
    bd.cut_after(0, True)
    tryit(bd.ioctl, 6, 6)
    bd.close()
    bd = FileBlockDevice(img, 512, 8, create=False)
    say("keep head", get(bd, 6, 512) == b"\x00" * 256 + b"\xff" * 256)
    bd.close()
    for blocks, create in ((9, False), (16, True), (4, True)):
        try:
            FileBlockDevice(img, 512, blocks, create=create).close()
            say("size", blocks, create, "opened")
        except ValueError as e:
            say("size", blocks, create, "refused:", e)
    return out
"""


def _walk():
    ns = {}
    exec(WALK, ns)
    return ns["walk"]


EXPECT = [
    "new True 0",
    "clear ok True",
    "set a bit OSError 5 True 1",  # strict: refused, nothing written
    "0xFF keeps ok True 1",  # 0xFF leaves a byte as it is: not a violation
    "ANDs ok True 2",  # not strict: the chip ANDs, and it is counted
    "pages ok 2 800",  # one page program per 256-byte page touched, tPP 400 us
    "erase True 1 400000",  # tSE max
    "writeblocks no offset ok True 2",  # erased first, then programmed
    "misaligned OSError 5 255 ok 0",  # the Pico's unit: whole aligned 256-byte pages
    "cut ok PowerLost PowerLost True",  # the 2nd program torn, then nothing answers
    "torn program True",  # its first half stored
    "torn erase PowerLost",
    "first half erased True",
    "keep head True",  # a torn erase that leaves what the block starts with
    "size 9 False refused: image has 4096 bytes, the flash 4608",
    "size 16 True opened",  # made whole: the missing part erased
    "size 4 True refused: image has 8192 bytes, the flash 2048",
]


def test_nor_semantics_on_cpython(tmp_path):
    got = _walk()(filebdev.FileBlockDevice, filebdev.PowerLost, str(tmp_path / "c.img"))
    assert got == EXPECT


def test_nor_semantics_identical_on_unix_port(mpy, mpydir, tmp_path):
    code = "import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + WALK + r"""
from drivers.filebdev import FileBlockDevice, PowerLost
for line in walk(FileBlockDevice, PowerLost, %r):
    print(line)
""" % str(tmp_path / "u.img")
    assert mpy(code, heap="64k").strip().splitlines() == EXPECT


def test_littlefs_never_violates_nor_at_the_picos_program_unit(mpy, mpydir, tmp_path):
    # What the Pico's _boot.py does (progsize=256) on its flash (whole pages): a
    # filesystem's worth of work, strict, and not one violation.
    out = mpy("import sys\nsys.path.insert(0, %r)\n" % str(mpydir) + r"""
import os, vfs
from drivers.filebdev import FileBlockDevice
bd = FileBlockDevice(%r, 4096, 64, prog_size=256, strict=True)
vfs.VfsLfs2.mkfs(bd, progsize=256)
vfs.mount(vfs.VfsLfs2(bd, progsize=256), "/f")
for i in range(40):
    with open("/f/x%%d" %% (i %% 7), "ab") as f:
        f.write(bytes([i]) * (100 + 37 * i))
    if i %% 5 == 0:
        os.rename("/f/x%%d" %% (i %% 7), "/f/y%%d" %% i)
print("programs", bd.programs, "erases", bd.erases, "violations", bd.violations)
""" % str(tmp_path / "l.img"), heap="128k")
    f = out.split()
    assert int(f[1]) > 100 and int(f[3]) > 10 and f[5] == "0"


def test_the_driver_is_emulator_only():
    # drivers/filebdev.py is never copied to a board (host_tools/flash.py)
    from host_tools.flash import UNIX_ONLY

    assert {"drivers/filebdev.mpy", "drivers/unix_flash.mpy"} <= UNIX_ONLY
    assert Path(filebdev.__file__).name == "filebdev.py"
