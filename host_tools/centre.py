"""The authorisation and clearing centre: issuers, cards, terminals, clearing, alerts.

    with Centre("centre.db") as c:                      # schema created/migrated on open
        c.add_issuer(0x0101, "Aeon", list_quota=50)
        c.add_card("4980123412341234", 0x0101, "credit", credit_limit=300_000,
                   expiry="2028-12-31")
        r = c.authorize("4980123412341234", 0x0101, 12_000, "credit", 0x1A2B3C4D, now)
        r["approved"], r["approval_code"], r["reason"]  # True, "530217", "approved"
        c.ingest_clearing(0x1A2B3C4D, records)           # dicts from journal.decode
        c.block("4980123412341234", now)
        c.report("2026-11-01", "2026-11-30")             # rows per business day

One SQLite file (WAL, foreign keys), safe to share between `centre serve` and
the other `centre` commands: every write is one BEGIN IMMEDIATE transaction.
The file also holds the token-hash list key, so it is created mode 0600.
Schema, rules and thresholds: docs/centre.md.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import secrets
import sqlite3
import time as _time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from host_tools.errors import ToolError
from terminal import decision, tap
from terminal import journal as jr
from terminal.tokenhash import TokenHasher

PRODUCTS = ("credit", "prepaid", "debit")  # index + 1 = terminal.card.PRODUCT_*
MAX_AMOUNT = 100_000_000  # as the terminal's decision: amounts are 1..100,000,000 yen
OFFLINE_CODE = "000000"
_CODE_SPACE = 999_999  # approval codes 000001..999999: "000000" means offline
_EPOCH = dt.date(1970, 1, 1)

# Online authorisation answers: reason text -> ISO 8583 response code.
RESPONSES = {
    "approved": "00", "unknown card": "14", "issuer mismatch": "05", "product mismatch": "05",
    "blocked": "43", "expired": "54", "insufficient funds": "51",
    "over credit limit": "61", "invalid amount": "13",
}

# Journal field names (terminal.journal.FIELDS) and the older names of the brief.
_ALIASES = {
    "reasons": ("reasons", "reason_bits"),
    "offline_today": ("offline_amount_today", "offline_today"),
    "offline_since_online": ("offline_amount_since_online", "offline_since_online"),
    "offline_count": ("offline_count_since_online", "offline_count"),
}
_CORE = ("terminal_id", "seq", "time", "token_hash", "masked_token", "issuer", "amount",
         "outcome", "outcome_name", "approved", "online", "approval_code", "atc",
         "last_online_atc", "batch_id")
_KNOWN = set(_CORE) | {n for names in _ALIASES.values() for n in names}
_CLEARING_COLS = ("terminal_id", "seq", "time", "day", "token_hash", "masked_token", "issuer",
                  "amount", "outcome", "outcome_name", "approved", "online", "reasons",
                  "approval_code", "atc", "last_online_atc", "offline_count", "offline_today",
                  "offline_since_online", "batch_id", "extra", "ingested_at")

SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL);
CREATE TABLE issuers (
    id INTEGER PRIMARY KEY CHECK (id BETWEEN 0 AND 65535),
    name TEXT NOT NULL,
    list_quota INTEGER CHECK (list_quota IS NULL OR list_quota >= 0));
CREATE TABLE cards (
    token TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    issuer INTEGER NOT NULL REFERENCES issuers(id),
    product TEXT NOT NULL CHECK (product IN ('credit', 'prepaid', 'debit')),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked')),
    blocked_at INTEGER,
    block_reason TEXT,
    balance INTEGER,
    credit_limit INTEGER,
    credit_used INTEGER NOT NULL DEFAULT 0,
    expiry INTEGER,
    created_at INTEGER NOT NULL,
    CHECK ((product = 'credit') = (credit_limit IS NOT NULL)),
    CHECK ((product = 'credit') = (balance IS NULL)));
CREATE TABLE terminals (
    id INTEGER PRIMARY KEY CHECK (id BETWEEN 0 AND 4294967295),
    note TEXT NOT NULL DEFAULT '',
    key_ref TEXT NOT NULL DEFAULT '',
    last_batch INTEGER,
    last_ingest_at INTEGER);
CREATE TABLE clearing (
    terminal_id INTEGER NOT NULL REFERENCES terminals(id),
    seq INTEGER NOT NULL,
    time INTEGER NOT NULL,
    day INTEGER NOT NULL,
    token_hash BLOB NOT NULL,
    masked_token TEXT NOT NULL,
    issuer INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    outcome INTEGER NOT NULL,
    outcome_name TEXT NOT NULL,
    approved INTEGER NOT NULL,
    online INTEGER NOT NULL,
    reasons INTEGER NOT NULL,
    approval_code TEXT NOT NULL,
    atc INTEGER,
    last_online_atc INTEGER,
    offline_count INTEGER,
    offline_today INTEGER,
    offline_since_online INTEGER,
    batch_id INTEGER,
    extra TEXT,
    ingested_at INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, seq));
CREATE INDEX clearing_token ON clearing (token_hash, day);
CREATE INDEX clearing_day ON clearing (day);
CREATE TABLE online_auth (
    id INTEGER PRIMARY KEY,
    terminal_id INTEGER NOT NULL REFERENCES terminals(id),
    time INTEGER NOT NULL,
    day INTEGER NOT NULL,
    token_hash BLOB NOT NULL,
    masked_token TEXT NOT NULL,
    issuer INTEGER NOT NULL,
    product TEXT NOT NULL,
    amount INTEGER NOT NULL,
    approved INTEGER NOT NULL,
    approval_code TEXT,
    code_cycle INTEGER,
    response_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    balance_after INTEGER,
    UNIQUE (code_cycle, approval_code));
CREATE INDEX online_auth_token ON online_auth (token_hash, day);
CREATE INDEX online_auth_day ON online_auth (day);
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    day INTEGER NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    token_hash BLOB,
    issuer INTEGER,
    terminal_id INTEGER,
    detail TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'dismissed')),
    UNIQUE (kind, subject, day));
CREATE INDEX alerts_day ON alerts (day);
"""

