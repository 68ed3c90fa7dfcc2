"""The fast fleet's terminals (host_tools/simfleet.py): the clearing rows a group
makes from its journal are the rows the centre makes of the same records."""

import random

from host_tools.centre import clearing_row
from host_tools.simfleet import MemJournal, clearing_rows
from terminal import decision
from terminal import tap as T
from terminal.clock import EPOCH_OFFSET
from terminal.journal import decode


def test_clearing_rows_are_the_centres_rows_of_the_same_records():
    rnd = random.Random(3)
    tid = 0x51000007
    journal = MemJournal(500, tid, 90)
    outcomes = (T.APPROVED_OFFLINE, T.APPROVED_ONLINE, T.DECLINED_OFFLINE, T.DECLINED_ONLINE)
    for k in range(400):
        final = outcomes[k % 4]
        reasons = rnd.choice((0, decision.R_UNABLE_ONLINE, decision.R_DAILY_CAP,
                              decision.R_UNABLE_ONLINE | decision.R_LISTED))
        code = b"%06d" % rnd.randrange(1_000_000) if final == T.APPROVED_ONLINE else b"000000"
        journal.append(rnd.randrange(2**31), rnd.randbytes(8), b"4980**12", rnd.choice((1, 2)),
                       rnd.randrange(1, 50_000), final, reasons, code, rnd.randrange(2**16),
                       rnd.randrange(2**16), rnd.randrange(2**30), rnd.randrange(2**30),
                       rnd.randrange(2**16))
    raw = journal.take()
    for cutover in (0, 240):
        want = []
        for i in range(0, len(raw), 64):
            rec = decode(raw[i:i + 64])
            rec["time"] += EPOCH_OFFSET
            want.append(clearing_row(tid, rec, cutover, 0))
        assert clearing_rows(tid, raw, cutover) == want
    assert {r[10] for r in want} >= {"APPROVE_OFFLINE", "APPROVE_OFFLINE_UNABLE",
                                      "ONLINE_APPROVED", "ONLINE_DECLINED", "DECLINE_OFFLINE",
                                      "DECLINE_UNABLE"}
