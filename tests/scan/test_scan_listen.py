"""`scan listen` with real clients: Python's ssl, openssl s_client and curl, and hostile ones."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from sendvault.scan import Severity, exit_code
from sendvault.scan.findings import CheckResult
from sendvault.scan.listen import Listener, issue_certificate
from sendvault.server.tls import server_context

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")


class Running:
    """A listener serving in a thread; ``stop`` returns every verdict."""

    def __init__(self, directory: Path, follow_seconds: float = 3.0) -> None:
        cert, key, self.ca = issue_certificate(directory, ["localhost", "127.0.0.1"])
        self.lines: list[str] = []
        self.listener = Listener(server_context(cert, key), 0, 0, follow_seconds=follow_seconds,
                                 say=self.lines.append)  # fmt: skip
        self.listener.bind()
        self.results: list[CheckResult] = []
        self._thread = threading.Thread(
            target=lambda: self.results.extend(self.listener.run(None)), daemon=True
        )
        self._thread.start()

    @property
    def tls(self) -> int:
        return self.listener.tls_port

    @property
    def http(self) -> int:
        return self.listener.http_port

    def stop(self) -> list[CheckResult]:
        self.listener.stop()
        # The listener finishes connections in progress (up to about 20 s) before it returns its
        # verdicts; on a loaded machine that took longer than a 30 s join, and the verdicts read
        # as none. Wait for them, and say so if they never come.
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "the listener did not return its verdicts within 120 s"
        return self.results

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[Running]:
    running = Running(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def _only(results: list[CheckResult], prefix: str) -> CheckResult:
    [result] = [r for r in results if r.target.startswith(prefix)]
    return result


def _rules(result: CheckResult) -> set[str]:
    return {f.rule for f in result.findings}


def test_python_with_tls12_only_connects_and_offers_no_rsa_key_exchange(listening: Running) -> None:
    ctx = ssl.create_default_context(cafile=str(listening.ca))
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", listening.tls)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 200")
    result = _only(listening.stop(), "TLS client")
    assert result.findings == []
    assert result.facts["versions"] == ["TLSv1.2"]
    assert result.facts["sni"] == "localhost"
    assert "x25519" in result.facts["groups"]  # type: ignore[operator]
    assert "rsa_pss_rsae_sha256" in result.facts["signature_algorithms"]  # type: ignore[operator]
    assert str(result.facts["handshake"]).startswith("TLSv1.2 ECDHE-")
    # It names only its maximum: whether it would also take TLS 1.0 is not in the ClientHello.
    assert result.unknown == ["whether it accepts TLS 1.0/1.1 (it names only its maximum, TLSv1.2)"]
    assert exit_code([result], Severity.MEDIUM) == 2


def test_python_default_client_passes(listening: Running) -> None:
    ctx = ssl.create_default_context(cafile=str(listening.ca))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", listening.tls)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        tls.recv(100)
    result = _only(listening.stop(), "TLS client")
    assert result.findings == []
    assert not result.unknown
    assert result.facts["versions"] == ["TLSv1.3", "TLSv1.2"]
    assert result.facts["alpn"] == ["h2", "http/1.1"]
    assert exit_code([result], Severity.LOW) == 0


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_openssl_s_client_tls1_is_refused_and_reported(listening: Running) -> None:
    # This OpenSSL (3.0) still speaks TLS 1.0 at security level 0.
    assert OPENSSL is not None
    subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{listening.tls}", "-tls1",
                    "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "localhost"],
                   input=b"", capture_output=True, timeout=30, check=False)  # fmt: skip
    result = _only(listening.stop(), "TLS client")
    assert _rules(result) == {
        "client.no-tls12",
        "client.offers-legacy-protocol",
        "client.offers-rsa-key-exchange",
    }
    assert result.facts["versions"] == ["TLSv1.0"]
    assert "protocol version too old" in str(result.facts["handshake"])
    rsa = next(f for f in result.findings if f.rule == "client.offers-rsa-key-exchange")
    assert rsa.severity is Severity.MEDIUM  # ECDHE suites are offered beside it
    assert "AES256-SHA (RSA key exchange)" in result.facts["suites"]  # type: ignore[operator]


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_an_rsa_key_exchange_only_client_is_high_and_cannot_connect(listening: Running) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{listening.tls}", "-tls1_2",
                    "-cipher", "AES128-SHA:AES256-GCM-SHA384"],
                   input=b"", capture_output=True, timeout=30, check=False)  # fmt: skip
    result = _only(listening.stop(), "TLS client")
    rsa = next(f for f in result.findings if f.rule == "client.offers-rsa-key-exchange")
    assert rsa.severity is Severity.HIGH
    assert "offers only RSA key exchange" in rsa.detail
    assert "no cipher suite in common" in str(result.facts["handshake"])


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_post_without_L_does_not_follow_and_with_L_keeps_method_and_body(tmp_path: Path) -> None:
    running = Running(tmp_path, follow_seconds=1.0)
    assert CURL is not None
    common = [CURL, "-sS", "-o", os.devnull, "--cacert", str(running.ca), "-d", "email=jane@example.com"]
    url = f"http://localhost:{running.http}/v1/mc"
    plain = subprocess.run([*common, url], capture_output=True, timeout=30, check=False)
    followed = subprocess.run([*common, "-L", url], capture_output=True, timeout=30, check=False)
    assert plain.returncode == followed.returncode == 0
    running.wait_for(5)
    results = running.stop()
    http = [r for r in results if r.target.startswith("HTTP client")]
    assert [_rules(r) for r in http] == [{"client.redirect-not-followed"}, set()]
    assert http[1].facts["followed"] == {"method": "POST", "body_bytes": len(b"email=jane@example.com")}
    # Nothing the client sent is printed: no path, no body, no address of the contact.
    printed = "\n".join(running.lines) + json.dumps([r.facts for r in results])
    assert "jane" not in printed
    assert "/v1/mc" not in printed


def test_a_redirect_followed_as_get_without_body_is_reported(listening: Running) -> None:
    # A client as some HTTP libraries are on a 301/302 and broken ones on 308: it follows with GET.
    with socket.create_connection(("127.0.0.1", listening.http)) as s:
        s.sendall(b"POST /v1/mc HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\na=1")
        answer = s.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 308 Permanent Redirect")
    location = next(line.split(": ", 1)[1] for line in answer.split("\r\n") if line.startswith("Location:"))
    assert location.startswith(f"https://localhost:{listening.tls}/")
    path = "/" + location.split("/", 3)[3]
    ctx = ssl.create_default_context(cafile=str(listening.ca))
    with (
        socket.create_connection(("127.0.0.1", listening.tls)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        tls.recv(100)
    listening.wait_for(3)
    http = _only(listening.stop(), "HTTP client")
    assert _rules(http) == {"client.redirect-changes-method"}
    assert "a POST answered 308 came back as GET without its body" in http.findings[0].detail


def test_a_client_that_does_not_trust_the_certificate_leaves_the_redirect_unknown(listening: Running) -> None:
    with socket.create_connection(("127.0.0.1", listening.http)) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        s.recv(4096)
    ctx = ssl.create_default_context()  # the system store: the listener's CA is not in it
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", listening.tls)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost"),
    ):
        pass
    listening.wait_for(3)
    results = listening.stop()
    http = _only(results, "HTTP client")
    assert _rules(http) == {"client.unknown"}
    assert "certificate" in http.findings[0].detail
    tls = _only(results, "TLS client")
    assert tls.facts["handshake"] == "the client does not trust the listener's certificate"
    # It offered TLS 1.3 and 1.2 with ECDHE, but never completed a handshake: whether it reaches
    # a platform is not known, which is never a pass.
    assert _rules(tls) == {"client.unknown"}
    assert "does not trust the listener's certificate" in tls.findings[0].detail
    assert exit_code([tls], Severity.LOW) == 2


@pytest.mark.parametrize(
    ("ciphers", "why"),
    [
        ("ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA", "no cipher suite in common"),  # CBC only
        ("DHE-RSA-AES128-GCM-SHA256", "no cipher suite in common"),  # finite-field DHE only
    ],
    ids=["ecdhe-cbc-only", "dhe-only"],
)
def test_a_client_that_fails_the_platforms_handshake_is_not_a_pass(
    listening: Running, ciphers: str, why: str
) -> None:
    # TLS 1.2, no RSA key exchange: none of the three offer rules fires, yet a TLS 1.2+ ECDHE/AEAD
    # platform refuses it. The listener's own handshake failed, so the verdict must say so.
    ctx = ssl.create_default_context(cafile=str(listening.ca))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection(("127.0.0.1", listening.tls)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost"),
    ):
        pass
    listening.wait_for(1)
    result = _only(listening.stop(), "TLS client")
    assert "client.offers-rsa-key-exchange" not in _rules(result)
    cannot = next(f for f in result.findings if f.rule == "client.cannot-connect")
    assert cannot.severity is Severity.HIGH
    assert why in cannot.detail
    assert exit_code([result], Severity.HIGH) == 1


def test_one_failed_handshake_accounts_for_one_redirect_not_all(listening: Running) -> None:
    # Two clients on one address: the first never follows its 308 (curl without -L), the second
    # follows but fails the TLS handshake. Only the second's redirect may become unknown; the
    # first is still not followed.
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", listening.http)) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\na")
            s.recv(4096)
    ctx = ssl.create_default_context()  # does not trust the listener's CA
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", listening.tls)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost"),
    ):
        pass
    # Two 308s, the redirect judged unknown, the TLS verdict, the 308 not followed: five lines
    # (six were waited for, so the test always idled out its 20 s before stopping).
    listening.wait_for(5)
    http = [r for r in listening.stop() if r.target.startswith("HTTP client")]
    assert [_rules(r) for r in http] == [{"client.redirect-not-followed"}, {"client.unknown"}]


# -- hostile clients ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a TLS handshake record"),
        (b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "not a ClientHello"),
        (b"\x16\x03\x01\x00\x00", "sane size"),
        (b"\x16\x03\x01\x00\x30\x01\x00\x00\x2c\x03\x03" + bytes(38), "shorter than its fields"),
        (b"\x16\x03\x01\xff\xff" + b"\x01\x00\xff\xfb" + bytes(1000), "closed"),
    ],
    ids=["http-on-tls-port", "server-hello", "empty-record", "truncated-fields", "truncated-record"],
)
def test_garbage_on_the_tls_port_is_unknown_never_a_pass_or_a_crash(
    listening: Running, data: bytes, why: str
) -> None:
    with socket.create_connection(("127.0.0.1", listening.tls)) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.recv(100)
    listening.wait_for(1)
    result = _only(listening.stop(), "TLS client")
    assert _rules(result) == {"client.unknown"}
    assert result.passed == 0
    assert (
        why in str(result.unknown)
        or why in result.findings[0].detail
        or "arrive" in result.findings[0].detail
    )


def _closed_by_peer(s: socket.socket, data: bytes, times: int) -> bool:
    """Send ``data`` ``times`` times; whether the peer closed the connection meanwhile or after."""
    try:
        for _ in range(times):
            s.sendall(data)
            time.sleep(0.05)
        s.settimeout(5)
        return s.recv(1) == b""
    except OSError:
        return True


def test_a_hello_larger_than_64_kib_is_refused(listening: Running) -> None:
    # A ClientHello that claims 16 MiB, sent in full records: the listener stops at 64 KiB.
    first = b"\x16\x03\x01\x40\x00" + b"\x01\xff\xff\xff" + bytes(0x4000 - 4)
    with socket.create_connection(("127.0.0.1", listening.tls)) as s:
        s.sendall(first)
        assert _closed_by_peer(s, b"\x16\x03\x01\x40\x00" + bytes(0x4000), 10)
    listening.wait_for(1)
    result = _only(listening.stop(), "TLS client")
    assert _rules(result) == {"client.unknown"}
    assert "sane size" in result.findings[0].detail


def test_an_sslv2_format_hello_is_read(listening: Running) -> None:
    # The SSL 2.0-compatible ClientHello of old Java and Windows stacks: TLS 1.0 and RC4/3DES.
    specs = b"".join(b"\x00" + c.to_bytes(2, "big") for c in (0x0005, 0x000A, 0x002F)) + b"\x01\x00\x80"
    body = b"\x01\x03\x01" + len(specs).to_bytes(2, "big") + b"\x00\x00\x00\x10" + specs + bytes(16)
    with socket.create_connection(("127.0.0.1", listening.tls)) as s:
        s.sendall(bytes([0x80 | len(body) >> 8, len(body) & 0xFF]) + body)
        s.settimeout(5)
        with contextlib.suppress(OSError):
            s.recv(100)
    listening.wait_for(1)
    result = _only(listening.stop(), "TLS client")
    assert result.facts["hello_format"] == "SSL 2.0-compatible"
    assert _rules(result) == {
        "client.no-tls12",
        "client.offers-legacy-protocol",
        "client.offers-rsa-key-exchange",
    }
    assert (
        next(f for f in result.findings if f.rule == "client.offers-rsa-key-exchange").severity
        is Severity.HIGH
    )
    assert "RC4-SHA (RSA key exchange)" in result.facts["suites"]  # type: ignore[operator]


def test_a_silent_client_is_dropped_after_the_connection_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sendvault.scan.listen as listen

    monkeypatch.setattr(listen, "_CONNECTION_SECONDS", 1.0)
    running = Running(tmp_path)
    with socket.create_connection(("127.0.0.1", running.tls)) as s:
        s.sendall(b"\x16\x03")  # and then nothing
        s.settimeout(5)
        start = time.monotonic()
        assert s.recv(10) == b""  # closed by the listener
        assert time.monotonic() - start < 3
    running.wait_for(1)
    assert _rules(_only(running.stop(), "TLS client")) == {"client.unknown"}


def test_too_many_connections_at_once_are_refused_not_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sendvault.scan.listen as listen

    monkeypatch.setattr(listen, "_MAX_CONNECTIONS", 4)
    running = Running(tmp_path)
    sockets = [socket.create_connection(("127.0.0.1", running.http)) for _ in range(8)]
    try:
        time.sleep(0.5)
        closed = 0
        for s in sockets:
            s.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                closed += s.recv(1) == b""
        assert closed >= 4
    finally:
        for s in sockets:
            s.close()
        results = running.stop()
    # Refused connections are said once (not once each) and never vanish from the report.
    said = [line for line in running.lines if line.startswith("refused 127.0.0.1:")]
    assert len(said) == 1
    assert said[0].endswith("(1 refused so far; they are not judged)")
    [refused] = [r for r in results if r.target.endswith("refused connection(s)")]
    assert refused.target == f"{closed} refused connection(s)"
    assert _rules(refused) == {"client.unknown"}


def test_cli_listens_reports_and_exits_with_the_verdicts(tmp_path: Path) -> None:
    env = {**os.environ, "SENDVAULT_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sendvault", "scan", "listen", "--tls-port", "0", "--http-port", "0",
         "--duration", "6", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    # Read the start-up lines one by one up to the last: communicate() reads the pipe itself
    # and would miss what readline() buffered.
    intro = [proc.stderr.readline()]
    while intro[-1] and not intro[-1].startswith("stop with"):
        intro.append(proc.stderr.readline())
    first = "".join(intro)
    assert first.startswith("listening: TLS on 127.0.0.1:")
    tls_port = int(first.split("TLS on 127.0.0.1:")[1].split()[0])
    ca = tmp_path / "certs" / "ca.pem"
    ctx = ssl.create_default_context(cafile=str(ca))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", tls_port)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        tls.recv(100)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"trust it:\n  curl --cacert {ca}" in first + err
    assert "TLS client 127.0.0.1:" in err
    [target] = json.loads(out)["targets"]
    assert target["check"] == "listen"
    assert target["findings"] == []


def test_cli_a_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "sendvault", "scan", "listen", "--tls-port", str(port), "--duration", "1"],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "SENDVAULT_HOME": str(tmp_path)},
        )  # fmt: skip
    assert run.returncode == 2
    assert "cannot listen" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_tls13_only_client_cannot_reach_a_tls12_only_server(listening: Running) -> None:
    ctx = ssl.create_default_context(cafile=str(listening.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection(("127.0.0.1", listening.tls)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        tls.recv(100)
    result = _only(listening.stop(), "TLS client")
    assert _rules(result) == {"client.no-tls12"}
    assert "offers TLSv1.3 but not TLS 1.2" in result.findings[0].detail


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000 + b"\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
    ],
    ids=["no-method", "huge-body", "bad-chunk", "huge-header", "tls-on-http-port"],
)
def test_garbage_on_the_http_port_is_unknown_and_gets_no_redirect(
    listening: Running, request_bytes: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", listening.http)) as s:
        with contextlib.suppress(OSError):
            s.sendall(request_bytes)
            s.shutdown(socket.SHUT_WR)
        s.settimeout(15)
        with contextlib.suppress(OSError):
            assert b"308" not in s.recv(1000)
    listening.wait_for(1)
    result = _only(listening.stop(), "HTTP client")
    assert _rules(result) == {"client.unknown"}
    assert result.passed == 0


def test_a_chunked_post_that_is_followed_keeps_its_body(listening: Running) -> None:
    with socket.create_connection(("127.0.0.1", listening.http)) as s:
        s.sendall(
            b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\na=1\r\n0\r\n\r\n"
        )
        answer = s.recv(4096).decode()
    location = next(line.split(": ", 1)[1] for line in answer.split("\r\n") if line.startswith("Location:"))
    path = "/" + location.split("/", 3)[3]
    ctx = ssl.create_default_context(cafile=str(listening.ca))
    with (
        socket.create_connection(("127.0.0.1", listening.tls)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\na=1".encode())
        tls.recv(100)
    listening.wait_for(3)
    http = _only(listening.stop(), "HTTP client")
    assert http.findings == []
    assert http.facts["followed"] == {"method": "POST", "body_bytes": 3}


def test_a_client_that_stalls_after_its_hello_is_judged_and_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sendvault.scan.listen as listen

    monkeypatch.setattr(listen, "_CONNECTION_SECONDS", 1.0)
    running = Running(tmp_path)
    hello = _python_hello()
    with socket.create_connection(("127.0.0.1", running.tls)) as s:
        s.sendall(hello)  # then never answers the ServerHello
        s.settimeout(5)
        start = time.monotonic()
        with contextlib.suppress(OSError):
            while s.recv(65536):
                pass
        assert time.monotonic() - start < 4
    running.wait_for(1)
    result = _only(running.stop(), "TLS client")
    assert "TLSv1.3" in result.facts["versions"]  # type: ignore[operator]
    assert "not completed" in str(result.facts["handshake"])
    assert _rules(result) == {"client.unknown"}  # judged, but never a pass


def _python_hello() -> bytes:
    """The ClientHello Python's default client sends, captured from a memory BIO."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_run_where_no_client_connected_is_unknown_not_a_pass(tmp_path: Path) -> None:
    running = Running(tmp_path)
    [result] = running.stop()
    assert _rules(result) == {"client.unknown"}
    assert exit_code([result], Severity.MEDIUM) == 2


