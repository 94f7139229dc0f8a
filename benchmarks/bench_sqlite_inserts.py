"""What SQLite alone gives for new tokens on a store of 1,000,000: the ceiling of `csv tokenize`.

    flock /work/coord/bench.lock python benchmarks/bench_sqlite_inserts.py \\
        [--data DIR] [--rows 300000] [--txn 50000,150000,300000]

No sendvault code runs here: rows shaped as the vault stores them (a 55-character token, a
32-byte blind index, a 64-byte sealed value) are made up front, then inserted into a copy of
bench_exchange.py's base store (``DIR/base1000000``, built by that script) with the bulk path's
statement, connection settings and order: each transaction's rows sorted by token, WAL,
synchronous=NORMAL, mmap on, a 256 MiB page cache, the WAL checkpointed after each commit. It
prints rows/s for each transaction size, then the same inserts into an in-memory copy of the
store (no I/O at all: SQLite's B-tree work on one core).

Issue 12 asks for 100,000 new rows/s end to end; this is the rate of the insert step alone, with
nothing else on the machine's cores. sendvault's bulk transactions hold the write lock about
``sqlite_bulk_lock_seconds`` (2 s), which on this machine is about 50,000 rows.
"""

from __future__ import annotations

import argparse
import secrets
import sqlite3
import tempfile
import time
from pathlib import Path

SQL = (
    "INSERT INTO contacts (token, kind, bidx, bidx_key, value_ct, created_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
Row = tuple[str, int, bytes, int, bytes, int]


def made_rows(count: int) -> list[Row]:
    """New rows with random tokens and blind indexes, as the vault's plans give them."""
    return [
        (
            f"{secrets.token_hex(15)}@tokens.sendvault.invalid",
            1,
            secrets.token_bytes(32),
            1,
            secrets.token_bytes(64),
            0,
        )
        for _ in range(count)
    ]


def copy_store(base: Path, to: Path | str) -> sqlite3.Connection:
    """A connection to a copy of the base store (``:memory:`` for one in memory)."""
    src = sqlite3.connect(f"file:{base}?mode=ro", uri=True)
    dst = sqlite3.connect(to, isolation_level=None)
    src.backup(dst)
    src.close()
    return dst


def insert(conn: sqlite3.Connection, rows: list[Row], txn: int, *, checkpoint: bool) -> float:
    """Rows/s of inserting ``rows`` in transactions of ``txn``, each sorted by token."""
    started = time.perf_counter()
    for start in range(0, len(rows), txn):
        chunk = sorted(rows[start : start + txn])
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(SQL, chunk)
        conn.execute("COMMIT")
        if checkpoint:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return len(rows) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("/work/benchdata/issue-12"))
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--txn", default="50000,150000,300000", help="transaction sizes, comma-separated")
    args = parser.parse_args()
    base = args.data / "base1000000" / "sendvault.db"
    if not base.exists():
        raise SystemExit(f"{base} is missing: run benchmarks/bench_exchange.py once to build it")
    rows = made_rows(args.rows)
    print(f"{args.rows:,} new rows into a copy of a store of 1,000,000 ({base.stat().st_size / 1e6:.0f} MB)")
    for txn in (int(t) for t in args.txn.split(",")):
        with tempfile.TemporaryDirectory(dir=args.data) as scratch:
            conn = copy_store(base, Path(scratch) / "copy.db")
            for pragma in (
                "journal_mode = WAL", "synchronous = NORMAL", "cache_size = -262144",
                "mmap_size = 1073741824", "wal_autocheckpoint = 0",
            ):  # fmt: skip
                conn.execute(f"PRAGMA {pragma}")
            rate = insert(conn, rows, txn, checkpoint=True)
            conn.close()
        print(f"on disk, {txn:7,} rows per transaction: {rate:8,.0f} rows/s")
    conn = copy_store(base, ":memory:")
    rate = insert(conn, rows, args.rows, checkpoint=False)
    conn.close()
    print(f"in memory, one transaction:            {rate:8,.0f} rows/s (SQLite's B-tree work alone)")


if __name__ == "__main__":
    main()
