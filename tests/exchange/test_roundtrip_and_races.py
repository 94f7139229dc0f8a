"""Properties of bulk conversion: round trips, and one token per value under concurrent creation."""

from __future__ import annotations

import asyncio
import csv
import io
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from sendvault.config import Settings
from sendvault.exchange import CsvInput, convert, detokenize_file, tokenize_file
from sendvault.vault import Kind, Vault, open_vault


class Collect:
    def __init__(self) -> None:
        self.items: list[tuple[int, str, str]] = []

    def add(self, line: int, column: str, reason: str) -> None:
        self.items.append((line, column, reason))


_segment = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-", min_size=1, max_size=8
)
_emails = st.builds(
    lambda parts, host, tld: ".".join(parts) + "@" + host + "." + tld,
    st.lists(_segment, min_size=1, max_size=3),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10),
    st.sampled_from(["com", "org", "DE", "info"]),
)
# (as written in the file, E.164 digits the vault keeps)
_PHONES = [
    ("+1 212 555 0123", "12125550123"),
    ("+44 20 7946 0958", "442079460958"),
    ("33612345678", "33612345678"),
    ("+49 (30) 901820", "4930901820"),
    ("+81-3-1234-5678", "81312345678"),
]
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
_rows = st.lists(st.tuples(_emails, st.sampled_from(_PHONES), _text), min_size=1, max_size=25)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows, crlf=st.booleans(), delimiter=st.sampled_from([",", ";", "\t"]))
def test_tokenize_then_detokenize_gives_the_normalized_input(
    vault: Vault,
    settings: Settings,
    tmp_path: Path,
    rows: list[tuple[str, tuple[str, str], str]],
    crlf: bool,
    delimiter: str,
) -> None:
    source, tokenized, back = tmp_path / "in.csv", tmp_path / "tok.csv", tmp_path / "back.csv"

    # Written by hand, not with the csv module: a field is quoted when it holds a delimiter, a
    # quote, CR or LF, as RFC 4180 wants (csv.writer leaves a lone CR bare in an LF file).
    def field(text: str) -> str:
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in f'"\r\n{delimiter}') else text

    ending = "\r\n" if crlf else "\n"
    lines = [delimiter.join(["Email", "Mobile", "Note"])]
    lines += [delimiter.join(field(v) for v in (e, p[0], t)) for e, p, t in rows]
    source.write_bytes((ending.join(lines) + ending).encode())

    src = CsvInput(str(source))
    rejects = Collect()
    tokenize_file(
        vault,
        settings,
        src,
        str(tokenized),
        columns=[("Email", Kind.EMAIL), ("Mobile", Kind.MOBILE)],
        rejects=rejects,
        workers=0,
    )
    src.close()
    assert rejects.items == []
    src = CsvInput(str(tokenized))
    detokenize_file(vault, settings, src, str(back), columns=["Email", "Mobile"], rejects=rejects, workers=0)
    src.close()
    assert rejects.items == []
    got = list(csv.reader(io.StringIO(back.read_bytes().decode(), newline=""), delimiter=delimiter))
    assert got[0] == ["Email", "Mobile", "Note"]
    assert got[1:] == [[e.lower(), p[1], t] for e, p, t in rows]


@pytest.mark.parametrize("round_", range(6))
def test_bulk_run_and_concurrent_get_token_calls_agree_on_one_token_per_value(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, round_: int
) -> None:
    # Small blocks and flushes: the bulk run commits many times while the API-style caller
    # (another vault on the same database, as another worker process would be) creates tokens
    # for the same values in another order.
    monkeypatch.setattr(convert, "CHUNK_ROWS", 300)
    monkeypatch.setattr(convert, "BLOCK_BYTES", 7_000)  # about 300 rows
    monkeypatch.setattr(convert, "FLUSH_NEW_ROWS", 600)
    values = [f"race{round_}.{i}@example.com" for i in range(6_000)]
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("Email\n" + "\n".join(values) + "\n")
    bulk_vault, api_vault = open_vault(settings), open_vault(settings)
    api_tokens: dict[str, str] = {}
    api_created = [0]
    errors: list[BaseException] = []
    # The two sides overlap by construction, not by luck of scheduling: the API side makes its
    # first batch (the file's last values) before the bulk run starts, then waits until the bulk
    # run has committed its first rows (the file's first values) before racing on.
    api_started, bulk_committed = threading.Event(), threading.Event()
    insert_bulk = bulk_vault.store.insert_bulk

    def insert_bulk_and_tell(*args: object, **kwargs: object) -> object:
        try:
            return insert_bulk(*args, **kwargs)
        finally:
            bulk_committed.set()

    monkeypatch.setattr(bulk_vault.store, "insert_bulk", insert_bulk_and_tell)

    def api_caller() -> None:
        async def run() -> None:
            order = values[::-1]
            for i in range(0, len(order), 50):
                if i == 50:
                    api_started.set()
                    assert bulk_committed.wait(120), "the bulk run never committed"
                batch = order[i : i + 50]
                results = await asyncio.gather(
                    api_vault.tokenize_many_async([(Kind.EMAIL, v) for v in batch[:25]]),
                    api_vault.tokenize_many_async([(Kind.EMAIL, v) for v in batch[25:]]),
                )
                for value, result in zip(batch, [*results[0], *results[1]], strict=True):
                    assert result.token is not None
                    api_tokens[value] = result.token
                    api_created[0] += int(result.created)

        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            api_started.set()

    thread = threading.Thread(target=api_caller)
    thread.start()
    src = CsvInput(str(source))
    assert api_started.wait(120)
    summary = tokenize_file(
        bulk_vault, settings, src, str(out), columns=[("Email", Kind.EMAIL)], rejects=Collect(), workers=0
    )
    src.close()
    thread.join()
    assert not errors
    bulk_tokens = out.read_text().splitlines()[1:]
    assert len(bulk_tokens) == len(values)
    assert all(api_tokens[v] == t for v, t in zip(values, bulk_tokens, strict=True))
    assert bulk_vault.store.count() == len(values)
    # Both sides created tokens (the gates above make sure), and together made one per value.
    assert summary.created > 0
    assert api_created[0] > 0
    assert summary.created + api_created[0] == len(values)
    bulk_vault.close()
    api_vault.close()
