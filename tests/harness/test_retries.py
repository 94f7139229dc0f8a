"""Marketing Cloud's retry schedule and the No Token Queue, as the simulated platform keeps them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sendvault.harness._model import Exchange
from sendvault.harness._session import RETRY_WAITS, TRIES, Call, NoTokenQueue, with_retries


def _call(status: int | None) -> Call:
    return Call(None, None, None, Exchange("POST", "https://x"), 1.0) if status is None else _answered(status)


def _answered(status: int) -> Call:
    from sendvault.harness._http import Response

    return Call(Response(status, {}, b"{}"), None, {}, Exchange("POST", "https://x", status=status), 1.0)


def _run(statuses: list[int | None], scale: float) -> tuple[Call, int, list[float]]:
    waits: list[float] = []
    answers = iter(statuses)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def attempt() -> Call:
        return _call(next(answers))

    call, tries = asyncio.run(with_retries(attempt, time_scale=scale, sleep=sleep))
    return call, tries, waits


def test_schedule_is_5_30_60_120_seconds_and_five_tries() -> None:
    assert RETRY_WAITS == (5.0, 30.0, 60.0, 120.0)
    assert TRIES == 5
    call, tries, waits = _run([500, 503, None, 429, 500], 1.0)
    assert tries == 5
    assert waits == [5.0, 30.0, 60.0, 120.0]
    assert call.status == 500


def test_time_scale_shrinks_the_waits() -> None:
    _, _, waits = _run([500, 500, 500, 500, 500], 0.01)
    assert waits == [0.05, 0.3, 0.6, 1.2]


def test_a_success_ends_the_retries() -> None:
    call, tries, waits = _run([503, 200, 500], 1.0)
    assert (call.status, tries, waits) == (200, 2, [5.0])
    call, tries, waits = _run([200], 1.0)
    assert (tries, waits) == (1, [])


def test_the_no_token_queue_is_masked_json_lines_written_only_when_used(tmp_path: Path) -> None:
    path = tmp_path / "queue.jsonl"
    empty = NoTokenQueue(path)
    assert empty.write() is None
    assert not path.exists()
    queue = NoTokenQueue(path)
    queue.put("sms-1", "447700900123", "MobileNumber", keyword="STOP", tries=5, last="HTTP 503")
    assert queue.write() == str(path)
    (entry,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert entry["tokenValue"] == "44********23"
    assert "447700900123" not in path.read_text()
    assert {k: entry[k] for k in ("tokenRequestId", "keyword", "tries", "last_error")} == {
        "tokenRequestId": "sms-1",
        "keyword": "STOP",
        "tries": 5,
        "last_error": "HTTP 503",
    }
