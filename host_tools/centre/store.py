"""The Centre: issuers, cards and terminals in one SQLite file, with clearing,
online authorisation, alerts and the report (each in its own module here).

    with Centre("centre.db") as c:
        c.add_card("4980123412341234", 0x0101, "credit", credit_limit=300_000)
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from host_tools.centre.alerts import insert_alert
from host_tools.centre.authorise import RESPONSES, auth_rule, next_code, use_funds
from host_tools.centre.clearing import (
    clearing_row,
    epoch_runs,
    insert_clearing_many,
    new_epoch_alert,
    same_as_stored,
    split_new,
)
from host_tools.centre.report import report as report_rows
from host_tools.centre.schema import connect, dicts, meta, migrate
from host_tools.centre.values import (
    as_day,
    check_amount,
    check_terminal_id,
    day_of,
    day_text,
    masked,
    now_or,
    product_name,
    token_bytes,
)
from host_tools.errors import ToolError
from terminal.tokenhash import TokenHasher


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
        self.db = connect(self.path)
        try:
            migrate(self.db)
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
        return meta(self.db, key)

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
        return dicts(self.db.execute("SELECT * FROM issuers ORDER BY id"))

    def add_card(self, token: str | bytes, issuer: int, product: str | int, *,
                 balance: int | None = None, credit_limit: int | None = None,
                 expiry: int | str | dt.date | None = None, now: int | None = None) -> bytes:
        """Register a card/token; returns its token hash. Prepaid and debit cards have a
        balance (default 0), credit cards a credit limit; expiry is the last valid day."""
        row = self._card_row(token, issuer, product, balance, credit_limit, expiry, now)
        try:
            with self.tx() as db:
                db.execute("INSERT INTO cards (token, token_hash, issuer, product, balance, "
                           "credit_limit, expiry, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           row)
        except sqlite3.IntegrityError:
            raise ToolError(f"token {row[0]} is already registered") from None
        return row[1]

    def add_cards(self, cards: Iterable[tuple], now: int | None = None) -> None:
        """Register many cards in one transaction (a simulated world's): each
        (token, issuer, product, balance, credit_limit), checked as add_card checks."""
        known = {r["id"] for r in self.issuers()}
        rows = [self._card_row(t, i, p, b, c, None, now, known) for t, i, p, b, c in cards]
        try:
            with self.tx() as db:
                db.executemany("INSERT INTO cards (token, token_hash, issuer, product, "
                               "balance, credit_limit, expiry, created_at) VALUES (?, ?, ?, "
                               "?, ?, ?, ?, ?)", rows)
        except sqlite3.IntegrityError as e:
            raise ToolError(f"a token is already registered ({e})") from None

    def _card_row(self, token, issuer, product, balance, credit_limit, expiry, now,
                  known=None) -> tuple:
        raw = token_bytes(token)
        prod = product_name(product)
        if prod == "credit":
            if balance is not None:
                raise ToolError("a credit card has a credit limit, not a balance")
            credit_limit = check_amount(credit_limit, "credit limit", allow_zero=True)
        else:
            if credit_limit is not None:
                raise ToolError(f"a {prod} card has a balance, not a credit limit")
            balance = check_amount(balance or 0, "balance", allow_zero=True)
        if known is None or issuer not in known:
            self._issuer_known(issuer)
        exp = None if expiry is None else as_day(expiry)
        return (raw.decode(), self.hasher.hash(raw), issuer, prod, balance, credit_limit, exp,
                now_or(now))

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
        check_amount(amount)
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
            return dicts(self.db.execute("SELECT * FROM cards ORDER BY token"))
        return dicts(self.db.execute("SELECT * FROM cards WHERE status = ? ORDER BY token",
                                      (status,)))

    def add_terminal(self, terminal_id: int, note: str = "", key_ref: str = "") -> None:
        """Register a terminal (its key stays in the keyring; key_ref says which)."""
        check_terminal_id(terminal_id)
        with self.tx() as db:
            db.execute("INSERT INTO terminals (id, note, key_ref) VALUES (?, ?, ?) "
                       "ON CONFLICT (id) DO UPDATE SET note = excluded.note, "
                       "key_ref = excluded.key_ref", (terminal_id, note, key_ref))

    def terminals(self) -> list[dict]:
        return dicts(self.db.execute("SELECT * FROM terminals ORDER BY id"))

    @staticmethod
    def _see_terminal(db: sqlite3.Connection, terminal_id: int) -> None:
        # A terminal the link authenticated but nobody registered: keep its data.
        check_terminal_id(terminal_id)
        db.execute("INSERT OR IGNORE INTO terminals (id, note) VALUES (?, 'first seen')",
                   (terminal_id,))

    # -- clearing -------------------------------------------------------------------

    def ingest_clearing(self, terminal_id: int, records: Iterable[dict | bytes],
                        batch_id: int | None = None, now: int | None = None) -> tuple[int, int]:
        """Store a clearing batch in one transaction: (inserted, duplicates). A record
        is known by (terminal_id, epoch, seq); one already stored the same is a
        duplicate. A malformed record stores nothing (ToolError). A record that
        differs from the stored copy is not stored: a `clearing_conflict` alert,
        the others stored, then ToolError, so the caller does not acknowledge the
        batch and the terminal keeps every record the centre does not hold. A
        terminal's first records under a new epoch raise `journal_restarted`.
        Offline approvals debit the card's balance or credit."""
        t = now_or(now)
        rows = [clearing_row(terminal_id, r, self.cutover_min, t, batch_id) for r in records]
        return self.ingest_rows(terminal_id, rows, batch_id, t)

    def ingest_rows(self, terminal_id: int, rows: list[tuple], batch_id: int | None = None,
                    now: int | None = None) -> tuple[int, int]:
        """ingest_clearing from rows clearing_row made (the fleet simulation makes them
        where the records were journalled, in parallel); their ingest time is now's.
        Each epoch's run of the batch is stored with one statement."""
        return self.ingest_rows_many([(terminal_id, rows)], batch_id, now)[0]

    def ingest_rows_many(self, batches: list[tuple[int, list[tuple]]],
                         batch_id: int | None = None,
                         now: int | None = None) -> list[tuple[int, int]]:
        """ingest_rows for many terminals' batches, [(terminal id, rows)], in one
        transaction and with one statement for all their new rows (a simulated night
        of 1,000 terminals: one transaction, not 1,000); (inserted, duplicates) of
        each. A conflicting record is handled as ingest_rows does: the others are
        stored, then ToolError for the first terminal with one."""
        t = now_or(now)
        counts = []
        failed: list[tuple[int, list[int], int, int]] = []
        with self.tx() as db:
            pending: list[tuple] = []
            seen: set[int] = set()
            for terminal_id, rows in batches:
                if terminal_id in seen:  # its earlier rows must be stored to be found
                    insert_clearing_many(db, pending)
                    pending, seen = [], set()
                seen.add(terminal_id)
                rows = [r[:-1] + (t,) for r in rows]
                inserted = dups = 0
                conflicts = []
                self._see_terminal(db, terminal_id)
                for run in epoch_runs(rows):
                    new_epoch_alert(db, run[0], t)
                    new, old = split_new(db, run)
                    pending += new
                    inserted += len(new)
                    if old:  # compared with stored rows, maybe this batch's own
                        insert_clearing_many(db, pending)
                        pending = []
                    for row in old:
                        if same_as_stored(db, row, t):
                            dups += 1
                        else:
                            conflicts.append(row[2])
                db.execute("UPDATE terminals SET last_ingest_at = ?, last_batch = "
                           "coalesce(?, last_batch) WHERE id = ?", (t, batch_id, terminal_id))
                counts.append((inserted, dups))
                if conflicts:
                    failed.append((terminal_id, conflicts, inserted, dups))
            insert_clearing_many(db, pending)
        if failed:
            terminal_id, conflicts, inserted, dups = failed[0]
            raise ToolError(f"terminal {terminal_id:08x}: {len(conflicts)} record(s) (seq "
                            f"{conflicts[0]}{'..' if len(conflicts) > 1 else ''}) differ from "
                            "the centre's copy: not stored, so the batch must not be "
                            f"acknowledged ({inserted} new, {dups} already there; see the "
                            "clearing_conflict alerts)")
        return counts

    def clearing(self, terminal_id: int | None = None,
                 token: str | bytes | None = None) -> list[dict]:
        """Stored clearing records, of one terminal and/or one token number."""
        h = None if token is None else self.token_hash(token)
        return dicts(self.db.execute(
            "SELECT * FROM clearing WHERE terminal_id = coalesce(?, terminal_id) AND "
            "token_hash = coalesce(?, token_hash) ORDER BY time, terminal_id, seq",
            (terminal_id, h)))

    def clearing_gaps(self, terminal_id: int) -> list[tuple[int, int]]:
        """Missing sequence numbers (first, last) between the first and the last stored:
        the journal numbers records without gaps, so any gap is a lost record."""
        q = ("SELECT prev + 1, seq - 1 FROM (SELECT seq, lag(seq) OVER (PARTITION BY epoch "
             "ORDER BY seq) AS prev FROM clearing WHERE terminal_id = ?) WHERE seq > prev + 1")
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
            reason = auth_rule(card, issuer, amount, product, self.day(now))
            if reason == "approved":
                use_funds(db, card["token"], card["product"], amount)
            return self._log_auth(db, raw, card, issuer, amount, product, terminal_id, now,
                                  reason)

    def _log_auth(self, db, raw, card, issuer, amount, product, terminal_id, now, reason):
        ok = reason == "approved"
        code, cycle = next_code(db) if ok else ("", None)
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

    def _decline_alert(self, db, token_hash: bytes, issuer: int, day: int, now: int) -> None:
        n = db.execute("SELECT count(*) FROM online_auth WHERE token_hash = ? AND day = ? "
                       "AND approved = 0", (token_hash, day)).fetchone()[0]
        if n >= self.decline_alert:
            insert_alert(db, now, day, "repeated_declines", token_hash.hex(),
                         token_hash=token_hash, issuer=issuer,
                         detail={"declines": n, "source": "online"})

    def online_auths(self, day: int | None = None) -> list[dict]:
        if day is None:
            return dicts(self.db.execute("SELECT * FROM online_auth ORDER BY id"))
        return dicts(self.db.execute("SELECT * FROM online_auth WHERE day = ? ORDER BY id",
                                     (day,)))

    # -- alerts ---------------------------------------------------------------------

    def add_alert(self, kind: str, day: int, subject: str, *, token_hash: bytes | None = None,
                  issuer: int | None = None, terminal_id: int | None = None,
                  detail: dict | None = None, now: int | None = None) -> bool:
        """Raise an alert; False if (kind, subject, day) was already raised."""
        with self.tx() as db:
            return insert_alert(db, now_or(now), day, kind, subject, token_hash=token_hash,
                                issuer=issuer, terminal_id=terminal_id, detail=detail)

    def alerts(self, from_day=None, to_day=None, kind: str | None = None,
               status: str | None = None) -> list[dict]:
        lo = -(2**62) if from_day is None else as_day(from_day)
        hi = 2**62 if to_day is None else as_day(to_day)
        rows = dicts(self.db.execute(
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
        return report_rows(self.db, lo, hi)
