"""Bulk CSV conversion on a store that already holds 1,000,000 tokens, beside a naive converter.

    flock /work/coord/bench.lock python benchmarks/bench_exchange.py \\
        [--data DIR] [--size 1000000] [--rows 1000000] [--naive-rows 200000] [--workers N] [--mmap-mb MB]
        [--offline-lock SECONDS]

Builds (once, then reuses) a SQLite store of ``--size`` tokens in ``DIR/base`` and a CSV of
``--rows`` new contacts (Id, Email, FirstName, Segment). The first three runs below share one fresh copy
of the base store (the second finds what the first stored); each is a separate process (`sendvault csv ...`, end to end: start-up, vault, file
in, file out), and prints rows/s and the peak memory of the main process and of its largest
worker: RSS, which counts the database pages SQLite reads through mmap (on by default; `--mmap-mb
0` turns it off for ours and naive alike, as runs before 2026-12-07 did), and private memory
(RssAnon, sampled every 20 ms), which does not. Four figures, each beside the naive converter of
the same run (one `tokenize_many` transaction per 500-row batch, no sorting, no workers, same CSV
reading and writing):

* `csv tokenize` of the new contacts (every email new);
* `csv tokenize` of the same file again (every email known);
* `csv detokenize` of the result;
* `csv tokenize` of the new contacts into another fresh copy with a longer bulk lock
  (``--offline-lock``, 15 s; ``sqlite_bulk_lock_seconds``, with the busy timeout four times that),
  as for a migration while no API traffic waits for the store: larger transactions write fewer
  pages per row. Beside the same naive figure as the first.

The naive converter runs on the first ``--naive-rows`` rows (it is slow); rows/s is comparable.
Peak memory is printed for a quarter of the file and for the whole file: it must not grow with
the file. Targets (issue 12): >= 100,000 rows/s new, >= 200,000 rows/s known and detokenize.
The machine is shared: compare the ratio, and re-run on a quiet machine for absolute figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 500


def base_store(data: Path, size: int) -> Path:
    """A home with ``size`` tokens (bench_vault's values), built once with the bulk path."""
    home = data / f"base{size}"
    marker = home / "ready"
    if marker.exists():
        return home
    from sendvault.config import load_settings
    from sendvault.vault import Kind, open_vault

    vault = open_vault(load_settings(env={"SENDVAULT_HOME": str(home)}))
    started = time.perf_counter()
    step = 50_000
    for start in range(0, size, step):
        items = [
            (Kind.EMAIL, f"subscriber.{i}@example{i % 97}.com") for i in range(start, min(size, start + step))
        ]
        vault.tokenize_bulk(items)
    count = vault.store.count()
    vault.close()
    print(f"base store: {count:,} tokens built in {time.perf_counter() - started:.0f} s")
    marker.write_text(str(count))
    return home


def contacts_file(data: Path, rows: int) -> Path:
    """A CSV of ``rows`` contacts whose emails the base store does not hold."""
    path = data / f"contacts{rows}.csv"
    if not path.exists():
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["Id", "Email", "FirstName", "Segment"])
            for i in range(rows):
                writer.writerow(
                    [
                        i,
                        f"new.contact.{i}@mail{i % 89}.example.org",
                        f"Name{i % 1000}",
                        "gold" if i % 3 else "silver",
                    ]
                )
    return path


def head(path: Path, rows: int, out: Path) -> Path:
    """The header and first ``rows`` rows of a CSV."""
    with path.open() as src, out.open("w") as dst:
        for n, line in enumerate(src):
            if n > rows:
                break
            dst.write(line)
    return out


def copy_home(base: Path, to: Path) -> Path:
    """A fresh copy of the base home (keys and a consistent database snapshot)."""
    shutil.copytree(base / "keys", to / "keys")
    src, dst = sqlite3.connect(base / "sendvault.db"), sqlite3.connect(to / "sendvault.db")
    src.backup(dst)
    src.close()
    dst.close()
    return to


