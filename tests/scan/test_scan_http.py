"""`scan http` against loopback HTTP servers answering 308, 301, 302 or content."""

from __future__ import annotations

import http.server
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from tests.scan.conftest import ca_file, http_server

from sendvault.scan import scan_http


@pytest.fixture
def https_port(tmp_path: Path) -> object:
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    hsts = {"value": "max-age=63072000; includeSubDomains"}

    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if hsts["value"]:
            h.send_header("Strict-Transport-Security", hsts["value"])
        h.send_header("Content-Length", "0")
        h.end_headers()

    with http_server(answer, ctx) as port:
        yield port, ca_file(ca, tmp_path), hsts


def _redirecting(code: int, target: str):  # type: ignore[no-untyped-def]
    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        h.send_header("Location", target + h.path)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return answer


def _rules(result: object) -> set[str]:
    return {f.rule for f in result.findings}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("code", "rules"),
    [
        (308, set()),
        (301, {"http.redirect-changes-method"}),
        (302, {"http.redirect-not-permanent", "http.redirect-changes-method"}),
        (307, {"http.redirect-not-permanent"}),
    ],
)
def test_redirect_codes(https_port: tuple[int, str, dict[str, str]], code: int, rules: set[str]) -> None:
    port, ca, _ = https_port
    with http_server(_redirecting(code, f"https://127.0.0.1:{port}")) as plain:
        result = scan_http(f"http://127.0.0.1:{plain}/v1/mc", ca_file=ca)
    assert _rules(result) == rules


def test_no_redirect_is_high(https_port: tuple[int, str, dict[str, str]]) -> None:
    def content(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(b"ok")

    with http_server(content) as plain:
        result = scan_http(f"http://127.0.0.1:{plain}/")
    assert _rules(result) == {"http.no-https-redirect"}


@pytest.mark.parametrize(
    ("value", "rule"),
    [("", "http.hsts-missing"), ("max-age=0", "http.hsts-missing"), ("max-age=3600", "http.hsts-short")],
    ids=["missing", "turned-off", "short"],
)
def test_hsts(https_port: tuple[int, str, dict[str, str]], value: str, rule: str) -> None:
    port, ca, hsts = https_port
    hsts["value"] = value
    with http_server(_redirecting(308, f"https://127.0.0.1:{port}")) as plain:
        result = scan_http(f"http://127.0.0.1:{plain}/", ca_file=ca)
    assert _rules(result) == {rule}


def test_a_post_served_in_clear_is_not_redirected(https_port: tuple[int, str, dict[str, str]]) -> None:
    port, ca, _ = https_port
    redirect = _redirecting(308, f"https://127.0.0.1:{port}")

    def get_redirected_post_served(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.command == "GET":
            redirect(h)
            return
        h.send_response(200)
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(b"{}")

    with http_server(get_redirected_post_served) as plain:
        result = scan_http(f"http://127.0.0.1:{plain}/v1/mc", ca_file=ca)
    assert [(f.rule, f.detail) for f in result.findings] == [
        ("http.no-https-redirect", "POST to http:// is answered 200 without reaching https://")
    ]


def test_a_post_that_gets_no_answer_is_unknown(https_port: tuple[int, str, dict[str, str]]) -> None:
    port, ca, _ = https_port
    redirect = _redirecting(308, f"https://127.0.0.1:{port}")

    def post_dropped(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.command == "GET":
            redirect(h)
        else:
            h.close_connection = True  # no answer at all

    with http_server(post_dropped) as plain:
        result = scan_http(f"http://127.0.0.1:{plain}/v1/mc", ca_file=ca)
    assert _rules(result) == {"http.unknown"}
    assert any(u.startswith("POST") for u in result.unknown)


def test_every_hop_of_a_redirect_chain_is_judged(https_port: tuple[int, str, dict[str, str]]) -> None:
    port, ca, _ = https_port
    first = {}

    def two_hops(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.path.startswith("/hop"):
            _redirecting(302, f"https://127.0.0.1:{port}")(h)
        else:
            _redirecting(308, f"http://localhost:{first['port']}/hop")(h)

    with http_server(two_hops) as plain:
        first["port"] = plain
        result = scan_http(f"http://127.0.0.1:{plain}/v1/mc", ca_file=ca)
    assert result.facts["chain"] == [
        f"308 http://127.0.0.1:{plain}/v1/mc",
        f"302 http://localhost:{plain}/hop/v1/mc",
    ]
    assert _rules(result) == {"http.redirect-not-permanent", "http.redirect-changes-method"}
    temporary = next(f for f in result.findings if f.rule == "http.redirect-not-permanent")
    assert temporary.detail == f"redirect not permanent: 302 at http://localhost:{plain}/hop/v1/mc"


def test_a_redirect_to_https_on_another_host_is_reported(https_port: tuple[int, str, dict[str, str]]) -> None:
    port, ca, _ = https_port
    with http_server(_redirecting(308, f"https://localhost:{port}")) as plain:
        result = scan_http(f"http://127.0.0.1:{plain}/", ca_file=ca)
    assert [(f.rule, f.detail) for f in result.findings] == [
        ("http.redirect-other-host", "https:// is reached on localhost, not on 127.0.0.1")
    ]


def test_cli_json_and_exit_codes(https_port: tuple[int, str, dict[str, str]]) -> None:
    port, ca, _ = https_port
    with http_server(_redirecting(302, f"https://127.0.0.1:{port}")) as plain:
        run = subprocess.run(
            [sys.executable, "-m", "sendvault", "scan", "http", f"http://127.0.0.1:{plain}/",
             "--ca", ca, "--json"],
            capture_output=True, text=True, timeout=60, check=False, env=os.environ.copy(),
        )  # fmt: skip
        assert run.returncode == 1
        doc = json.loads(run.stdout)
        assert {f["rule"] for f in doc["targets"][0]["findings"]} == {
            "http.redirect-not-permanent",
            "http.redirect-changes-method",
        }
        lenient = subprocess.run(
            [sys.executable, "-m", "sendvault", "scan", "http", f"http://127.0.0.1:{plain}/",
             "--ca", ca, "--fail-on", "high"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert lenient.returncode == 0
    bad = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "tls", "127.0.0.1:notaport"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