# MIGRATIONS[i] takes the schema from user_version i to i + 1; append, never edit.
MIGRATIONS = (SCHEMA_V1,)


# -- days and small parsers --------------------------------------------------------


def day_of(unix_s: int, cutover_min: int = 0) -> int:
    """Business day (days since 1970-01-01) of a Unix time; the day starts cutover_min
    minutes after 00:00 UTC, as terminal.velocity.business_day."""
    return (unix_s - cutover_min * 60) // 86400


def as_day(value: int | str | dt.date) -> int:
    """A day number from a day number, a date or 'YYYY-MM-DD'."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return (value - _EPOCH).days
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return (dt.date.fromisoformat(value) - _EPOCH).days
        except ValueError:
            pass
    raise ToolError(f"bad day {value!r}: use YYYY-MM-DD")


def day_text(day: int) -> str:
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


def token_bytes(token: str | bytes) -> bytes:
    """The token number as the card carries it: 1-16 ASCII letters or digits."""
    raw = token.encode() if isinstance(token, str) else bytes(token)
    if not (1 <= len(raw) <= 16 and raw.isascii() and raw.isalnum()):
        raise ToolError(f"token {token!r} must be 1-16 letters or digits")
    return raw


def masked(token: bytes) -> str:
    out = bytearray(8)
    jr.mask_token_into(token, out)
    return out.decode("ascii", "replace")


def product_name(product: str | int) -> str:
    """'credit' / 'prepaid' / 'debit', from the name or terminal.card.PRODUCT_* code."""
    if isinstance(product, int) and 1 <= product <= len(PRODUCTS):
        return PRODUCTS[product - 1]
    if isinstance(product, str) and product.lower() in PRODUCTS:
        return product.lower()
    raise ToolError(f"unknown product {product!r} (have: {', '.join(PRODUCTS)})")


def _amount(value, what: str = "amount", allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_AMOUNT:
        raise ToolError(f"{what} {value!r} must be a whole number of yen, "
                        f"{low}..{MAX_AMOUNT:,}")
    return value


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


# -- clearing records ----------------------------------------------------------------


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
    of _CLEARING_COLS. Unknown fields go to the JSON `extra` column."""
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
    code, name, approved, online = _outcome(rec)
    return (terminal_id, seq, t, day_of(t, cutover_min), _hash8(_field(rec, "token_hash")),
            _text(_field(rec, "masked_token", ""), "masked token"), _int(rec, "issuer", 0),
            amount, code, name, int(approved), int(online), _int(rec, "reasons", 0),
            _approval(rec), _int(rec, "atc"), _int(rec, "last_online_atc"),
            _int(rec, "offline_count"), _int(rec, "offline_today"),
            _int(rec, "offline_since_online"), _int(rec, "batch_id", batch_id), _extras(rec),
            now)