def _private_kib(pid: int) -> int:
    """RssAnon of ``pid`` in KiB (0 once it is gone): its own memory, without file pages."""
    try:
        with open(f"/proc/{pid}/status") as fh:  # noqa: PTH123 - many reads a second
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def measure(
    home: Path, mmap_mb: int | None, argv: list[str], extra_env: dict[str, str] | None = None
) -> dict[str, float]:
    """Run ``argv`` in a child process; wall seconds, its peak RSS and its largest worker's (MiB),
    and the peak private memory (RssAnon, sampled every 20 ms) of each."""
    env = {**os.environ, "SENDVAULT_HOME": str(home), **(extra_env or {})}
    if mmap_mb is not None:  # ours and naive alike
        env["SENDVAULT_SQLITE_MMAP_MB"] = str(mmap_mb)
    started = time.perf_counter()
    # Files, not pipes: this process polls memory instead of reading, and a full pipe would stall it.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child", *argv], env=env, stdout=out, stderr=err)
        peak_main = peak_worker = 0
        while proc.poll() is None:
            peak_main = max(peak_main, _private_kib(proc.pid))
            peak_worker = max([peak_worker, *(_private_kib(c) for c in _children(proc.pid))])
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{stderr[-2000:]}")
    peaks = json.loads(stdout.strip().splitlines()[-1])
    return {
        "seconds": elapsed,
        **peaks,
        "private_main_mib": peak_main / 1024,
        "private_worker_mib": peak_worker / 1024,
    }


def child(argv: list[str]) -> None:
    """In the measured process: run the CLI or the naive converter, then print peak RSS."""
    if argv[0] == "naive":
        naive(argv[1], argv[2], argv[3])
    else:
        from sendvault.cli import cli

        try:
            cli.main(args=argv, prog_name="sendvault", standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                raise
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"rss_main_mib": round(own, 1), "rss_worker_mib": round(workers, 1)}))


