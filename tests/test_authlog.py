"""The request counter's log (firmware/terminal/authlog.py) on NOR flash.

Every signed request stores its counter before it is applied; the log appends
16-byte entries to erased flash in two sectors and erases the full one in idle
time, so a sale costs one page program and no erase. The power-cut test cuts
at every program and every erase across two sector switches: after a reboot
the counter is the last one stored, or the one being stored when the supply
failed, never less; a replayed request is refused.
"""

import pytest

from terminal.authlog import CounterLog

RIG = r"""
import sys
sys.path.insert(0, %(mpydir)r)
import gc, os, vfs
from drivers.filebdev import FileBlockDevice, PowerLost
from terminal.authlog import CounterLog
IMG = %(img)r
PROG = %(prog)d


class Rig:
    def __init__(self, fresh):
        if fresh:
            try:
                os.remove(IMG)
            except OSError:
                pass
        self.bd = FileBlockDevice(IMG, 512, 64, prog_size=PROG)
        if fresh:
            vfs.VfsLfs2.mkfs(self.bd, progsize=max(32, PROG))
        vfs.mount(vfs.VfsLfs2(self.bd, progsize=max(32, PROG)), "/f")
        self.log = CounterLog("/f/auth", 77, self.bd, PROG, 512)

    def off(self):
        try:
            vfs.umount("/f")
        except Exception:
            pass
        self.bd.close()
        gc.collect()
"""

# 512-byte sectors hold 28 entries (448 usable bytes): 70 stores switch sectors twice.
CUTS = r"""
def scenario(cut):
    r = Rig(True)
    stored = trying = 0  # the last store that returned, the one under way
    e0 = r.bd.erases
    r.bd.cut_after(cut)
    done = True
    try:
        for c in range(1, 71):
            trying = 1000 + c
            r.log.store(trying)
            stored = 1000 + c
            if c % 20 == 0:
                while r.log.idle():  # the link quiet now and then: the spare erased
                    pass
    except PowerLost:
        done = False
    tap_erases = r.log.tap_erases
    r.off()
    r = Rig(False)
    v = r.log.value
    assert v == stored or (not done and v == trying), (cut, stored, v)
    while r.log.idle():
        pass
    r.log.store(v + 1)
    r.off()
    r = Rig(False)
    assert r.log.value == v + 1, (cut, r.log.value, v)
    r.off()
    return "done" if done else "cut", tap_erases


cut = 0
cuts = 0
while True:
    res, tap_erases = scenario(cut)
    if res == "done":
        break
    cut += 1
print("cuts", cut, "tap_erases", tap_erases)
"""


@pytest.mark.parametrize("prog", [1, 256])
def test_power_cut_at_every_program_and_erase_of_the_counter_log(mpy, mpydir, tmp_path, prog):
    code = RIG % {"mpydir": str(mpydir), "img": str(tmp_path / "a.img"), "prog": prog} + CUTS
    out = mpy(code, heap="256k", timeout=600).split()
    cuts, tap_erases = int(out[1]), int(out[3])
    print("authlog prog %d cuts=%d" % (prog, cuts))  # shown with pytest -s
    assert cuts >= 70 + 2  # a program per store, an erase per sector freed
    assert tap_erases == 0  # idle time erased the spare before a store needed it


def test_a_store_without_idle_time_erases_and_counts_it(tmp_path):
    log = CounterLog(str(tmp_path / "auth"), 77, sector=512)
    for c in range(1, 60):  # 28 per sector: past two switches, never idle
        log.store(c)
    assert log.tap_erases == 1  # the first switch found the spare made erased; the second not
    again = CounterLog(str(tmp_path / "auth"), 77, sector=512)
    assert again.value == 59
    assert again.idle() and not again.idle()  # the full sector erased once, then nothing


def test_the_counter_survives_a_u64(tmp_path):
    log = CounterLog(str(tmp_path / "auth"), 77)
    log.store(2**64 - 2)
    assert CounterLog(str(tmp_path / "auth"), 77).value == 2**64 - 2


def test_a_new_key_starts_the_counter_again(tmp_path):
    # `termctl flash` without --keep-key writes a new terminal key (a new id): its
    # counter starts at 0, the way out of a counter at the end of its range
    log = CounterLog(str(tmp_path / "auth"), 77, sector=512)
    for c in (5, 2**64 - 2**31):
        log.store(c)
    fresh = CounterLog(str(tmp_path / "auth"), 78, sector=512)
    assert fresh.value == 0
    fresh.store(1)
    assert CounterLog(str(tmp_path / "auth"), 78, sector=512).value == 1
    assert CounterLog(str(tmp_path / "auth"), 77, sector=512).value == 2**64 - 2**31
