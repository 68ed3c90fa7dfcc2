"""Clearing records into the centre: a journal record (dict or 64 bytes) becomes a
row of the `clearing` table, stored once per (terminal, epoch, seq).

    row = clearing_row(terminal_id, rec, cutover_min, now)
    if insert_clearing(db, row): settle_offline(db, row)
    elif not same_as_stored(db, row, now): ...   # a differing copy: clearing_conflict

The epoch is the terminal journal's (terminal.journal): drawn when the journal is
made, so a terminal whose flash was formatted numbers its records from 1 again
under a new epoch, and they never meet the records stored before. Records of
format 1 (no epoch) are epoch 0.
"""

from __future__ import annotations

import json
import sqlite3

from host_tools.centre.alerts import insert_alert
from host_tools.centre.values import day_of
from host_tools.errors import ToolError
from terminal import decision, tap
from terminal import journal as jr

OFFLINE_CODE = "000000"  # the approval code of every offline decision

# Journal field names (terminal.journal.FIELDS) and the older names of the brief.
_ALIASES = {
    "reasons": ("reasons", "reason_bits"),
    "offline_today": ("offline_amount_today", "offline_today"),
    "offline_since_online": ("offline_amount_since_online", "offline_since_online"),
    "offline_count": ("offline_count_since_online", "offline_count"),
}
_CORE = ("terminal_id", "epoch", "seq", "time", "token_hash", "masked_token", "issuer", "amount",
         "outcome", "outcome_name", "approved", "online", "approval_code", "atc",
         "last_online_atc", "batch_id")
_KNOWN = set(_CORE) | {n for names in _ALIASES.values() for n in names}
CLEARING_COLS = ("terminal_id", "epoch", "seq", "time", "day", "token_hash", "masked_token",
                 "issuer", "amount", "outcome", "outcome_name", "approved", "online", "reasons",
                 "approval_code", "atc", "last_online_atc", "offline_count", "offline_today",
                 "offline_since_online", "batch_id", "extra", "ingested_at")
_RECORD = CLEARING_COLS.index("batch_id")  # the record itself: not batch, extra, ingest time
_COL = {c: i for i, c in enumerate(CLEARING_COLS)}


def classify_outcome(outcome: int, reasons: int, approval_code: str) -> tuple[str, bool, bool]:
    """(name, approved, online) of a journal outcome: the terminal's final result
    (terminal.tap APPROVED_OFFLINE / APPROVED_ONLINE / DECLINED_OFFLINE /
    DECLINED_ONLINE). Offline results with R_UNABLE_ONLINE were decided by the
    Default mask (Y3/Z3) because the centre could not be reached."""
    unable = bool(reasons & decision.R_UNABLE_ONLINE)
    if outcome == tap.APPROVED_OFFLINE:
        return ("APPROVE_OFFLINE_UNABLE" if unable else "APPROVE_OFFLINE"), True, False
    if outcome == tap.DECLINED_OFFLINE:
        return ("DECLINE_UNABLE" if unable else "DECLINE_OFFLINE"), False, False
    if outcome == tap.APPROVED_ONLINE:
        return "ONLINE_APPROVED", True, True
    if outcome == tap.DECLINED_ONLINE:
        return "ONLINE_DECLINED", False, True
    return f"OUTCOME_{outcome}", False, False


_OUTCOME_CODES = {"APPROVED_OFFLINE": tap.APPROVED_OFFLINE,
                  "APPROVED_ONLINE": tap.APPROVED_ONLINE,
                  "DECLINED_OFFLINE": tap.DECLINED_OFFLINE,
                  "DECLINED_ONLINE": tap.DECLINED_ONLINE}


def _field(rec: dict, name: str, default=None):
    for key in _ALIASES.get(name, (name,)):
        if key in rec:
            return rec[key]
    return default


def _text(value, what: str) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("ascii", "replace")
    if isinstance(value, str):
        return value
    raise ToolError(f"{what} {value!r} is not text")