def naive(operation: str, source: str, output: str) -> None:
    """The naive converter: one vault call (one transaction) per 500-row batch, in file order."""
    from sendvault.config import load_settings
    from sendvault.vault import Kind, open_vault

    vault = open_vault(load_settings())
    with Path(source).open(newline="") as fin, Path(output).open("w", newline="") as fout:
        reader, writer = csv.reader(fin), csv.writer(fout)
        header = next(reader)
        writer.writerow(header)
        col = header.index("Email")
        while True:
            batch = [row for _, row in zip(range(BATCH), reader, strict=False)]
            if not batch:
                break
            if operation == "tokenize":
                results = vault.tokenize_many([(Kind.EMAIL, row[col]) for row in batch])
                for row, result in zip(batch, results, strict=True):
                    row[col] = result.token or ""
            else:
                resolved = vault.resolve_many([row[col] for row in batch])
                for row, r in zip(batch, resolved, strict=True):
                    row[col] = r.value or ""
            writer.writerows(batch)
    vault.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("/work/benchdata/issue-12"))
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--naive-rows", type=int, default=200_000)
    parser.add_argument("--workers", type=int, help="`csv --workers` (default: the CLI's own default)")
    parser.add_argument(
        "--mmap-mb", type=int, help="SENDVAULT_SQLITE_MMAP_MB for ours and naive (default: sendvault's own)"
    )
    parser.add_argument(
        "--offline-lock", type=float, default=15.0,
        help="sqlite_bulk_lock_seconds of the extra new-emails run, as for a migration with no "
        "online traffic (0: no such run)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.offline_lock and not 0.1 <= args.offline_lock <= 60:
        parser.error("--offline-lock is 0 (no such run) or 0.1 to 60 seconds, as sqlite_bulk_lock_seconds")
    args.data.mkdir(parents=True, exist_ok=True)
    base = base_store(args.data, args.size)
    source = contacts_file(args.data, args.rows)
    print(f"store of {args.size:,} tokens; file of {args.rows:,} rows ({source.stat().st_size / 1e6:.0f} MB); "
          f"{os.cpu_count()} cores, shared machine")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        work = Path(scratch)
        quarter = head(source, args.rows // 4, work / "quarter.csv")
        small = head(source, args.naive_rows, work / "naive.csv")
        ours = copy_home(base, work / "ours")
        mm = args.mmap_mb
        opts = ["-q", *(["--workers", str(args.workers)] if args.workers is not None else [])]
        runs = {
            "new": measure(
                ours,
                mm,
                ["csv", "tokenize", str(source), str(work / "t1.csv"), "--column", "Email=Email", *opts],
            ),
            "known": measure(
                ours,
                mm,
                ["csv", "tokenize", str(source), str(work / "t2.csv"), "--column", "Email=Email", *opts],
            ),
            "detokenize": measure(
                ours,
                mm,
                ["csv", "detokenize", str(work / "t1.csv"), str(work / "d1.csv"), "--column", "Email", *opts],
            ),
        }
        if (work / "t1.csv").read_bytes() != (work / "t2.csv").read_bytes():
            raise SystemExit("the second run gave other tokens")
        if args.offline_lock:
            # A lock held longer per transaction; the busy timeout must allow it (a quarter).
            lock_env = {
                "SENDVAULT_SQLITE_BULK_LOCK_SECONDS": str(args.offline_lock),
                "SENDVAULT_SQLITE_BUSY_TIMEOUT_MS": str(max(10_000, int(args.offline_lock * 4000))),
            }
            runs["new, offline"] = measure(
                copy_home(base, work / "offline"),
                mm,
                ["csv", "tokenize", str(source), str(work / "t3.csv"), "--column", "Email=Email", *opts],
                lock_env,
            )
        quarter_home = copy_home(base, work / "quarter")
        mem_quarter = measure(
            quarter_home,
            mm,
            ["csv", "tokenize", str(quarter), str(work / "q.csv"), "--column", "Email=Email", *opts],
        )
        naive_home = copy_home(base, work / "naive")
        baseline = {
            "new": measure(naive_home, mm, ["naive", "tokenize", str(small), str(work / "n1.csv")]),
            "known": measure(naive_home, mm, ["naive", "tokenize", str(small), str(work / "n2.csv")]),
            "detokenize": measure(
                naive_home, mm, ["naive", "detokenize", str(work / "n1.csv"), str(work / "n3.csv")]
            ),
        }
    targets = {"new": 100_000, "known": 200_000, "detokenize": 200_000, "new, offline": 100_000}
    labels = {
        "new": "tokenize, new emails",
        "known": "tokenize, known emails",
        "detokenize": "detokenize",
        "new, offline": f"new, {args.offline_lock:g} s bulk lock",
    }
    for key, run in runs.items():
        rate = args.rows / run["seconds"]
        naive_rate = args.naive_rows / baseline[key.split(",")[0]]["seconds"]
        print(
            f"{labels[key]:24}: {rate:9,.0f} rows/s  (naive {naive_rate:8,.0f} rows/s, ratio {rate / naive_rate:5.1f}x; "
            f"target >= {targets[key]:,})  peak {_memory(run)}"
        )
    print(
        f"peak, tokenize of {args.rows // 4:,} rows: {_memory(mem_quarter)}; of {args.rows:,} rows: "
        f"{_memory(runs['new'])} ({_growth(mem_quarter, runs['new'])})"
    )
    if mm != 0:
        print(
            "RSS counts the database pages SQLite reads through mmap (SENDVAULT_SQLITE_MMAP_MB); private does not"
        )


def _growth(part: dict[str, float], whole: dict[str, float]) -> str:
    """Whether private memory stayed flat from a quarter of the file to all of it (within 10%)."""
    # A part small enough to run without workers says nothing about theirs.
    compared = ("main", "worker") if part["private_worker_mib"] else ("main",)
    grew = {who: whole[f"private_{who}_mib"] - part[f"private_{who}_mib"] for who in compared}
    if all(grew[who] <= 0.1 * part[f"private_{who}_mib"] + 8 for who in grew):
        return "flat: private memory does not grow with the file"
    return "GROWS with the file: private memory " + ", ".join(
        f"{who} {mib:+.0f} MiB" for who, mib in grew.items()
    )


def _memory(run: dict[str, float]) -> str:
    return (
        f"main RSS {run['rss_main_mib']:.0f} MiB (private {run['private_main_mib']:.0f}), "
        f"worker RSS {run['rss_worker_mib']:.0f} MiB (private {run['private_worker_mib']:.0f})"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
