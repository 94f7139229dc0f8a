"""`scan ssh` against servers that lie, stall or send garbage: never a crash, never a pass,
and never longer than the timeout allows."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sendvault.scan import Severity, exit_code
from sendvault.scan.findings import CheckResult
from sendvault.scan.ssh import scan_ssh

IDENT = b"SSH-2.0-OpenSSH_9.9\r\n"


def _packet(payload: bytes) -> bytes:
    padding = 8 - (5 + len(payload)) % 8
    padding += 8 if padding < 4 else 0
    return struct.pack("!IB", 1 + len(payload) + padding, padding) + payload + bytes(padding)


def _names(*names: str) -> bytes:
    text = ",".join(names).encode()
    return struct.pack("!I", len(text)) + text


def kexinit(
    kex: tuple[str, ...] = ("curve25519-sha256",), host_key: tuple[str, ...] = ("ssh-ed25519",)
) -> bytes:
    lists = [kex, host_key, ("aes128-ctr",), ("aes128-ctr",), ("hmac-sha2-256",), ("hmac-sha2-256",),
             ("none",), ("none",), (), ()]  # fmt: skip
    return _packet(b"\x14" + os.urandom(16) + b"".join(_names(*n) for n in lists) + b"\x00" + bytes(4))


@contextmanager
def scripted(handler: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback server that runs ``handler`` on every connection, in a thread of its own."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            handler(conn)
            # Close gracefully: FIN, then drain until the scanner closes. Closing with the
            # scanner's identification unread makes the kernel send RST, which can discard what
            # the handler sent before the scanner reads it (1 run in ~30 saw "closed" at once).
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(2)
            while conn.recv(65536):
                pass

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _sends(*chunks: bytes, delay: float = 0.0, hold: float = 0.0) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        for chunk in chunks:
            conn.sendall(chunk)
            time.sleep(delay)
        time.sleep(hold)

    return handler


def _scan(handler: Callable[[socket.socket], None], timeout: float = 2.0) -> tuple[CheckResult, float]:
    with scripted(handler) as port:
        start = time.monotonic()
        result = scan_ssh("127.0.0.1", port, timeout=timeout)
        return result, time.monotonic() - start


def _unknown_only(result: CheckResult) -> None:
    assert {f.rule for f in result.findings} == {"ssh.unknown"}, result.findings
    assert result.passed == 0
    assert exit_code([result], Severity.MEDIUM) == 2


@pytest.mark.parametrize(
    ("chunks", "why"),
    [
        ((b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",), "closed"),
        ((b"hello\r\n" * 60,), "no SSH identification within"),
        ((b"x" * 10000,), "longer than 255 bytes"),
        ((b"SSH-2.0-\xff\xfe\r\n",), "not printable ASCII"),
        ((b"SSH-3.0-Future\r\n",), "protocol version 3.0"),
        ((IDENT, kexinit()[:60]), "closed"),
        ((IDENT, b"\x7f\xff\xff\xff" + b"\x00" * 16), "packet length"),
        ((IDENT, _packet(b"\x14" + bytes(16) + b"\xff\xff\xff\xff")), "shorter than its fields"),
        ((IDENT, _packet(b"\x14" + bytes(16) + _names("a b"))), "malformed name-list"),
        ((IDENT, _packet(b"\x05hello")), "message 5 where KEXINIT was due"),
        ((IDENT, _packet(b"\x02") * 70), "IGNORE/DEBUG"),
        ((IDENT, _packet(b"\x01\x00\x00\x00\x02" + _names("go away") + _names(""))), "disconnected"),
    ],
    ids=["http", "chatter", "long-line", "binary-ident", "ssh3", "truncated-kexinit", "huge-packet",
         "field-overflow", "bad-name-list", "wrong-message", "ignore-flood", "disconnect"],
)  # fmt: skip
def test_garbage_is_unknown_never_a_pass_or_a_crash(chunks: tuple[bytes, ...], why: str) -> None:
    result, elapsed = _scan(_sends(*chunks))
    _unknown_only(result)
    assert why in result.findings[0].detail
    assert elapsed < 4


def test_a_silent_server_is_unknown_within_the_timeout() -> None:
    result, elapsed = _scan(_sends(hold=10), timeout=1.5)
    _unknown_only(result)
    # Connected, but nothing came: a timeout, not "connection failed".
    assert result.findings[0].detail == "no SSH identification and KEXINIT within 1.5 s"
    assert elapsed < 3.5


def test_a_trickling_server_is_held_to_the_whole_timeout_not_per_read() -> None:
    # One byte every 0.3 s: each read succeeds, but the connection's deadline ends it.
    result, elapsed = _scan(_sends(*[bytes([b]) for b in IDENT], delay=0.3), timeout=1.5)
    _unknown_only(result)
    assert elapsed < 3.5


def test_a_server_that_breaks_the_key_exchange_keeps_its_other_verdicts() -> None:
    # A good KEXINIT offering ssh-rsa and group1-sha1, then garbage where the reply is due.
    result, _ = _scan(_sends(IDENT, kexinit(("diffie-hellman-group1-sha1",), ("ssh-rsa",)), b"\x00" * 64))
    rules = {f.rule for f in result.findings}
    assert rules == {"ssh.weak-kex", "ssh.sha1-host-signature", "ssh.unknown"}
    assert any("host key for ssh-rsa" in u for u in result.unknown)


def test_a_thousand_host_key_algorithms_open_a_bounded_number_of_connections() -> None:
    connections = []

    def handler(conn: socket.socket) -> None:
        connections.append(1)
        conn.sendall(IDENT + kexinit(host_key=tuple(f"x{i}@example.com" for i in range(1000))))
        time.sleep(0.5)

    result, _ = _scan(handler)
    assert len(connections) <= 9
    assert "ssh.unknown" in {f.rule for f in result.findings}
    assert any("1000 host-key algorithms offered" in u for u in result.unknown)


def test_ssh1_only_is_old_software() -> None:
    result, _ = _scan(_sends(b"SSH-1.5-OpenSSH_2.9\r\n"))
    assert [f.rule for f in result.findings] == ["ssh.old-software"]
    assert "SSH protocol 1 only" in result.findings[0].detail


def test_lines_before_the_identification_are_kept_as_facts() -> None:
    result, _ = _scan(_sends(b"Authorized use only\r\n", IDENT, kexinit(), b"\x00" * 32))
    assert result.facts["banner_lines"] == ["Authorized use only"]
    assert result.facts["identification"] == IDENT.decode().strip()


def _read_key_exchange(conn: socket.socket) -> None:
    """Read the scanner's identification, KEXINIT and key-exchange init, however TCP cuts them
    (two reads raced the scanner: when both came in the first, the second waited forever)."""

    def more(data: bytes) -> bytes:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the scanner closed before its key exchange")
        return data + chunk

    data = b""
    while b"\r\n" not in data:
        data = more(data)
    data = data.partition(b"\r\n")[2]
    for _ in range(2):  # KEXINIT, then KEX_ECDH_INIT
        while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
            data = more(data)
        data = data[4 + struct.unpack("!I", data[:4])[0] :]


def _reply_with_key(blob: bytes) -> bytes:
    """A KEX_ECDH_REPLY carrying ``blob`` as the host key (and junk for the rest)."""
    return _packet(b"\x1f" + struct.pack("!I", len(blob)) + blob + _names("x") + _names("y"))


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x00\x00\x00\x07ssh-rsa\x00\x00\x00\x01",
        b"\xff" * 40,
        b"\x00\x00\x00\x07ssh-rsa\xff\xff\xff\xff",
    ],
    ids=["empty", "truncated-rsa", "junk", "overlong-field"],
)
def test_a_malformed_host_key_is_unknown_and_the_rest_still_judged(blob: bytes) -> None:
    result = _served_key("ssh-rsa", blob)
    assert {f.rule for f in result.findings} == {"ssh.sha1-host-signature", "ssh.unknown"}
    assert result.facts["host_keys"] == {"ssh-rsa": "unknown"}


def test_a_key_exchange_reply_that_never_comes_ends_with_the_timeout() -> None:
    result, elapsed = _scan(_sends(IDENT, kexinit(), hold=10), timeout=1.5)
    assert {f.rule for f in result.findings} == {"ssh.unknown"}
    assert any("ssh-ed25519" in u for u in result.unknown)
    assert elapsed < 4


@pytest.mark.parametrize(
    ("identification", "old"),
    [(b"SSH-2.0-OpenSSH_for_Windows_7.3\r\n", True), (b"SSH-2.0-OpenSSH_for_Windows_8.1\r\n", False),
     (b"SSH-2.0-OpenSSH_6.6.1p1 Ubuntu-2ubuntu2\r\n", True), (b"SSH-2.0-OpenSSH_7.4\r\n", False),
     (b"SSH-1.99-OpenSSH_9.9\r\n", True), (b"SSH-2.0-dropbear_2022.83\r\n", False)],
)  # fmt: skip
def test_old_software_is_read_from_the_identification(identification: bytes, old: bool) -> None:
    result, _ = _scan(_sends(identification, kexinit(), b"\x00" * 32))
    assert ("ssh.old-software" in {f.rule for f in result.findings}) is old


def test_server_text_is_printed_as_text_on_a_terminal_not_as_markup() -> None:
    # The table on a terminal is rich's: a disconnect reason (or banner, or certificate name) with
    # "[/red]" made it raise MarkupError (a traceback), and "[link=...]" made a terminal link.
    import pty
    import subprocess
    import sys

    reason = "[/red] [link=https://evil.example]click[/link] [bold]"
    disconnect = _packet(b"\x01" + struct.pack("!I", 2) + _names(reason) + _names(""))
    with scripted(_sends(IDENT, disconnect)) as port:
        leader, follower = pty.openpty()
        env = {**os.environ, "COLUMNS": "400", "TERM": "xterm"}
        command = [sys.executable, "-m", "sendvault", "scan", "ssh", f"127.0.0.1:{port}"]
        run = subprocess.run(
            command, stdout=follower, stderr=subprocess.PIPE, timeout=60, env=env, check=False
        )
        os.close(follower)
        out = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(leader, 65536):
                out += chunk
        os.close(leader)
    assert b"Traceback" not in run.stderr, run.stderr.decode()
    assert run.returncode == 2
    text = out.decode(errors="replace")
    assert reason in text
    assert "\x1b]8;" not in text  # no OSC 8 hyperlink


def _s(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def _ecdsa(curve: bytes, name: bytes | None = None) -> bytes:
    return _s(name or b"ecdsa-sha2-" + curve) + _s(curve) + _s(b"\x04" + bytes(64))


def _served_key(algorithm: str, blob: bytes) -> CheckResult:
    def handler(conn: socket.socket) -> None:
        conn.sendall(IDENT + kexinit(host_key=(algorithm,)))
        _read_key_exchange(conn)
        conn.sendall(_reply_with_key(blob))
        time.sleep(0.3)

    result, _ = _scan(handler)
    return result


@pytest.mark.parametrize(
    ("curve", "bits"),
    [(b"1.3.132.0.1", 163), (b"1.2.840.10045.3.1.1", 192), (b"nistb233", 233), (b"1.3.132.0.33", 224)],
)
def test_an_ecdsa_key_on_a_small_curve_named_by_oid_is_high(curve: bytes, bits: int) -> None:
    # RFC 5656 §6.1: a curve without a NIST name in SSH is named by its ASCII OID; sized as 0
    # bits, a 163-bit key passed.
    algorithm = "ecdsa-sha2-" + curve.decode()
    result = _served_key(algorithm, _ecdsa(curve))
    small = [f for f in result.findings if f.rule == "ssh.small-host-key"]
    assert len(small) == 1, result.findings
    assert small[0].severity is Severity.HIGH
    assert f"{bits} bits" in small[0].detail
    assert result.facts["host_keys"][algorithm]["bits"] == bits  # type: ignore[index]
    assert exit_code([result], Severity.HIGH) == 1


@pytest.mark.parametrize(
    ("algorithm", "blob"),
    [
        ("ecdsa-sha2-1.3.132.0.99", _ecdsa(b"1.3.132.0.99")),
        ("ecdsa-sha2-nistp256", _ecdsa(b"brainpoolP160r1", b"ecdsa-sha2-nistp256")),
        ("x509v3-ssh-rsa", _s(b"x509v3-ssh-rsa") + _s(b"0\x82\x01\x00")),
        ("ssh-future", _s(b"ssh-future") + _s(b"key")),
        ("ssh-rsa", _s(b"ssh-rsa") + _s(b"\x01\x00\x01") + _s(b"")),
        ("rsa-sha2-256", _s(b"ssh-rsa") + _s(b"\x01\x00\x01") + _s(b"\x80" + bytes(383))),
        ("ssh-ed25519", _s(b"ssh-ed25519") + _s(b"\x01")),
        ("ecdsa-sha2-nistp384", _ecdsa(b"nistp256", b"ecdsa-sha2-nistp384")),
    ],
    ids=["unknown-oid", "unknown-curve-under-p256", "x509", "unknown-type", "zero-modulus",
         "negative-modulus", "short-ed25519", "p256-named-p384"],
)  # fmt: skip
def test_a_key_whose_size_cannot_be_told_is_unknown_never_a_pass(algorithm: str, blob: bytes) -> None:
    result = _served_key(algorithm, blob)
    assert "ssh.unknown" in {f.rule for f in result.findings}, result.findings
    assert "ssh.small-host-key" not in {f.rule for f in result.findings}
    assert any(algorithm in u and "cannot size" in u for u in result.unknown), result.unknown
    assert exit_code([result], Severity.HIGH) == 2


def test_a_key_of_another_type_than_its_algorithm_is_unknown_unless_small() -> None:
    # OpenSSH's client refuses an Ed25519 key from an rsa-sha2-256 exchange: no client can use it.
    result = _served_key("rsa-sha2-256", _s(b"ssh-ed25519") + _s(bytes(32)))
    assert {f.rule for f in result.findings} == {"ssh.unknown"}, result.findings
    assert any("ssh-ed25519 key, which clients refuse for rsa-sha2-256" in u for u in result.unknown)
    # A 192-bit key sent as nistp256 is found small: high says more than unknown.
    result = _served_key("ecdsa-sha2-nistp384", _ecdsa(b"nistp192"))
    assert [f.severity for f in result.findings if f.rule == "ssh.small-host-key"] == [Severity.HIGH]


def test_the_key_type_a_server_sends_is_printed_as_text() -> None:
    # The type inside the key blob is the server's text: escapes must not reach a terminal.
    kind = b"ssh-ed25519\x1b[2J\x1b]8;;https://evil.example\x07"
    result = _served_key("ssh-ed25519", _s(kind) + _s(bytes(32)))
    text = json.dumps(result.facts) + " ".join(result.unknown) + " ".join(f.detail for f in result.findings)
    assert "\x1b" not in text
    assert "\x07" not in text
    assert result.facts["host_keys"]["ssh-ed25519"]["type"].startswith("ssh-ed25519?[2J")  # type: ignore[index]


@pytest.mark.parametrize("tail", [["--json"], [], ["--json", "--sarif", "{dir}/r.sarif"]])
def test_server_text_on_an_output_that_is_not_utf8_is_no_traceback(tmp_path: Path, tail: list[str]) -> None:
    # A banner line (or disconnect reason, or key type) outside ASCII, on an ASCII stdout
    # (PYTHONIOENCODING, a Latin-1 locale): a UnicodeEncodeError traceback exited 1, "affected".
    import subprocess
    import sys

    reason = "Wartung läuft"
    disconnect = _packet(b"\x01" + struct.pack("!I", 2) + _names(reason) + _names(""))
    with scripted(_sends("Willkommen über\r\n".encode(), IDENT, disconnect)) as port:
        for encoding in ("ascii", "latin-1"):
            command = [sys.executable, "-m", "sendvault", "scan", "ssh", f"127.0.0.1:{port}",
                       *(t.format(dir=tmp_path) for t in tail)]  # fmt: skip
            env = {**os.environ, "PYTHONIOENCODING": encoding}
            run = subprocess.run(command, capture_output=True, timeout=60, env=env, check=False)
            assert b"Traceback" not in run.stderr, run.stderr.decode()
            assert run.returncode == 2, run.stderr.decode()
            assert b"Wartung l?" in run.stdout


@pytest.mark.parametrize("targets", [1, 3])
def test_ctrl_c_ends_a_scan_at_once_whatever_the_timeout(targets: int) -> None:
    # Several targets ran on a thread pool, whose workers are waited for at exit: Ctrl-C waited
    # out every scan in flight (20 s here).
    import signal
    import subprocess
    import sys

    connected = threading.Semaphore(0)

    def tarpit(conn: socket.socket) -> None:
        connected.release()
        time.sleep(30)

    with scripted(tarpit) as port:
        command = [sys.executable, "-m", "sendvault", "scan", "ssh", *[f"127.0.0.1:{port}"] * targets,
                   "--timeout", "20"]  # fmt: skip
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
            for _ in range(targets):  # every target's scan has started and waits for the server
                assert connected.acquire(timeout=60)
            time.sleep(0.3)
            start = time.monotonic()
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
            elapsed = time.monotonic() - start
    assert elapsed < 3, elapsed
    assert process.returncode == 130, stderr  # 128 + SIGINT, as the CLI's other commands
    assert stderr.strip() == "interrupted", stderr