# -- the centre ----------------------------------------------------------------------


class Centre:
    """The centre's database. `list_key` (16 bytes) keys token hashes as on the
    terminals' lists and journals; a new database without one gets a random key
    (read it back from `list_key` to provision terminals). cutover_min: the business
    day starts that many minutes after 00:00 UTC. decline_alert: online declines of
    one token in one business day that raise a `repeated_declines` alert."""

    def __init__(self, db_path: str | Path, *, list_key: bytes | None = None, key_id: int = 1,
                 cutover_min: int = 0, decline_alert: int = 3):
        self.path = str(db_path)
        self.decline_alert = decline_alert
        self.db = _connect(self.path)
        try:
            _migrate(self.db)
            self.list_key, self.key_id = self._keys(list_key, key_id)
            self.cutover_min = int(self._meta_default("cutover_min", cutover_min))
        except BaseException:
            self.db.close()
            raise
        self.hasher = TokenHasher(self.list_key)

    @classmethod
    def for_deployment(cls, db_path: str | Path, ring) -> Centre:
        """The centre keyed with the deployment's list key (from the keyring) and knowing
        its issuers, so the lists it builds match what terminals hash."""
        from host_tools.keyring import BENCH_ISSUERS

        key_id, list_key = ring.list_key()
        centre = cls(db_path, list_key=list_key, key_id=key_id)
        known = {row["id"] for row in centre.issuers()}
        names = dict(BENCH_ISSUERS)
        for issuer in ring.deployment()["issuers"]:
            if int(issuer) not in known:
                centre.add_issuer(int(issuer), names.get(int(issuer), f"issuer {issuer}"))
        return centre

    def __enter__(self) -> Centre:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so two processes never deadlock."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta ----------------------------------------------------------------------

    def _meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _meta_default(self, key: str, value):
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
        return self._meta(key)

    def _keys(self, list_key: bytes | None, key_id: int) -> tuple[bytes, int]:
        if list_key is not None and len(list_key) != 16:
            raise ToolError("the list key must be 16 bytes")
        stored = self._meta_default("list_key", bytes(list_key or secrets.token_bytes(16)))
        if list_key is not None and bytes(list_key) != stored:
            raise ToolError(f"{self.path} was created with another list key: token hashes "
                            "would not match its cards and clearing")
        return bytes(stored), int(self._meta_default("key_id", key_id))

    def token_hash(self, token: str | bytes) -> bytes:
        """The 8-byte keyed hash of a token number: the list and journal key."""
        return self.hasher.hash(token_bytes(token))

    def day(self, unix_s: int) -> int:
        return day_of(unix_s, self.cutover_min)

    # -- issuers, cards, terminals ----------------------------------------------------

    def add_issuer(self, issuer_id: int, name: str, list_quota: int | None = None) -> None:
        """Add an issuer, or rename it and set its quota (None: no quota)."""
        if not isinstance(issuer_id, int) or not 0 <= issuer_id <= 0xFFFF:
            raise ToolError(f"issuer id {issuer_id!r} must be 0..65535")
        if list_quota is not None and (not isinstance(list_quota, int) or list_quota < 0):
            raise ToolError(f"list quota {list_quota!r} must be a non-negative integer")
        with self.tx() as db:
            db.execute("INSERT INTO issuers VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                       "name = excluded.name, list_quota = excluded.list_quota",
                       (issuer_id, name, list_quota))

    def issuers(self) -> list[dict]:
        return _dicts(self.db.execute("SELECT * FROM issuers ORDER BY id"))

    def add_card(self, token: str | bytes, issuer: int, product: str | int, *,
                 balance: int | None = None, credit_limit: int | None = None,
                 expiry: int | str | dt.date | None = None, now: int | None = None) -> bytes:
        """Register a card/token; returns its token hash. Prepaid and debit cards have a
        balance (default 0), credit cards a credit limit; expiry is the last valid day."""
        raw = token_bytes(token)
        prod = product_name(product)
        if prod == "credit":
            if balance is not None:
                raise ToolError("a credit card has a credit limit, not a balance")
            credit_limit = _amount(credit_limit, "credit limit", allow_zero=True)
        else:
            if credit_limit is not None:
                raise ToolError(f"a {prod} card has a balance, not a credit limit")
            balance = _amount(balance or 0, "balance", allow_zero=True)
        self._issuer_known(issuer)
        h = self.hasher.hash(raw)
        exp = None if expiry is None else as_day(expiry)
        try:
            with self.tx() as db:
                db.execute("INSERT INTO cards (token, token_hash, issuer, product, balance, "
                           "credit_limit, expiry, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (raw.decode(), h, issuer, prod, balance, credit_limit, exp,
                            _now(now)))
        except sqlite3.IntegrityError:
            raise ToolError(f"token {raw.decode()} is already registered") from None
        return h

    def _issuer_known(self, issuer: int) -> None:
        if self.db.execute("SELECT 1 FROM issuers WHERE id = ?", (issuer,)).fetchone() is None:
            raise ToolError(f"unknown issuer {issuer!r}: add it first")

    def card(self, token: str | bytes) -> dict:
        """The card row of a token number; ToolError if unknown."""
        row = self.db.execute("SELECT * FROM cards WHERE token = ?",
                              (token_bytes(token).decode(),)).fetchone()
        if row is None:
            raise ToolError(f"unknown token {token_bytes(token).decode()}")
        return dict(row)

    def card_by_hash(self, token_hash: bytes) -> dict | None:
        row = self.db.execute("SELECT * FROM cards WHERE token_hash = ?",
                              (bytes(token_hash),)).fetchone()
        return None if row is None else dict(row)

    def top_up(self, token: str | bytes, amount: int) -> int:
        """Add to a prepaid/debit balance; returns the new balance."""
        card = self.card(token)
        if card["product"] == "credit":
            raise ToolError(f"token {card['token']} is a credit card: it has no balance")
        _amount(amount)
        with self.tx() as db:
            db.execute("UPDATE cards SET balance = balance + ? WHERE token = ?",
                       (amount, card["token"]))
        return self.card(token)["balance"]

    def block(self, token: str | bytes, when: int, reason: str = "reported") -> dict:
        """Block a card from Unix time `when` on (blocking twice keeps the first time).
        Online requests are declined at once; the next negative list carries it."""
        card = self.card(token)
        if card["status"] != "blocked":
            with self.tx() as db:
                db.execute("UPDATE cards SET status = 'blocked', blocked_at = ?, "
                           "block_reason = ? WHERE token = ?", (when, reason, card["token"]))
        return self.card(token)

    def unblock(self, token: str | bytes) -> dict:
        card = self.card(token)
        with self.tx() as db:
            db.execute("UPDATE cards SET status = 'active', blocked_at = NULL, "
                       "block_reason = NULL WHERE token = ?", (card["token"],))
        return self.card(token)

    def cards(self, status: str | None = None) -> list[dict]:
        if status is None:
            return _dicts(self.db.execute("SELECT * FROM cards ORDER BY token"))
        return _dicts(self.db.execute("SELECT * FROM cards WHERE status = ? ORDER BY token",
                                      (status,)))

    def add_terminal(self, terminal_id: int, note: str = "", key_ref: str = "") -> None:
        """Register a terminal (its key stays in the keyring; key_ref says which)."""
        _terminal_id(terminal_id)
        with self.tx() as db:
            db.execute("INSERT INTO terminals (id, note, key_ref) VALUES (?, ?, ?) "
                       "ON CONFLICT (id) DO UPDATE SET note = excluded.note, "
                       "key_ref = excluded.key_ref", (terminal_id, note, key_ref))

    def terminals(self) -> list[dict]:
        return _dicts(self.db.execute("SELECT * FROM terminals ORDER BY id"))

    @staticmethod
    def _see_terminal(db: sqlite3.Connection, terminal_id: int) -> None:
        # A terminal the link authenticated but nobody registered: keep its data.
        _terminal_id(terminal_id)
        db.execute("INSERT OR IGNORE INTO terminals (id, note) VALUES (?, 'first seen')",
                   (terminal_id,))

    # -- clearing -------------------------------------------------------------------

    def ingest_clearing(self, terminal_id: int, records: Iterable[dict | bytes],
                        batch_id: int | None = None, now: int | None = None) -> tuple[int, int]:
        """Store a clearing batch in one transaction: (inserted, duplicates). A record
        already stored under (terminal_id, seq) is a duplicate; one that differs from
        the stored copy also raises a `clearing_conflict` alert. A malformed record
        stores nothing (ToolError). Offline approvals debit the card's balance or credit."""
        t = _now(now)
        rows = [clearing_row(terminal_id, r, self.cutover_min, t, batch_id) for r in records]
        inserted = dups = 0
        with self.tx() as db:
            self._see_terminal(db, terminal_id)
            for row in rows:
                if _insert_clearing(db, row):
                    inserted += 1
                    _settle_offline(db, row)
                else:
                    dups += 1
                    self._check_duplicate(db, row, t)
            db.execute("UPDATE terminals SET last_ingest_at = ?, last_batch = "
                       "coalesce(?, last_batch) WHERE id = ?", (t, batch_id, terminal_id))
        return inserted, dups

    def _check_duplicate(self, db: sqlite3.Connection, row: tuple, now: int) -> None:
        cols = _CLEARING_COLS[:19]  # the record itself, not batch/extra/ingest time
        old = db.execute(f"SELECT {', '.join(cols)} FROM clearing WHERE terminal_id = ? "
                         "AND seq = ?", row[:2]).fetchone()
        if tuple(old) != row[:19]:
            changed = [c for c, a, b in zip(cols, tuple(old), row) if a != b]
            insert_alert(db, now, row[3], "clearing_conflict", f"{row[0]:08x}/{row[1]}",
                         terminal_id=row[0], detail={"seq": row[1], "fields": changed})

    def clearing(self, terminal_id: int | None = None,
                 token: str | bytes | None = None) -> list[dict]:
        """Stored clearing records, of one terminal and/or one token number."""
        h = None if token is None else self.token_hash(token)
        return _dicts(self.db.execute(
            "SELECT * FROM clearing WHERE terminal_id = coalesce(?, terminal_id) AND "
            "token_hash = coalesce(?, token_hash) ORDER BY time, terminal_id, seq",
            (terminal_id, h)))

    def clearing_gaps(self, terminal_id: int) -> list[tuple[int, int]]:
        """Missing sequence numbers (first, last) between the first and the last stored:
        the journal numbers records without gaps, so any gap is a lost record."""
        q = ("SELECT prev + 1, seq - 1 FROM (SELECT seq, lag(seq) OVER (ORDER BY seq) AS "
             "prev FROM clearing WHERE terminal_id = ?) WHERE seq > prev + 1")
        return [tuple(r) for r in self.db.execute(q, (terminal_id,))]

    # -- online authorisation --------------------------------------------------------

    def authorize(self, token: str | bytes, issuer: int, amount: int, product: str | int,
                  terminal_id: int, now: int) -> dict:
        """Answer a terminal's online request: {approved, approval_code, reason,
        response_code, balance}. Declined: unknown, blocked or expired card, issuer or
        product not the card's, amount not 1..100,000,000, prepaid/debit amount above
        the balance ("insufficient funds"), credit above the limit. An approval debits
        the balance (or uses credit) and gets a fresh code (6 digits, never 000000);
        a decline has approval_code "". Every request is logged."""
        raw = token_bytes(token)
        with self.tx() as db:
            self._see_terminal(db, terminal_id)
            card = db.execute("SELECT * FROM cards WHERE token = ?", (raw.decode(),)).fetchone()
            reason = _auth_rule(card, issuer, amount, product, self.day(now))
            if reason == "approved":
                _use_funds(db, card["token"], card["product"], amount)
            return self._log_auth(db, raw, card, issuer, amount, product, terminal_id, now,
                                  reason)

    def _log_auth(self, db, raw, card, issuer, amount, product, terminal_id, now, reason):
        ok = reason == "approved"
        code, cycle = self._next_code(db) if ok else ("", None)
        balance = None
        if card is not None and card["product"] != "credit":
            balance = db.execute("SELECT balance FROM cards WHERE token = ?",
                                 (card["token"],)).fetchone()[0]
        h, day = self.hasher.hash(raw), self.day(now)
        amt = amount if isinstance(amount, int) and 0 <= amount < 2**62 else -1
        try:
            product = product_name(product)
        except ToolError:
            product = str(product)
        db.execute("INSERT INTO online_auth (terminal_id, time, day, token_hash, masked_token, "
                   "issuer, product, amount, approved, approval_code, code_cycle, "
                   "response_code, reason, balance_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                   "?, ?, ?, ?, ?)", (terminal_id, now, day, h, masked(raw), issuer,
                                      product, amt, int(ok), code or None, cycle,
                                      RESPONSES[reason], reason, balance))
        if not ok:
            self._decline_alert(db, h, issuer, day, now)
        return {"approved": ok, "approval_code": code, "reason": reason,
                "response_code": RESPONSES[reason], "balance": balance}

    def _next_code(self, db: sqlite3.Connection) -> tuple[str, int]:
        # n-th approval -> (a*n + b) mod 999999 + 1 with gcd(a, 999999) = 1: a
        # permutation, so codes never repeat within a cycle of 999,999 approvals
        # and never read 000000; a and b are drawn when the database is made.
        a, b = self._code_params(db)
        n = int(self._meta("codes_issued") or 0)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('codes_issued', ?)", (n + 1,))
        return "%06d" % ((a * n + b) % _CODE_SPACE + 1), n // _CODE_SPACE

    def _code_params(self, db: sqlite3.Connection) -> tuple[int, int]:
        a = self._meta("code_a")
        if a is None:
            a = secrets.randbelow(_CODE_SPACE - 2) + 2
            while math.gcd(a, _CODE_SPACE) != 1:
                a += 1
            db.execute("INSERT INTO meta VALUES ('code_a', ?), ('code_b', ?)",
                       (a, secrets.randbelow(_CODE_SPACE)))
        return int(a), int(self._meta("code_b"))

    def _decline_alert(self, db, token_hash: bytes, issuer: int, day: int, now: int) -> None:
        n = db.execute("SELECT count(*) FROM online_auth WHERE token_hash = ? AND day = ? "
                       "AND approved = 0", (token_hash, day)).fetchone()[0]
        if n >= self.decline_alert:
            insert_alert(db, now, day, "repeated_declines", token_hash.hex(),
                         token_hash=token_hash, issuer=issuer,
                         detail={"declines": n, "source": "online"})

    def online_auths(self, day: int | None = None) -> list[dict]:
        if day is None:
            return _dicts(self.db.execute("SELECT * FROM online_auth ORDER BY id"))
        return _dicts(self.db.execute("SELECT * FROM online_auth WHERE day = ? ORDER BY id",
                                      (day,)))

    # -- alerts ---------------------------------------------------------------------

    def add_alert(self, kind: str, day: int, subject: str, *, token_hash: bytes | None = None,
                  issuer: int | None = None, terminal_id: int | None = None,
                  detail: dict | None = None, now: int | None = None) -> bool:
        """Raise an alert; False if (kind, subject, day) was already raised."""
        with self.tx() as db:
            return insert_alert(db, _now(now), day, kind, subject, token_hash=token_hash,
                                issuer=issuer, terminal_id=terminal_id, detail=detail)

    def alerts(self, from_day=None, to_day=None, kind: str | None = None,
               status: str | None = None) -> list[dict]:
        lo = -(2**62) if from_day is None else as_day(from_day)
        hi = 2**62 if to_day is None else as_day(to_day)
        rows = _dicts(self.db.execute(
            "SELECT * FROM alerts WHERE day BETWEEN ? AND ? AND kind = coalesce(?, kind) "
            "AND status = coalesce(?, status) ORDER BY day, id", (lo, hi, kind, status)))
        for r in rows:
            r["detail"] = json.loads(r["detail"])
        return rows

    def dismiss_alert(self, alert_id: int) -> None:
        """A flag judged harmless: it no longer feeds the negative list."""
        with self.tx() as db:
            if db.execute("UPDATE alerts SET status = 'dismissed' WHERE id = ?",
                          (alert_id,)).rowcount == 0:
                raise ToolError(f"no alert {alert_id}")

    # -- report ---------------------------------------------------------------------

    def report(self, from_day: int | str | dt.date, to_day: int | str | dt.date) -> list[dict]:
        """One row per business day from_day..to_day (inclusive): offline approvals
        (clearing) and online approvals (the centre's log), counts and yen; declines
        offline (clearing) and online (log); alerts raised for that day."""
        lo, hi = as_day(from_day), as_day(to_day)
        if hi < lo:
            raise ToolError(f"report: {day_text(hi)} is before {day_text(lo)}")
        if hi - lo > 3660:
            raise ToolError("report: at most ten years at a time")
        rows = {d: _report_row(d) for d in range(lo, hi + 1)}
        for sql, cols in _REPORT_QUERIES:
            for r in self.db.execute(sql, (lo, hi)):
                rows[r[0]].update(zip(cols, r[1:]))
        for r in rows.values():
            r["declines"] = r["offline_declines"] + r["online_declines"]
        return list(rows.values())


