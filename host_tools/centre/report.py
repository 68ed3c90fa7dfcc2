"""The per-day report (`termctl centre report`): offline and online approvals,
declines and alerts per business day, and the entries the next list built for
that day withheld over issuers' quotas (each such issuer is online-only on the
terminals until a list fits its quota again).

    rows = report(db, lo_day, hi_day)    # one dict per day, days without traffic too
"""

from __future__ import annotations

import sqlite3

from host_tools.centre.values import day_text

_QUERIES = (
    ("SELECT day, count(*), sum(amount) FROM clearing WHERE day BETWEEN ? AND ? "
     "AND approved = 1 AND online = 0 GROUP BY day", ("offline_count", "offline_amount")),
    ("SELECT day, count(*) FROM clearing WHERE day BETWEEN ? AND ? "
     "AND approved = 0 AND online = 0 GROUP BY day", ("offline_declines",)),
    ("SELECT day, sum(approved), sum(CASE WHEN approved THEN amount ELSE 0 END), "
     "sum(1 - approved) FROM online_auth WHERE day BETWEEN ? AND ? GROUP BY day",
     ("online_count", "online_amount", "online_declines")),
    ("SELECT day, count(*) FROM alerts WHERE day BETWEEN ? AND ? GROUP BY day", ("alerts",)),
    # the detector's list_quota_overflow alert, one per issuer and day: what it left out
    ("SELECT day, sum(json_extract(detail, '$.left_out')) FROM alerts WHERE day BETWEEN ? "
     "AND ? AND kind = 'list_quota_overflow' GROUP BY day", ("list_withheld",)),
)


def report(db: sqlite3.Connection, lo: int, hi: int) -> list[dict]:
    rows = {d: _row(d, day_text(d)) for d in range(lo, hi + 1)}
    for sql, cols in _QUERIES:
        for r in db.execute(sql, (lo, hi)):
            rows[r[0]].update(zip(cols, r[1:]))
    for r in rows.values():
        r["declines"] = r["offline_declines"] + r["online_declines"]
    return list(rows.values())


def _row(day: int, date: str) -> dict:
    return {"day": day, "date": date, "offline_count": 0, "offline_amount": 0,
            "online_count": 0, "online_amount": 0, "offline_declines": 0,
            "online_declines": 0, "declines": 0, "alerts": 0, "list_withheld": 0}
