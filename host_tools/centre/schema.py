"""The centre's SQLite schema, its migrations, and opening the file.

    db = connect("centre.db")     # created mode 0600 (it holds the list key), WAL
    migrate(db)                   # to the newest schema, once even if two processes race

Append a migration to MIGRATIONS to change the schema; never edit one.
"""

from __future__ import annotations

import os
import sqlite3

from host_tools.errors import ToolError

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

# Journal format 2: every record carries its journal's epoch, and a record is
# known by (terminal, epoch, seq): a terminal whose flash was formatted starts a
# new epoch at seq 1 again. Records stored before are epoch 0.
SCHEMA_V2 = """
CREATE TABLE clearing_v2 (
    terminal_id INTEGER NOT NULL REFERENCES terminals(id),
    epoch INTEGER NOT NULL DEFAULT 0,
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
    PRIMARY KEY (terminal_id, epoch, seq));
INSERT INTO clearing_v2 (terminal_id, epoch, seq, time, day, token_hash, masked_token, issuer,
    amount, outcome, outcome_name, approved, online, reasons, approval_code, atc,
    last_online_atc, offline_count, offline_today, offline_since_online, batch_id, extra,
    ingested_at)
    SELECT terminal_id, 0, seq, time, day, token_hash, masked_token, issuer, amount, outcome,
    outcome_name, approved, online, reasons, approval_code, atc, last_online_atc,
    offline_count, offline_today, offline_since_online, batch_id, extra, ingested_at
    FROM clearing;
DROP TABLE clearing;
ALTER TABLE clearing_v2 RENAME TO clearing;
CREATE INDEX clearing_token ON clearing (token_hash, day);
CREATE INDEX clearing_day ON clearing (day);
"""

# MIGRATIONS[i] takes the schema from user_version i to i + 1; append, never edit.
MIGRATIONS = (SCHEMA_V1, SCHEMA_V2)


def connect(path: str) -> sqlite3.Connection:
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


def migrate(db: sqlite3.Connection) -> None:
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


def meta(db: sqlite3.Connection, key: str):
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def dicts(cur: sqlite3.Cursor) -> list[dict]:
    return [dict(r) for r in cur]
