"""The harness against a hostile server, and in the hands of a careless user.

The harness talks to servers it has no reason to trust (any team's token server). Whatever such a
server sends, the harness must give a verdict with a reason: no traceback, no hang, no memory
blow-up, nothing of the server's that restyles or drives the terminal, nothing in the HTML page
that runs. And a user's slip is one line with a hint and exit 2.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.harness.conftest import cli, load_json, statuses
from tests.harness.fakes import PASSWORD, USER
from tests.harness.hostile import Hostile, Reply, Request, answer, hostile_server

from sendvault.harness._http import Authorizer, Credentials, HttpFailure, TlsOptions

PASSWORD_ENV = {"SENDVAULT_HARNESS_PASSWORD": PASSWORD, "COLUMNS": "400"}
NASTY = "\x1b[2J\x1b]0;pwned\x07\rEVIL\x9b31m\u202eXX\x00"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    yield from hostile_server(tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def hostile(server: Hostile) -> Iterator[Hostile]:
    server.rule = None
    server.extra_headers = {}
    server.requests.clear()
    yield server
    server.rule = None
    server.extra_headers = {}


def _args(server: Hostile, *more: str) -> list[str]:
    return ["--url", server.url, "--user", USER, "--ca", str(server.ca_file), "--time-scale", "0.001", *more]


def check(server: Hostile, *more: str) -> Any:
    return cli("check", *_args(server, *more), env=PASSWORD_ENV)


def _sound_tokens(server: Hostile, request: Request) -> dict[str, Any]:
    status, doc = server.brain.get_token(request.doc)
    assert status == 200
    return dict(doc)


def _extra_id(server: Hostile, rid: Any) -> None:
    """Get Token answers soundly, plus one item under an id it was never sent."""

    def rule(request: Request) -> Reply:
        if request.path != "/v1/mc/tokens" or not isinstance(request.doc, dict):
            return None
        doc = _sound_tokens(server, request)
        doc["tokens"].append({"tokenRequestId": rid, "token": "x@tokens.fake.test"})
        return answer(200, doc)

    server.rule = rule


def _no_traceback(out: Any) -> None:
    assert "Traceback" not in out.stdout + out.stderr


def _oauth_check(hostile: Hostile, *more: str) -> Any:
    """`harness check` against ``hostile``, authenticating through its /oauth/token endpoint."""
    token_url = f"{hostile.url}/oauth/token"
    auth = ["--token-url", token_url, "--client-id", "c", "--client-secret", "s"]
    return cli("check", "--url", hostile.url, "--ca", str(hostile.ca_file), *auth, *more)


# -- 1, 2: server text printed as text, escapes neutralised --------------------------------------


@pytest.mark.parametrize("markup", ["[bold]x[/", "[/]", "[link=http://evil.test]click[/link]"])
def test_rich_markup_from_the_server_is_printed_as_text(hostile: Hostile, markup: str) -> None:
    _extra_id(hostile, markup)
    out = check(hostile)
    _no_traceback(out)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "gettoken.every-id-once" in out.stdout
    assert markup in out.stdout  # shown as sent, not taken as styling


def test_terminal_escapes_from_the_server_never_reach_the_terminal_or_the_evidence(
    hostile: Hostile, tmp_path: Path
) -> None:
    _extra_id(hostile, NASTY)
    out = check(hostile)
    _no_traceback(out)
    assert out.returncode == 1
    for char in "\x1b\x07\r\x9b\u202e\x00":
        assert char not in out.stdout + out.stderr, repr(char)
    assert "EVIL" in out.stdout  # the text is shown, its control characters made visible
    as_json = check(hostile, "--json", "--html", str(tmp_path / "r.html"))
    report = load_json(as_json.stdout)
    evidence = json.dumps(report, ensure_ascii=False)
    page = (tmp_path / "r.html").read_text()
    for char in "\x1b\x07\r\x9b\u202e\x00":
        assert char not in evidence, repr(char)
        assert char not in page, repr(char)


# -- 3, 6: malformed JSON shapes are failed checks, never tracebacks -------------------------------


def test_json_nested_100k_deep_is_a_failed_check(hostile: Hostile) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000

    def rule(request: Request) -> Reply:
        if request.path == "/v1/mc/resolve":
            return answer(200, deep, raw=True)
        return None

    hostile.rule = rule
    out = check(hostile, "--json")
    _no_traceback(out)
    assert out.returncode == 1, out.stderr
    report = load_json(out.stdout)
    known = next(c for c in report["checks"] if c["id"] == "resolve.known")
    assert known["status"] == "fail"
    assert len(out.stdout) < 200_000


@pytest.mark.parametrize(
    "tokens",
    [
        [{"tokenRequestId": ["g0"], "token": "a@b.test"}],
        [{"tokenRequestId": {"x": 1}, "token": None}],
        [{"tokenRequestId": None, "token": None}],
        [{"tokenRequestId": 1.5e300, "token": 7}],
        [None, 3, "x", []],
    ],
    ids=["list-id", "object-id", "null-id", "float-id", "junk-items"],
)
def test_odd_ids_and_items_are_failed_checks(hostile: Hostile, tokens: list[Any]) -> None:
    def rule(request: Request) -> Reply:
        if request.path == "/v1/mc/tokens":
            return answer(200, {"tokens": tokens})
        return None

    hostile.rule = rule
    out = check(hostile, "--json")
    _no_traceback(out)
    assert out.returncode == 1, out.stderr
    assert load_json(out.stdout)["summary"]["verdict"] == "fail"


@pytest.mark.parametrize(
    "doc", [[1, 2, 3], None, "tokens", {"tokens": None}, {"tokens": {"a": 1}}, {"resolvedTokens": 5}]
)
def test_a_list_or_null_instead_of_an_object_is_a_failed_check(hostile: Hostile, doc: Any) -> None:
    hostile.rule = lambda request: answer(200, doc)
    out = check(hostile, "--json")
    _no_traceback(out)
    assert out.returncode in (1, 2), out.stderr
    if out.returncode == 1:
        assert load_json(out.stdout)["summary"]["verdict"] == "fail"
    else:
        assert out.stderr.startswith("error: ")


def test_load_with_non_numeric_ids_from_get_token_is_a_clear_error(hostile: Hostile) -> None:
    def rule(request: Request) -> Reply:
        if request.path == "/v1/mc/tokens":
            doc = _sound_tokens(hostile, request)
            for item in doc["tokens"]:
                item["tokenRequestId"] = f"id-{item['tokenRequestId']}"
            return answer(200, doc)
        return None

    hostile.rule = rule
    out = cli("load", *_args(hostile, "--pool", "20", "--count", "2", "--processes", "1"), env=PASSWORD_ENV)
    _no_traceback(out)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: ")
    assert "Get Token" in out.stderr


def test_inbound_sms_answers_nested_too_deep_are_counted_not_fatal(hostile: Hostile) -> None:
    deep = b'{"tokens": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"

    def rule(request: Request) -> Reply:
        doc = request.doc
        if (
            request.path == "/v1/mc/tokens"
            and isinstance(doc, dict)
            and doc["tokenValues"][0]["tokenRequestId"].startswith("sms-")
        ):
            return answer(200, deep, raw=True)
        return None

    hostile.rule = rule
    out = cli(
        "load",
        *_args(hostile, "--pool", "20", "--count", "4", "--processes", "1", "--sms", "2", "--json"),
        env=PASSWORD_ENV,
    )
    _no_traceback(out)
    assert out.returncode == 1, out.stdout + out.stderr
    assert load_json(out.stdout)["summary"]["errors"].get("bad-answer") == 2


# -- 4, 8: bounded bodies, headers and evidence ---------------------------------------------------


def _flood(head: bytes, chunk: bytes, total: int) -> Any:
    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        sent = 0
        # A closed connection does not make drain() raise: stop when the harness has hung up.
        while sent < total and not writer.is_closing():
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()

    return write


def test_an_endless_body_is_cut_at_32_mib_and_fails(hostile: Hostile) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"

    def rule(request: Request) -> Reply:
        if request.path == "/v1/mc/resolve":
            return _flood(head, b"[" * 65536, 1_000_000_000)
        return None

    hostile.rule = rule
    out = check(hostile, "--json")
    _no_traceback(out)
    assert out.returncode == 1, out.stderr
    report = load_json(out.stdout)
    known = next(c for c in report["checks"] if c["id"] == "resolve.known")
    assert known["status"] == "fail"
    assert "32 MiB" in known["evidence"]["detail"]


def test_endless_headers_are_cut_at_64_kib_and_fail(hostile: Hostile) -> None:
    def rule(request: Request) -> Reply:
        if request.path == "/v1/mc/resolve":
            return _flood(b"HTTP/1.1 200 OK\r\n", b"X-Junk: " + b"a" * 1000 + b"\r\n", 2_000_000)
        return None

    hostile.rule = rule
    out = check(hostile, "--json")
    _no_traceback(out)
    assert out.returncode == 1, out.stderr
    known = next(c for c in load_json(out.stdout)["checks"] if c["id"] == "resolve.known")
    assert "64 KiB" in known["evidence"]["detail"]


def test_one_huge_header_line_is_cut_too(hostile: Hostile) -> None:
    def rule(request: Request) -> Reply:
        if request.path == "/v1/mc/resolve":
            return _flood(b"HTTP/1.1 200 OK\r\nX-Junk: ", b"a" * 65536, 2_000_000)
        return None

    hostile.rule = rule
    out = check(hostile, "--json")
    _no_traceback(out)
    assert out.returncode == 1, out.stderr
    known = next(c for c in load_json(out.stdout)["checks"] if c["id"] == "resolve.known")
    assert "64 KiB" in known["evidence"]["detail"]


_CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("start", "flood", "cut"),
    [
        (
            b"2\r\n[]\r\n0\r\n",
            (b"X-Trailer: " + b"a" * 1000 + b"\r\n") * 64,
            "the answer's trailer section",  # past 64 KiB, or past 256 fields if one read held more
        ),
        (b"2\r\n[]\r\n0\r\nX-Trailer: ", b"a" * 65536, "trailer section runs past 64 KiB"),
        (b"2\r\n[]\r\n0\r\n", b"T: 1\r\n" * 10_000, "trailer section holds more than 256 fields"),
        (b"2\r\n[]\r\n1;ext=", b"a" * 65536, "chunk-size line (with its extensions) runs past 64 KiB"),
    ],
    ids=["endless-trailer-lines", "one-endless-trailer", "many-short-trailers", "endless-chunk-extension"],
)
def test_endless_chunked_framing_is_cut_and_fails(
    hostile: Hostile, start: bytes, flood: bytes, cut: str
) -> None:
    def rule(request: Request) -> Reply:
        if request.path == "/v1/mc/resolve":
            return _flood(_CHUNKED + start, flood, 1_000_000_000)
        return None

    hostile.rule = rule
    started = time.monotonic()
    out = check(hostile, "--json", "--deadline", "30")
    _no_traceback(out)
    assert out.returncode == 1, out.stderr
    known = next(c for c in load_json(out.stdout)["checks"] if c["id"] == "resolve.known")
    assert known["status"] == "fail"
    assert cut in known["evidence"]["detail"], known["evidence"]["detail"]
    assert time.monotonic() - started < 30  # cut by size, long before a deadline


def test_a_token_endpoint_with_endless_trailers_is_one_line_and_exit_2(hostile: Hostile) -> None:
    flood = _flood(_CHUNKED + b"2\r\n{}\r\n0\r\n", (b"X-Trailer: " + b"a" * 1000 + b"\r\n") * 64, 10**9)
    hostile.rule = lambda request: flood if request.path == "/oauth/token" else None
    out = _oauth_check(hostile)
    _no_traceback(out)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: OAuth token endpoint: "), out.stderr
    # Lines of 1 KB: cut at 64 KiB, or at 256 fields when one read brought more than 256 of them.
    assert "the answer's trailer section" in out.stderr, out.stderr


def _chunked_answers(server: Hostile, trailers: bytes, *, hsts_in_head: bool) -> None:
    """Sound answers, sent chunked in two pieces with ``trailers`` after the last chunk."""
    drop = (b"content-length:",) + (() if hsts_in_head else (b"strict-transport-security:",))

    def rule(request: Request) -> Reply:
        if not request.path.startswith("/v1/mc/"):
            return None

        async def write(writer: asyncio.StreamWriter) -> None:
            head, _, body = (await server._sound(request)).partition(b"\r\n\r\n")
            lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(drop)]
            lines += [b"Transfer-Encoding: chunked", b"Connection: close"]
            half = len(body) // 2
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]) if p)
            writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + chunks + b"0\r\n" + trailers + b"\r\n")
            await writer.drain()

        return write

    server.rule = rule


def test_sound_chunked_answers_with_trailers_are_read_in_full(hostile: Hostile) -> None:
    baseline = load_json(check(hostile, "--json").stdout)
    trailers = b"".join(b"X-Trailer-%d: %s\r\n" % (i, b"v" * 200) for i in range(100))  # 20 KB, 100 fields
    _chunked_answers(hostile, trailers, hsts_in_head=True)
    out = check(hostile, "--json")
    _no_traceback(out)
    assert statuses(load_json(out.stdout)) == statuses(baseline)
    assert any(r.path == "/v1/mc/resolve" for r in hostile.requests)


def test_a_trailer_does_not_stand_in_for_a_header(hostile: Hostile) -> None:
    _chunked_answers(hostile, b"Strict-Transport-Security: max-age=31536000\r\n", hsts_in_head=False)
    out = check(hostile, "--json", "--skip", "transport.redirect-308")
    _no_traceback(out)
    hsts = next(c for c in load_json(out.stdout)["checks"] if c["id"] == "transport.hsts")
    assert hsts["status"] == "fail"
    assert "no Strict-Transport-Security header" in hsts["evidence"]["detail"]


def test_evidence_is_cut_to_a_sane_length(hostile: Hostile) -> None:
    big_id = "i" * 3_000_000
    many = {f"k{i}": "v" * 100 for i in range(20_000)}

    def rule(request: Request) -> Reply:
        if request.path == "/v1/mc/tokens" and isinstance(request.doc, dict):
            doc = _sound_tokens(hostile, request)
            doc["tokens"].append({"tokenRequestId": big_id, "token": "x@tokens.fake.test"})
            doc.update(many)
            return answer(200, doc)
        return None

    hostile.rule = rule
    out = check(hostile, "--json")
    _no_traceback(out)
    assert out.returncode == 1
    assert len(out.stdout) < 300_000, len(out.stdout)
    for c in load_json(out.stdout)["checks"]:
        assert len(c["evidence"]["detail"]) <= 2000, c["id"]


def test_a_huge_hsts_max_age_is_judged_not_a_traceback(hostile: Hostile) -> None:
    hostile.extra_headers = {"Strict-Transport-Security": "max-age=" + "9" * 6000}
    out = check(hostile, "--json", "--skip", "transport.redirect-308")
    _no_traceback(out)
    hsts = next(c for c in load_json(out.stdout)["checks"] if c["id"] == "transport.hsts")
    assert hsts["status"] == "pass"


def test_a_location_that_is_not_a_url_fails_the_redirect_check(hostile: Hostile, tmp_path: Path) -> None:
    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 308 X\r\nLocation: https://[::1\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    loop = asyncio.new_event_loop()
    srv = loop.run_until_complete(asyncio.start_server(redirect, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        port = srv.sockets[0].getsockname()[1]
        out = check(hostile, "--json", "--http-url", f"http://127.0.0.1:{port}")
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        srv.close()
        loop.run_until_complete(srv.wait_closed())
        loop.close()
    _no_traceback(out)
    redirect308 = next(c for c in load_json(out.stdout)["checks"] if c["id"] == "transport.redirect-308")
    assert redirect308["status"] == "fail"


# -- 5: a server that drips is given up on --------------------------------------------------------


def _drip(writer_head: bytes = b"HTTP/1.1 200 OK\r\n", every: float = 0.2) -> Any:
    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(writer_head)
        while True:
            await asyncio.sleep(every)
            writer.write(b"X")
            await writer.drain()

    return write


def test_a_dripping_server_is_given_up_after_three_timeouts_in_a_row(hostile: Hostile) -> None:
    hostile.rule = lambda request: _drip() if request.path == "/v1/mc/resolve" else None
    started = time.monotonic()
    out = check(hostile, "--deadline", "0.5", "--json")
    _no_traceback(out)
    assert out.returncode == 1, out.stderr
    report = load_json(out.stdout)
    assert "3 calls in a row" in (report["summary"].get("stopped") or "")
    drips = [r for r in hostile.requests if r.path == "/v1/mc/resolve"]
    assert len(drips) == 3
    assert time.monotonic() - started < 60


def test_load_gives_up_on_a_dripping_server(hostile: Hostile) -> None:
    hostile.rule = lambda request: _drip() if request.path == "/v1/mc/resolve" else None
    started = time.monotonic()
    out = cli(
        "load",
        *_args(hostile, "--deadline", "0.5", "--pool", "20", "--count", "200", "--connections", "2"),
        "--processes",
        "1",
        "--json",
        env=PASSWORD_ENV,
    )
    _no_traceback(out)
    assert out.returncode == 1, out.stdout + out.stderr
    report = load_json(out.stdout)
    assert "in a row" in json.dumps(report["checks"])
    assert time.monotonic() - started < 60


def test_making_the_pool_gives_up_on_a_dripping_get_token(hostile: Hostile) -> None:
    hostile.rule = lambda request: _drip() if request.path == "/v1/mc/tokens" else None
    out = cli("load", *_args(hostile, "--deadline", "0.5", "--pool", "20", "--count", "2"), env=PASSWORD_ENV)
    _no_traceback(out)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "3 calls in a row" in out.stderr
    assert len([r for r in hostile.requests if r.path == "/v1/mc/tokens"]) == 3


# -- 7: the OAuth token endpoint -------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        answer(200, "<html><body>Sign in</body></html>", raw=True),
        answer(200, b"[" * 100_000, raw=True),
        answer(200, {"access_token": "abc\r\nX-Injected: 1", "expires_in": 3600}),
        answer(200, {"access_token": "t\u20ac", "expires_in": 3600}),
        answer(200, {"access_token": "ok", "expires_in": "soon"}),
        answer(200, [1, 2]),
        answer(500, "[bold]down[/", raw=True),
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n" + b"{" * 10,
    ],
    ids=["html", "deep", "crlf-token", "non-latin1-token", "bad-expiry", "list", "500", "short-body"],
)
def test_a_junk_token_endpoint_is_one_line_and_exit_2(hostile: Hostile, reply: bytes) -> None:
    hostile.rule = lambda request: reply if request.path == "/oauth/token" else None
    out = _oauth_check(hostile, "--deadline", "2")
    _no_traceback(out)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: OAuth"), out.stderr
    assert len(out.stderr.splitlines()) == 2
    # Not a refusal: the hint is about the endpoint, not the credentials.
    assert "hint: is --token-url" in out.stderr, out.stderr
    assert "--password" not in out.stderr
    assert not any(r.headers.get("x-injected") for r in hostile.requests)


def test_a_refusing_token_endpoint_hints_at_the_credentials(hostile: Hostile) -> None:
    hostile.rule = lambda request: (
        answer(401, {"error": "invalid_client"}) if request.path == "/oauth/token" else None
    )
    out = _oauth_check(hostile, "--deadline", "2")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "answered 401" in out.stderr
    assert "hint: check --user and --password" in out.stderr, out.stderr


def test_a_huge_token_endpoint_answer_is_cut(hostile: Hostile) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n"
    hostile.rule = lambda request: (
        _flood(head, b"a" * 65536, 10**9) if request.path == "/oauth/token" else None
    )
    out = _oauth_check(hostile)
    _no_traceback(out)
    assert out.returncode == 2
    assert "32 MiB" in out.stderr


def _authorizer(hostile: Hostile) -> Authorizer:
    creds = Credentials(token_url=f"{hostile.url}/oauth/token", client_id="c", client_secret="s")
    return Authorizer(creds, TlsOptions(ca_file=str(hostile.ca_file)))


def _token_requests(hostile: Hostile) -> int:
    return sum(1 for r in hostile.requests if r.path == "/oauth/token")


def test_calls_in_flight_at_expiry_share_one_token_request(hostile: Hostile) -> None:
    # 40 calls that find no token (at the start) or an expired one (after half its 1 s lifetime)
    # make one token request each time, not 40: a load run must not flood the token endpoint.
    served = itertools.count(1)
    hostile.rule = lambda request: (
        answer(200, {"access_token": f"t{next(served)}", "expires_in": 1})
        if request.path == "/oauth/token"
        else None
    )
    auth = _authorizer(hostile)

    async def burst() -> set[str | None]:
        return set(await asyncio.gather(*(auth.header() for _ in range(40))))

    async def run() -> tuple[set[str | None], set[str | None], set[str | None]]:
        first = await burst()
        still = await burst()
        await asyncio.sleep(0.6)
        return first, still, await burst()

    first, still, renewed = asyncio.run(run())
    assert (first, still, renewed) == ({"Bearer t1"}, {"Bearer t1"}, {"Bearer t2"})
    assert _token_requests(hostile) == 2


def test_a_failed_renewal_fails_every_waiting_call_once_and_the_next_call_tries_again(
    hostile: Hostile,
) -> None:
    hostile.rule = lambda request: answer(503, {"error": "busy"}) if request.path == "/oauth/token" else None
    auth = _authorizer(hostile)

    async def burst() -> list[Any]:
        return await asyncio.gather(*(auth.header() for _ in range(20)), return_exceptions=True)

    failures = asyncio.run(burst())
    assert all(isinstance(f, HttpFailure) and "answered 503" in str(f) for f in failures)
    assert _token_requests(hostile) == 1
    hostile.rule = lambda request: (
        answer(200, {"access_token": "ok", "expires_in": 3600}) if request.path == "/oauth/token" else None
    )
    assert asyncio.run(burst()) == ["Bearer ok"] * 20
    assert _token_requests(hostile) == 2


# -- 9: the HTML page ---------------------------------------------------------------------------------


def test_script_from_the_server_is_escaped_in_the_html_report(hostile: Hostile, tmp_path: Path) -> None:
    script = "<script>document.title='pwned'</script>"
    _extra_id(hostile, script)
    page = tmp_path / "r.html"
    out = check(hostile, "--html", str(page))
    _no_traceback(out)
    text = page.read_text()
    assert "<script" not in text
    assert "&lt;script&gt;document.title=" in text
    # Loaded in headless Chromium, the page's title is still its own: no script of the server ran.
    from tests.harness.test_html import CHROMIUM_FLAGS, _chromium

    dom = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p'}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    assert "<title>sendvault harness check</title>" in dom
    assert "pwned</title>" not in dom


# -- 10: a careless user ----------------------------------------------------------------------------


def _usage(out: Any) -> None:
    _no_traceback(out)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert lines[0].startswith("error: "), out.stderr
    assert len(lines) == 2, out.stderr
    assert lines[1].startswith("hint: "), out.stderr


def test_careless_users_get_one_line_and_a_hint(hostile: Hostile, tmp_path: Path) -> None:
    from tests.server.conftest import free_port

    port = free_port()
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    listed = tmp_path / "client.json"
    listed.write_text('["https://x"]')
    typed = tmp_path / "client2.json"
    typed.write_text('{"url": 5}')
    cases = [
        ("check", "--url", "http://127.0.0.1:1", "--user", "u", "--password", "p"),
        ("check", "--url", "127.0.0.1:8443", "--user", "u", "--password", "p"),
        ("check", "--url", f"https://127.0.0.1:{port}", "--user", "u", "--password", "p"),
        ("check", "--url", "https://no-such-host.invalid", "--user", "u", "--password", "p"),
        ("check", "--url", f"https://127.0.0.1:{port}", "--user", "u"),
        ("check", "--url", hostile.url, "--user", "u", "--password", "p", "--ca", str(not_pem)),
        ("check", "--url", hostile.url, "--user", "u", "--password", "p", "--ca", str(tmp_path / "none.pem")),
        ("check", "--url", f"https://127.0.0.1:{port}/p\u20acth", "--user", "u", "--password", "p"),
        ("check", "--url", hostile.url, "--user", "u", "--password", "p", "--resolve-path", "/a b\u20ac"),
        ("check", "--url", hostile.url, "--user", "u", "--password", "p", "--resolve-path", "v1/mc/resolve"),
        ("check", "--client-file", str(listed)),
        ("check", "--client-file", str(typed)),
        (
            "check",
            "--url",
            hostile.url,
            "--user",
            "u",
            "--password",
            "p",
            "--queue",
            str(tmp_path / "no/q.jsonl"),
        ),
        (
            "check",
            "--url",
            hostile.url,
            "--user",
            "u",
            "--password",
            "p",
            "--html",
            str(tmp_path / "no/r.html"),
        ),
        ("load", "--url", hostile.url, "--user", "u", "--password", "p", "--connections", "0"),
        ("load", "--url", hostile.url, "--user", "u", "--password", "p", "--duration", "-1"),
        ("load", "--url", hostile.url, "--user", "u", "--password", "p", "--count", "0"),
    ]
    for args in cases:
        _usage(cli_any(*args))


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Client certificate files, sound and broken, each under a name."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    folder = tmp_path_factory.mktemp("pems")
    ca = trustme.CA()
    ours, other = ca.issue_cert("client.test"), ca.issue_cert("other.test")
    key = serialization.load_pem_private_key(ours.private_key_pem.bytes(), password=None)
    texts = {
        "cert": ours.cert_chain_pems[0].bytes(),
        "key": ours.private_key_pem.bytes(),
        "both": ours.private_key_and_cert_chain_pem.bytes(),
        "other-key": other.private_key_pem.bytes(),
        "garbage": b"not a certificate\n",
        "damaged-cert": b"-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
        "damaged-key": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "encrypted-key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret passphrase"),
        ),
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(text)
    return paths


@pytest.mark.parametrize("command", ["check", "load"])
@pytest.mark.parametrize(
    ("cert", "key", "said", "hinted"),
    [
        (
            "cert",
            None,
            "holds a certificate but no private key",
            "give --client-key KEY, or a PEM that holds both",
        ),
        ("cert", "other-key", "is not the key of the certificate", "or a PEM that holds both"),
        ("both", "other-key", "is not the key of the certificate", "or a PEM that holds both"),
        ("garbage", None, "holds no PEM certificate", "--client-key KEY or its key in the same file"),
        ("damaged-cert", "key", "holds no PEM certificate", "--client-key KEY or its key in the same file"),
        ("key", None, "holds no PEM certificate", "--client-key KEY or its key in the same file"),
        ("cert", "garbage", "holds no PEM private key", "or a PEM that holds both"),
        ("cert", "cert", "holds no PEM private key", "or a PEM that holds both"),
        ("cert", "damaged-key", "the private key cannot be read", "give the certificate's private key"),
        ("cert", "encrypted-key", "encrypted with a passphrase", "openssl pkey"),
    ],
)
def test_a_client_certificate_that_cannot_serve_is_one_line_and_a_hint(
    hostile: Hostile, pems: dict[str, Path], command: str, cert: str, key: str | None, said: str, hinted: str
) -> None:
    more = ["--client-cert", str(pems[cert])] + (["--client-key", str(pems[key])] if key else [])
    out = cli(command, "--url", hostile.url, "--user", "u", "--password", "p", *more)
    _usage(out)
    error, hint = out.stderr.splitlines()
    assert said in error, error
    assert hinted in hint, hint
    assert hostile.requests == []  # refused before connecting


@pytest.mark.parametrize(("cert", "key"), [("both", None), ("cert", "key")])
def test_a_sound_client_certificate_is_taken(
    hostile: Hostile, pems: dict[str, Path], cert: str, key: str | None
) -> None:
    more = ["--client-cert", str(pems[cert])] + (["--client-key", str(pems[key])] if key else [])
    out = cli(
        "load", *_args(hostile, "--pool", "20", "--count", "2", "--processes", "1", *more), env=PASSWORD_ENV
    )
    _no_traceback(out)
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(r.path == "/v1/mc/resolve" for r in hostile.requests)


def cli_any(command: str, *args: str) -> Any:
    return cli(command, *args, env={"SENDVAULT_HARNESS_PASSWORD": ""})


def test_a_bad_ca_file_hints_at_the_ca_not_the_url(hostile: Hostile, tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    out = cli("check", "--url", hostile.url, "--user", "u", "--password", "p", "--ca", str(not_pem))
    _usage(out)
    assert "--ca" in out.stderr.splitlines()[1]


@pytest.mark.parametrize("option", ["--client-cert", "--client-key", "--ca"])
@pytest.mark.parametrize(
    ("kind", "said"), [("pipe", "is not a regular file"), ("huge", "too large for a PEM file")]
)
def test_a_tls_file_that_is_a_pipe_or_huge_is_one_line_not_a_hang(
    hostile: Hostile, pems: dict[str, Path], tmp_path: Path, option: str, kind: str, said: str
) -> None:
    # A named pipe was opened and waited on forever; a device such as /dev/zero (refused like a
    # pipe) or a huge file was read whole into memory. A subprocess, so a hang is a failure.
    import os
    import sys

    path = tmp_path / f"{kind}.pem"
    if kind == "pipe":
        os.mkfifo(path)
    else:
        with path.open("wb") as fh:
            fh.truncate(64 * 1024 * 1024)  # sparse: no disk, but 64 MiB to read
    files = {"--client-cert": pems["cert"], "--client-key": pems["key"]}
    files[option] = path
    more = [arg for name, value in files.items() for arg in (name, str(value))]
    if option == "--ca":
        more += ["--ca", str(path)]
    command = [sys.executable, "-m", "sendvault", "harness", "check", "--url", hostile.url]
    out = subprocess.run(
        [*command, "--user", "u", "--password", "p", *more],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    _usage(out)
    error = out.stderr.splitlines()[0]
    assert f"{option} {path} " in error, error
    assert said in error, error
    assert hostile.requests == []
