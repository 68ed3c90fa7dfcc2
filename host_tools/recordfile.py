"""Clearing records written as CSV or JSON lines (`termctl batch pull --csv/--jsonl`).

    append_csv("batch.csv", batch.records)     # header written when the file is new
    append_jsonl("batch.jsonl", batch.records)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

_ASCII_FIELDS = ("approval_code", "masked_token")


def plain(rec: dict) -> dict:
    """A record for CSV/JSON: ASCII fields as text, other bytes as hex."""
    out = {}
    for k, v in rec.items():
        if isinstance(v, bytes | bytearray):
            v = bytes(v).decode("ascii", "replace") if k in _ASCII_FIELDS else bytes(v).hex()
        out[k] = v
    return out


def append_csv(path, records) -> None:
    exists = Path(path).exists()
    with open(path, "a", newline="") as f:
        rows = [plain(r) for r in records]
        if not rows:
            return
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if not exists:
            w.writeheader()
        w.writerows(rows)


def append_jsonl(path, records) -> None:
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(plain(r)) + "\n")