def _hash8(value) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise ToolError(f"token hash {value!r} is not hex") from None
    if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) != 8:
        raise ToolError(f"token hash {value!r} must be 8 bytes")
    return bytes(value)


def _int(rec: dict, name: str, default: int | None = None) -> int | None:
    v = _field(rec, name, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ToolError(f"{name} {v!r} must be a non-negative integer")
    return v


def _extras(rec: dict) -> str | None:
    extra = {k: (bytes(v).hex() if isinstance(v, (bytes, bytearray)) else v)
             for k, v in rec.items() if k not in _KNOWN}
    return json.dumps(extra, sort_keys=True, default=str) if extra else None


def _outcome(rec: dict) -> tuple[int, str, bool, bool]:
    raw = _field(rec, "outcome")
    code = _OUTCOME_CODES.get(raw, raw) if isinstance(raw, str) else raw
    if not isinstance(code, int) or isinstance(code, bool):
        raise ToolError(f"outcome {raw!r} is not a decision outcome")
    reasons = _int(rec, "reasons", 0) or 0
    name, approved, online = classify_outcome(code, reasons, _approval(rec))
    # a record that says what happened explicitly wins over the derivation
    name = rec.get("outcome_name", name)
    approved = bool(rec.get("approved", approved))
    online = bool(rec.get("online", online))
    return code, name, approved, online


def _approval(rec: dict) -> str:
    return _text(_field(rec, "approval_code", OFFLINE_CODE), "approval code")


def clearing_row(terminal_id: int, rec: dict | bytes, cutover_min: int, now: int,
                 batch_id: int | None = None) -> tuple:
    """One clearing record (a dict from journal.decode, or its 64 raw bytes) as a row
    of CLEARING_COLS. Unknown fields go to the JSON `extra` column."""
    if isinstance(rec, (bytes, bytearray, memoryview)):
        try:
            rec = jr.decode(bytes(rec))
        except ValueError as e:
            raise ToolError(str(e)) from None
    if not isinstance(rec, dict):
        raise ToolError(f"a clearing record must be a dict or {jr.RECORD_SIZE} bytes")
    tid = _int(rec, "terminal_id", terminal_id)
    if tid != terminal_id:
        raise ToolError(f"record of terminal {tid:08x} in a batch of terminal {terminal_id:08x}")
    seq, t, amount = _int(rec, "seq"), _int(rec, "time"), _int(rec, "amount")
    if seq is None or t is None or amount is None:
        raise ToolError("a clearing record needs seq, time and amount")
    epoch = _int(rec, "epoch", 0) or 0
    if epoch > 0xFFFFFFFF:
        raise ToolError(f"epoch {epoch} does not fit 32 bits")
    code, name, approved, online = _outcome(rec)
    return (terminal_id, epoch, seq, t, day_of(t, cutover_min),
            _hash8(_field(rec, "token_hash")),
            _text(_field(rec, "masked_token", ""), "masked token"), _int(rec, "issuer", 0),
            amount, code, name, int(approved), int(online), _int(rec, "reasons", 0),
            _approval(rec), _int(rec, "atc"), _int(rec, "last_online_atc"),
            _int(rec, "offline_count"), _int(rec, "offline_today"),
            _int(rec, "offline_since_online"), _int(rec, "batch_id", batch_id), _extras(rec),
            now)


def insert_clearing(db: sqlite3.Connection, row: tuple) -> bool:
    cur = db.execute(f"INSERT OR IGNORE INTO clearing ({', '.join(CLEARING_COLS)}) VALUES "
                     f"({', '.join('?' * len(CLEARING_COLS))})", row)
    return cur.rowcount == 1


def epoch_runs(rows: list[tuple]) -> list[list[tuple]]:
    """A batch cut where its epoch changes: each run is one journal's records."""
    runs: list[list[tuple]] = []
    for r in rows:
        if runs and runs[-1][0][1] == r[1]:
            runs[-1].append(r)
        else:
            runs.append([r])
    return runs


def split_new(db: sqlite3.Connection, run: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    """(rows not stored yet, rows already stored) of one epoch run: a row is stored
    when its (terminal, epoch, seq) is, or came earlier in the same batch."""
    if not run:
        return [], []
    tid, epoch = run[0][0], run[0][1]
    seqs = [r[2] for r in run]
    stored = {s for (s,) in db.execute("SELECT seq FROM clearing WHERE terminal_id = ? AND "
                                       "epoch = ? AND seq BETWEEN ? AND ?",
                                       (tid, epoch, min(seqs), max(seqs)))}
    new, old = [], []
    for r in run:
        if r[2] in stored:
            old.append(r)
        else:
            stored.add(r[2])
            new.append(r)
    return new, old


def insert_clearing_many(db: sqlite3.Connection, rows: list[tuple]) -> None:
    """Rows split_new found new, in one statement each: stored, and the offline
    approvals among them charged (as insert_clearing then settle_offline, row by row)."""
    db.executemany(f"INSERT INTO clearing ({', '.join(CLEARING_COLS)}) VALUES "
                   f"({', '.join('?' * len(CLEARING_COLS))})", rows)
    amount, h, ok, online = _COL["amount"], _COL["token_hash"], _COL["approved"], _COL["online"]
    db.executemany("UPDATE cards SET balance = balance - ?, credit_used = credit_used + "
                   "CASE WHEN product = 'credit' THEN ? ELSE 0 END WHERE token_hash = ?",
                   [(r[amount], r[amount], r[h]) for r in rows if r[ok] and not r[online]])


def settle_offline(db: sqlite3.Connection, row: tuple) -> None:
    # An offline approval reaches the issuer only now: charge it to the card.
    # (Online approvals were charged when authorised.)
    if not row[_COL["approved"]] or row[_COL["online"]]:
        return
    amount = row[_COL["amount"]]
    db.execute("UPDATE cards SET balance = balance - ?, credit_used = credit_used + "
               "CASE WHEN product = 'credit' THEN ? ELSE 0 END WHERE token_hash = ?",
               (amount, amount, row[_COL["token_hash"]]))


def same_as_stored(db: sqlite3.Connection, row: tuple, now: int) -> bool:
    """A record already stored under its (terminal, epoch, seq): True if the stored
    copy is the same; False, with a `clearing_conflict` alert, if it differs (the
    record is not stored: the batch must not be acknowledged)."""
    cols = CLEARING_COLS[:_RECORD]
    old = db.execute(f"SELECT {', '.join(cols)} FROM clearing WHERE terminal_id = ? "
                     "AND epoch = ? AND seq = ?", row[:3]).fetchone()
    if tuple(old) == row[:_RECORD]:
        return True
    changed = [c for c, a, b in zip(cols, tuple(old), row) if a != b]
    tid, epoch, seq = row[:3]
    insert_alert(db, now, row[_COL["day"]], "clearing_conflict", f"{tid:08x}/{epoch:08x}/{seq}",
                 terminal_id=tid, detail={"epoch": epoch, "seq": seq, "fields": changed})
    return False


def new_epoch_alert(db: sqlite3.Connection, row: tuple, now: int) -> None:
    """A terminal's first record under an epoch the centre has not seen, while it
    holds records of another: its journal was made again (its flash formatted)."""
    tid, epoch, seq = row[:3]
    seen = [r[0] for r in db.execute("SELECT DISTINCT epoch FROM clearing WHERE terminal_id "
                                     "= ? AND epoch != ?", (tid, epoch))]
    if seen and not db.execute("SELECT 1 FROM clearing WHERE terminal_id = ? AND epoch = ? "
                               "LIMIT 1", (tid, epoch)).fetchone():
        insert_alert(db, now, row[_COL["day"]], "journal_restarted", f"{tid:08x}/{epoch:08x}",
                     terminal_id=tid, detail={"epoch": epoch, "first_seq": seq,
                                              "earlier_epochs": sorted(seen)})
