"""Alerts: one row per (kind, subject, day), raised by the centre and the detector.

    with centre.tx() as db:
        insert_alert(db, now, day, "repeated_declines", token_hash.hex(), detail={...})
"""

from __future__ import annotations

import json
import sqlite3


def insert_alert(db: sqlite3.Connection, now: int, day: int, kind: str, subject: str, *,
                 token_hash: bytes | None = None, issuer: int | None = None,
                 terminal_id: int | None = None, detail: dict | None = None) -> bool:
    """Insert an alert inside the caller's transaction; False if (kind, subject, day)
    was raised before (so re-running the detector raises nothing twice)."""
    cur = db.execute("INSERT OR IGNORE INTO alerts (created_at, day, kind, subject, token_hash, "
                     "issuer, terminal_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (now, day, kind, subject, token_hash, issuer, terminal_id,
                      json.dumps(detail or {}, sort_keys=True, default=str)))
    return cur.rowcount == 1
