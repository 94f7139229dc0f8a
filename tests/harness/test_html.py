"""The HTML report: one self-contained page, opened in headless Chromium and seen to be drawn."""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from tests.harness.fakes import PASSWORD, USER, FakeFarm

from sendvault.harness import CheckOptions, Credentials, Target, TlsOptions, run_checks
from sendvault.harness._html import BAR_COLOR, render_html
from sendvault.harness._model import (
    Check,
    Evidence,
    Generator,
    LatencySummary,
    LoadReport,
    LoadSummary,
    QueueSummary,
    TimelinePoint,
)
from sendvault.harness.load import histogram

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: apt-get install chromium (.ci/run installs it)")
    return found


def screenshot(page: Path, out: Path, profile: Path, size: str = "1100,1500") -> None:
    """Render ``page`` in headless Chromium (fresh profile, no network chatter) into a PNG."""
    subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={size}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA PNG, filters undone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    # Bytewise addition mod 256 on whole rows at once (SWAR on Python integers): the "Up" filter,
    # most rows of a screenshot, then costs a few big-integer operations instead of a loop.
    low, high = int.from_bytes(b"\x7f" * stride, "big"), int.from_bytes(b"\x80" * stride, "big")

    def add(a: bytes, b: bytes) -> bytes:
        x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
        return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(stride, "big")

    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, row = line[0], line[1:]
        if kind == 2:
            row = add(row, previous)
        elif kind in (1, 3, 4):
            row = _unfilter(kind, bytearray(row), previous, channels)
        rows.append(row)
        previous = row
    return width, height, rows if channels == 3 else [_rgb(r) for r in rows]


def _unfilter(kind: int, row: bytearray, previous: bytes, channels: int) -> bytes:
    for x in range(len(row)):
        left = row[x - channels] if x >= channels else 0
        up = previous[x]
        if kind == 1:
            row[x] = (row[x] + left) & 0xFF
        elif kind == 3:
            row[x] = (row[x] + (left + up) // 2) & 0xFF
        else:
            corner = previous[x - channels] if x >= channels else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            row[x] = (row[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
    return bytes(row)


def _rgb(row: bytes) -> bytes:
    return b"".join(row[i : i + 3] for i in range(0, len(row), 4))


def colour_share(rows: list[bytes], rgb: tuple[int, int, int], tolerance: int = 12) -> float:
    hits = total = 0
    for row in rows[::2]:
        for i in range(0, len(row), 6):
            total += 1
            r, g, b = row[i], row[i + 1], row[i + 2]
            hits += (
                abs(r - rgb[0]) <= tolerance and abs(g - rgb[1]) <= tolerance and abs(b - rgb[2]) <= tolerance
            )
    return hits / total


def _hex(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _load_report() -> LoadReport:
    millis = [5 + (i % 50) * 3.7 for i in range(400)]
    points = [TimelinePoint(s, 40, 20 + s, 150 + s, 190 + s, 1 if s == 4 else 0) for s in range(10)]
    summary = LoadSummary(
        target="https://tokens.example.com",
        started="2026-01-01T00:00:00+00:00",
        seconds=10.0,
        connections=50,
        batch=500,
        pool=10_000,
        calls=400,
        tokens=200_000,
        tokens_per_s=20_000.0,
        calls_per_s=40.0,
        latency_ms=LatencySummary(60.0, 150.0, 185.0, 190.0, 60.0),
        deadline_held=True,
        errors={},
        retries=1,
        gave_up=0,
        faults={"drop-after-send": 1},
        sms=2,
        no_token_queue=QueueSummary(0),
        generator=Generator(2, 1.5, 9.0, 7.5, False),
        verdict="pass",
    )
    checks = [
        Check("load.correct", "Every answer under load is right", "pass", Evidence("200,000 tokens right"))
    ]
    return LoadReport(checks, summary, histogram(millis), points)


@pytest.fixture(scope="module")
def check_page(fakes: FakeFarm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    server = fakes.servers["address-in-token"]
    target = Target(
        server.url,
        Credentials(user=USER, password=PASSWORD),
        TlsOptions(str(fakes.ca_file)),
        http_url=server.http_url,
    )
    report = asyncio.run(run_checks(target, CheckOptions(time_scale=0.001)))
    page = tmp_path_factory.mktemp("html") / "check.html"
    page.write_text(render_html(report))
    return page


def test_pages_are_self_contained(check_page: Path, tmp_path: Path) -> None:
    for text in (check_page.read_text(), render_html(_load_report())):
        assert "<script" not in text
        assert "<link" not in text
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
        assert "@import" not in text
        assert text.count("<svg") == 2


def test_chromium_draws_the_checks_table_and_the_plots(check_page: Path, tmp_path: Path) -> None:
    load_page = tmp_path / "load.html"
    load_page.write_text(render_html(_load_report()))
    # The check page is long (a row per check): a taller window keeps its plots in the shot.
    for page, red, size in ((check_page, True, (1100, 2600)), (load_page, False, (1100, 1500))):
        png = tmp_path / f"{page.stem}.png"
        screenshot(page, png, tmp_path / f"profile-{page.stem}", f"{size[0]},{size[1]}")
        width, height, rows = png_pixels(png)
        assert (width, height) == size
        white = colour_share(rows, (255, 255, 255), tolerance=8)
        assert white < 0.97, "the page rendered blank"
        assert colour_share(rows, _hex(BAR_COLOR)) > 0.002, "no histogram bars drawn"
        fail_red = colour_share(rows, (0xB9, 0x1C, 0x1C))
        assert (fail_red > 0.0002) == red  # the failing check's red pill and verdict