def _hello_with(suites: range, groups: range) -> bytes:
    """A well-formed TLS 1.2 ClientHello listing ``suites`` and ``groups``, in 16000-byte records."""
    group_list = b"".join(g.to_bytes(2, "big") for g in groups)
    extension = (10).to_bytes(2, "big") + (len(group_list) + 2).to_bytes(2, "big")
    extension += len(group_list).to_bytes(2, "big") + group_list
    suite_list = b"".join(c.to_bytes(2, "big") for c in suites)
    body = b"\x03\x03" + bytes(32) + b"\x00" + len(suite_list).to_bytes(2, "big") + suite_list + b"\x01\x00"
    body += len(extension).to_bytes(2, "big") + extension
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"".join(
        b"\x16\x03\x01" + len(message[i : i + 16000]).to_bytes(2, "big") + message[i : i + 16000]
        for i in range(0, len(message), 16000)
    )


def test_a_hello_with_thousands_of_codes_is_kept_small(listening: Running) -> None:
    # 20000 suites and 9000 groups fit in 64 KiB; what the report keeps of them must not.
    with socket.create_connection(("127.0.0.1", listening.tls)) as s:
        s.sendall(_hello_with(range(1, 20001), range(1, 9001)))
        s.settimeout(10)
        with contextlib.suppress(OSError):
            s.recv(100)
    listening.wait_for(1)
    result = _only(listening.stop(), "TLS client")
    for name in ("suites", "groups"):
        listed = result.facts[name]
        assert isinstance(listed, list)
        assert len(listed) == 65
        assert listed[-1].endswith(" more")
    assert len(json.dumps(result.facts)) < 20_000
    assert all(len(f.detail) < 5_000 for f in result.findings)
    assert max(len(line) for line in listening.lines) < 5_000


def test_connections_past_the_report_limit_are_tallied_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sendvault.scan.listen as listen

    monkeypatch.setattr(listen, "_MAX_RESULTS", 3)
    running = Running(tmp_path)
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", running.tls)) as s:
                s.sendall(b"GET / HTTP/1.1\r\n\r\n")
                s.settimeout(5)
                with contextlib.suppress(OSError):
                    s.recv(10)
        running.wait_for(5)
    finally:
        results = running.stop()
    assert len(running.lines) == 5  # every connection is still printed as it happens
    assert len(results) == 4
    summary = results[-1]
    assert summary.target == "2 further connection(s)"
    assert [(f.rule, f.detail) for f in summary.findings] == [
        (
            "client.unknown",
            "in 2 of the 2 connections after the first 3 (printed as they came, not kept in this report)",
        )
    ]
    assert exit_code(results, Severity.MEDIUM) == 2
