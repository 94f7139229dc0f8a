"""Bulk loads into PostgreSQL: `sendvault csv tokenize` of new contacts, beside SQLite, same run.

    flock /work/coord/bench.lock python benchmarks/bench_pg_bulk.py --database postgresql://... \\
        [--data DIR] [--rows 1000000]

What a user runs to load a contact file is `sendvault csv tokenize` (the bulk path: it calls
``Store.insert_bulk``, which on PostgreSQL COPYs each 40,000 rows into a staging table and
inserts them in blind-index order). This times that command end to end (start-up, vault, file in,
file out) on ``--rows`` contacts whose emails are all new, into an empty SQLite vault and into an
empty PostgreSQL vault (a fresh schema of ``--database``), and prints rows/s for each and their
ratio. Target (issue 10): PostgreSQL >= 50,000 rows/s.

Then the store alone, the part COPY changed: ``insert_bulk`` of ``--rows`` sealed rows made in
advance, COPY path against the previous path (``unnest`` arrays, 10,000 rows per transaction),
each into its own fresh schema: rows/s and ratio. The machine is shared: the ratios are the
robust numbers.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_exchange import contacts_file
from sendvault.store import NewContact
from sendvault.store.postgres import PostgresStore


@contextmanager
def fresh_schema(admin_url: str) -> Iterator[str]:
    """A URL whose search_path is a new schema, dropped afterwards."""
    import psycopg

    schema = f"sv_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in admin_url else "?"
    try:
        yield f"{admin_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def tokenize(home: Path, source: Path, out: Path, database_url: str = "") -> float:
    """Seconds of `sendvault csv tokenize` in a child process."""
    env = {**os.environ, "SENDVAULT_HOME": str(home), "SENDVAULT_MASTER_KEY": MASTER}
    if database_url:
        env["SENDVAULT_DATABASE_URL"] = database_url
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sendvault", "csv", "tokenize", str(source), str(out), "--column", "Email=Email",
         "-q"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"csv tokenize failed:\n{proc.stderr[-2000:]}")
    return elapsed


# The data key the sealed rows name: the first key of a fresh schema (see store_rate).
KEY_ID = 1


def sealed_rows(n: int) -> list[NewContact]:
    """``n`` rows as the vault makes them (random 32-byte blind index, 60-byte ciphertext).

    A ciphertext starts as a sealed value does (version byte 1, then the data key's id, see
    crypto/keyring.py): the store refuses (StaleKeys) a row whose data key it does not hold.
    """
    header = b"\x01" + KEY_ID.to_bytes(4, "big")
    return [
        NewContact(f"bulk{i:08d}{os.urandom(6).hex()}", 1, os.urandom(32), header + os.urandom(55))
        for i in range(n)
    ]


def previous_path(store: PostgresStore, rows: Sequence[NewContact]) -> None:
    """The bulk path before COPY: unnest arrays, 10,000 rows per transaction, blind-index order."""
    ordered = sorted(rows, key=lambda r: r.bidx)
    for start in range(0, len(ordered), 10_000):
        store._commit(store._conn, ordered[start : start + 10_000])


def store_rate(
    url: str, rows: Sequence[NewContact], load: Callable[[PostgresStore, Sequence[NewContact]], object]
) -> float:
    store = PostgresStore(url)
    store.migrate()
    # The data key the rows are sealed under (its wrapped bytes are never opened here).
    if store.add_key("data", "local", lambda _id: os.urandom(60)) != KEY_ID:
        raise SystemExit("a fresh schema should give the first data key id 1")
    try:
        started = time.perf_counter()
        load(store, rows)
        elapsed = time.perf_counter() - started
        if store.count() != len(rows):
            raise SystemExit(f"expected {len(rows)} rows, found {store.count()}")
    finally:
        store.close()
    return len(rows) / elapsed


MASTER = base64.b64encode(b"benchmark-only-master-key-32byte").decode()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", required=True, help="postgresql:// URL (a fresh schema is used)")
    parser.add_argument("--data", type=Path, default=Path("/work/benchdata/issue-10a"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-store", action="store_true", help="only the csv tokenize comparison")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    source = contacts_file(args.data, args.rows)
    print(
        f"{args.rows:,} new contacts ({source.stat().st_size / 1e6:.0f} MB); {os.cpu_count()} cores, shared machine"
    )
    import tempfile

    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        work = Path(scratch)
        with fresh_schema(args.database) as url:
            pg = args.rows / tokenize(work / "pg", source, work / "pg.csv", url)
        lite = args.rows / tokenize(work / "sqlite", source, work / "sqlite.csv")
    print(f"csv tokenize, all new: PostgreSQL {pg:9,.0f} rows/s, SQLite {lite:9,.0f} rows/s, "
          f"PostgreSQL/SQLite {pg / lite:.0%} (target: PostgreSQL >= 50,000 rows/s)")  # fmt: skip
    if args.skip_store:
        return
    rows = sealed_rows(args.rows)
    with fresh_schema(args.database) as url:
        copy = store_rate(url, rows, PostgresStore.insert_bulk)
    with fresh_schema(args.database) as url:
        before = store_rate(url, rows, previous_path)
    print(f"store.insert_bulk alone: COPY {copy:9,.0f} rows/s, previous unnest path {before:9,.0f} rows/s, "
          f"ratio {copy / before:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