_REPORT_QUERIES = (
    ("SELECT day, count(*), sum(amount) FROM clearing WHERE day BETWEEN ? AND ? "
     "AND approved = 1 AND online = 0 GROUP BY day", ("offline_count", "offline_amount")),
    ("SELECT day, count(*) FROM clearing WHERE day BETWEEN ? AND ? "
     "AND approved = 0 AND online = 0 GROUP BY day", ("offline_declines",)),
    ("SELECT day, sum(approved), sum(CASE WHEN approved THEN amount ELSE 0 END), "
     "sum(1 - approved) FROM online_auth WHERE day BETWEEN ? AND ? GROUP BY day",
     ("online_count", "online_amount", "online_declines")),
    ("SELECT day, count(*) FROM alerts WHERE day BETWEEN ? AND ? GROUP BY day", ("alerts",)),
)


def _report_row(day: int) -> dict:
    return {"day": day, "date": day_text(day), "offline_count": 0, "offline_amount": 0,
            "online_count": 0, "online_amount": 0, "offline_declines": 0,
            "online_declines": 0, "declines": 0, "alerts": 0}


# -- module helpers --------------------------------------------------------------------


def _now(now: int | None) -> int:
    return int(_time.time()) if now is None else now


def _terminal_id(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFFFFFF:
        raise ToolError(f"terminal id {value!r} must be 0..0xFFFFFFFF")
    return value


def _dicts(cur: sqlite3.Cursor) -> list[dict]:
    return [dict(r) for r in cur]


def _connect(path: str) -> sqlite3.Connection:
    if path != ":memory:" and not os.path.exists(path):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as e:
            raise ToolError(f"cannot create centre database {path}: {e.strerror}") from None
    try:
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        if path != ":memory:":
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as e:
        raise ToolError(f"{path} is not a usable centre database: {e}") from None
    return db


def _migrate(db: sqlite3.Connection) -> None:
    # The version is read inside the write transaction: two processes opening a
    # new file at once migrate it once.
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise ToolError(f"centre database schema {version} is newer than this termctl "
                            f"knows ({len(MIGRATIONS)}): upgrade termctl")
        for v in range(version, len(MIGRATIONS)):
            for stmt in MIGRATIONS[v].split(";"):
                if stmt.strip():
                    db.execute(stmt)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _insert_clearing(db: sqlite3.Connection, row: tuple) -> bool:
    cur = db.execute(f"INSERT OR IGNORE INTO clearing ({', '.join(_CLEARING_COLS)}) VALUES "
                     f"({', '.join('?' * len(_CLEARING_COLS))})", row)
    return cur.rowcount == 1


def _settle_offline(db: sqlite3.Connection, row: tuple) -> None:
    # An offline approval reaches the issuer only now: charge it to the card.
    # (Online approvals were charged when authorised.)
    if not row[10] or row[11]:
        return
    db.execute("UPDATE cards SET balance = balance - ?, credit_used = credit_used + "
               "CASE WHEN product = 'credit' THEN ? ELSE 0 END WHERE token_hash = ?",
               (row[7], row[7], row[4]))


def _auth_rule(card, issuer, amount, product, day: int) -> str:
    if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= MAX_AMOUNT:
        return "invalid amount"
    if card is None:
        return "unknown card"
    if card["issuer"] != issuer:
        return "issuer mismatch"
    try:
        if product_name(product) != card["product"]:
            return "product mismatch"
    except ToolError:
        return "product mismatch"
    if card["status"] == "blocked":
        return "blocked"
    if card["expiry"] is not None and day > card["expiry"]:
        return "expired"
    if card["product"] != "credit":
        return "insufficient funds" if amount > card["balance"] else "approved"
    used = card["credit_used"] + amount
    return "over credit limit" if used > card["credit_limit"] else "approved"


def _use_funds(db: sqlite3.Connection, token: str, product: str, amount: int) -> None:
    col = "credit_used = credit_used + ?" if product == "credit" else "balance = balance - ?"
    db.execute(f"UPDATE cards SET {col} WHERE token = ?", (amount, token))


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
