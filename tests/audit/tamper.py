"""What an insider with write access to the data folder does to the audit files, by hand.

Each helper works on the real SQLite file with a plain connection, as `sqlite3 audit.db` would:
no sendvault code and, unless a function takes a signing key, no key.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sendvault.audit.record import GENESIS, chain_hash
from sendvault.audit.store import head_message


def connect(path: Path) -> sqlite3.Connection:
    """A plain connection to the audit file, as the insider's own tools open it."""
    return sqlite3.connect(path, isolation_level=None)


def rechain(path: Path, seq: int, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` in record ``seq``'s body, then recompute every later link.

    Only SHA-256 is needed: the result is a consistent chain that the stored head does not sign.
    """
    db = connect(path)
    row = db.execute("SELECT hash FROM audit_records WHERE seq = ?", (seq - 1,)).fetchone()
    prev = bytes(row[0]) if row else GENESIS
    rows = db.execute(
        "SELECT seq, body, request, response FROM audit_records WHERE seq >= ? ORDER BY seq", (seq,)
    ).fetchall()
    db.execute("BEGIN")
    for number, stored, request, response in rows:
        body = bytes(stored)
        if number == seq:
            assert old in body, "the text to replace is not in the record"
            body = body.replace(old, new)
        digest = chain_hash(prev, number, body, bytes(request), bytes(response))
        db.execute(
            "UPDATE audit_records SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (body, prev, digest, number),
        )
        prev = digest
    db.execute("COMMIT")
    db.close()


def append_keyless(path: Path, count: int) -> None:
    """Append ``count`` copies of the last record after it, each correctly linked and hashed."""
    db = connect(path)
    row = db.execute(
        "SELECT seq, ts_us, event, actor, route, status, body, hash, request, response"
        " FROM audit_records ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    seq, ts_us, event, actor, route, status, body, prev, request, response = row
    fingerprints = [r[0] for r in db.execute("SELECT fp FROM audit_fingerprints WHERE seq = ?", (seq,))]
    for _ in range(count):
        seq += 1
        db.executemany("INSERT INTO audit_fingerprints VALUES (?, ?)", [(fp, seq) for fp in fingerprints])
        digest = chain_hash(bytes(prev), seq, bytes(body), bytes(request), bytes(response))
        db.execute(
            "INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, ts_us, event, actor, route, status, body, prev, digest, request, response),
        )
        prev = digest
    db.close()


def sign_head(path: Path, key: Ed25519PrivateKey, ts_us: int = 1) -> None:
    """Sign the last record as the head with ``key`` (an insider who holds a signing key)."""
    db = connect(path)
    seq, digest = db.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
    sig = key.sign(head_message("head", seq, bytes(digest), ts_us))
    db.execute("UPDATE audit_marks SET seq = ?, hash = ?, sig = ?, ts_us = ? WHERE kind = 'head'",
               (seq, digest, sig, ts_us))  # fmt: skip
    db.close()


def head_row(path: Path) -> tuple[int, bytes, bytes, int]:
    """The stored head row (seq, hash, sig, ts_us), to paste back later."""
    db = connect(path)
    row = db.execute("SELECT seq, hash, sig, ts_us FROM audit_marks WHERE kind = 'head'").fetchone()
    db.close()
    return int(row[0]), bytes(row[1]), bytes(row[2]), int(row[3])


def cut_tail(path: Path, after: int, head: tuple[int, bytes, bytes, int] | None = None) -> None:
    """Delete the records after ``after``; paste ``head`` (an older signed head) back if given."""
    db = connect(path)
    db.execute("DELETE FROM audit_records WHERE seq > ?", (after,))
    db.execute("DELETE FROM audit_fingerprints WHERE seq > ?", (after,))
    db.execute("DELETE FROM audit_checkpoints WHERE seq > ?", (after,))
    if head is not None:
        db.execute("UPDATE audit_marks SET seq = ?, hash = ?, sig = ?, ts_us = ? WHERE kind = 'head'", head)
    db.close()
