"""`scan listen`: let a client under test connect, and see what it offers and how it redirects.

The TLS port reads each ClientHello off the wire before OpenSSL sees it (``_hello``), judges
what the client offers (``client.no-tls12``, ``client.offers-legacy-protocol``,
``client.offers-rsa-key-exchange``), then completes the handshake as a platform of the notices
would: TLS 1.2+ with ECDHE and AEAD only (sendvault's own server policy), so a client that
cannot reach such a platform fails here too. The HTTP port answers every request with a 308 to
the TLS port, under a path that names the request; a request arriving there closes the loop:
followed, with the same method and the same body, or not (``client.redirect-not-followed``,
``client.redirect-changes-method``).

Nothing a client sends is printed or kept: no path, query, header or body, only methods, sizes
and whether the body came back unchanged (compared by digest in memory). Every connection is
bounded in time and size, and in number at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._hello import (
    ClientHello,
    NotTLS,
    group_name,
    parse_client_hello,
    read_hello,
    signature_name,
    suite_info,
    version_name,
)
from .findings import CheckResult, Severity

__all__ = ["Listener", "issue_certificate", "judge_hello"]

_TLS12, _TLS13 = 0x0303, 0x0304
_LEGACY = {0x0002: "SSLv2", 0x0300: "SSLv3", 0x0301: "TLSv1.0", 0x0302: "TLSv1.1"}
_PREFIX = "/.sendvault/redirect/"
_CONNECTION_SECONDS = 10.0
_MAX_HEADERS = 16 * 1024
_MAX_BODY = 1024 * 1024
_MAX_CONNECTIONS = 32
# A ClientHello may list tens of thousands of codes: what is kept and printed of each list is
# bounded, and so is the number of connections kept for the report (later ones are printed as
# they happen and tallied by rule), so a flood of hostile hellos cannot grow the listener.
_MAX_LISTED = 64
_MAX_RESULTS = 1000
_MAX_SNI = 255


def _capped(names: list[str]) -> list[str]:
    """At most _MAX_LISTED names, then how many more there were."""
    if len(names) <= _MAX_LISTED:
        return names
    return [*names[:_MAX_LISTED], f"... and {len(names) - _MAX_LISTED} more"]


def judge_hello(hello: ClientHello, result: CheckResult) -> None:
    """The client.* verdicts of a ClientHello, and what it offered as facts."""
    offered = hello.offered_versions
    suites = [(code, *suite_info(code)) for code in hello.suites]
    result.facts.update(
        {
            "versions": _capped([version_name(v) for v in offered]),
            "suites": _capped([name + (" (RSA key exchange)" if rsa else "") for _, name, rsa in suites]),
            "groups": _capped([group_name(g) for g in hello.groups]),
            "signature_algorithms": _capped([signature_name(s) for s in hello.signature_algorithms]),
            "sni": None if hello.server_name is None else hello.server_name[:_MAX_SNI],
            "alpn": _capped([p[:_MAX_SNI] for p in hello.alpn]),
        }
    )
    if hello.sslv2_format:
        result.facts["hello_format"] = "SSL 2.0-compatible"
    best = max(offered)
    tls12 = _TLS12 in hello.versions if hello.versions else hello.legacy_version >= _TLS12
    if tls12:
        result.ok()
    elif best < _TLS12:
        result.fail(
            "client.no-tls12", f"offers at most {version_name(best)}: a TLS 1.2-only server refuses it"
        )
    else:
        result.fail(
            "client.no-tls12",
            "offers "
            + ", ".join(_capped([version_name(v) for v in offered]))
            + " but not TLS 1.2: a TLS 1.2-only server refuses it",
        )
    legacy = [_LEGACY[v] for v in sorted(set(offered)) if v in _LEGACY]
    if best < _TLS12:
        legacy = legacy or [version_name(best)]
    if legacy:
        result.fail("client.offers-legacy-protocol", "offers " + ", ".join(legacy))
    elif not hello.versions:
        # Without supported_versions a client names only its maximum: whether it would also
        # accept TLS 1.0 or 1.1 is not in the ClientHello.
        why = f"whether it accepts TLS 1.0/1.1 (it names only its maximum, {version_name(best)})"
        result.cannot(why)
    else:
        result.ok()
    rsa = [name for _, name, is_rsa in suites if is_rsa]
    if rsa and _only_rsa(suites, offered):
        result.fail(
            "client.offers-rsa-key-exchange",
            "offers only RSA key exchange (a server without it refuses the client): "
            + ", ".join(_capped(rsa)),
            severity=Severity.HIGH,
        )
    elif rsa:
        result.fail("client.offers-rsa-key-exchange", "offers RSA key exchange: " + ", ".join(_capped(rsa)))
    else:
        result.ok()


def _only_rsa(suites: list[tuple[int, str, bool | None]], offered: tuple[int, ...]) -> bool:
    """Whether nothing but RSA key exchange (and signalling values) is offered for TLS <= 1.2,
    and no TLS 1.3 suite with TLS 1.3."""
    tls13 = _TLS13 in offered and any(code >> 8 == 0x13 for code, _, _ in suites)
    others = [code for code, name, rsa in suites if rsa is not True and not name.endswith("_SCSV")]
    return not tls13 and not [c for c in others if c >> 8 != 0x13]


@dataclass
class _Redirect:
    """A request answered with a 308, waiting for the client to follow it."""

    result: CheckResult
    client: str
    method: str
    body_size: int
    body_digest: bytes
    at: float
    done: bool = False


@dataclass
class Listener:
    """The two listening sockets and what they have seen; ``run`` serves until stopped."""

    context: ssl.SSLContext
    tls_port: int
    http_port: int
    host: str = "127.0.0.1"
    follow_seconds: float = 5.0
    say: Callable[[str], None] = print
    results: list[CheckResult] = field(default_factory=list)
    _redirects: dict[str, _Redirect] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(_MAX_CONNECTIONS)
    )
    _sockets: list[socket.socket] = field(default_factory=list)
    # Connections judged past _MAX_RESULTS: how many, and how often each (rule, severity) came.
    _dropped: int = 0
    _dropped_rules: dict[tuple[str, Severity], int] = field(default_factory=dict)
    # Connections refused because _MAX_CONNECTIONS were open, and when that was last said.
    _refused: int = 0
    _refused_said: float = 0.0

    def bind(self) -> None:
        """Bind both ports (0 picks a free one; the chosen port is kept). OSError when taken."""
        for kind in ("tls", "http"):
            sock = socket.create_server((self.host, getattr(self, f"{kind}_port")), reuse_port=False)
            sock.settimeout(0.2)
            setattr(self, f"{kind}_port", int(sock.getsockname()[1]))
            self._sockets.append(sock)

    def run(self, duration: float | None) -> list[CheckResult]:
        """Serve until ``duration`` passes or ``stop`` is called; every verdict, in order."""
        threads = [
            threading.Thread(target=self._accept, args=(sock, handler), daemon=True)
            for sock, handler in zip(self._sockets, (self._serve_tls, self._serve_http), strict=True)
        ]
        for thread in threads:
            thread.start()
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self._stop.is_set():
                self._expire()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._stop.wait(0.2 if left is None else min(0.2, left))
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=5)
            for sock in self._sockets:
                sock.close()
            # Wait for connections in progress (each is bounded), then judge what never came back.
            until = time.monotonic() + _CONNECTION_SECONDS + 1
            for _ in range(_MAX_CONNECTIONS):
                self._slots.acquire(timeout=max(0.0, until - time.monotonic()))
            self._expire(final=True)
        if self._dropped:
            self.results.append(self._dropped_summary())
        if self._refused:
            refused = CheckResult("listen", f"{self._refused} refused connection(s)")
            why = (
                f"{self._refused} connection(s) arrived while {_MAX_CONNECTIONS} were open and were "
                "refused unjudged: a client under test among them was not seen"
            )
            refused.cannot(why)
            refused.fail("client.unknown", why)
            self.results.append(refused)
        if not self.results:
            # Nothing connected: nothing was checked, which is never a pass.
            idle = CheckResult("listen", "no client")
            idle.cannot("no client connected to either port")
            idle.fail("client.unknown", "no client connected to either port")
            self.results.append(idle)
        return self.results

    def stop(self) -> None:
        """Stop serving (from a signal handler or another thread)."""
        self._stop.set()

    # -- plumbing

    def _accept(self, sock: socket.socket, handler: Callable[[socket.socket, str], None]) -> None:
        while not self._stop.is_set():
            try:
                conn, address = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                conn.close()  # too many at once: refuse rather than queue without bound
                self._refuse(f"{address[0]}:{address[1]}")
                continue
            client = f"{address[0]}:{address[1]}"
            threading.Thread(target=self._guarded, args=(handler, conn, client), daemon=True).start()

    def _guarded(
        self, handler: Callable[[socket.socket, str], None], conn: socket.socket, client: str
    ) -> None:
        try:
            with conn:
                conn.settimeout(_CONNECTION_SECONDS)
                handler(conn, client)
        except (OSError, ValueError, ssl.SSLError):
            pass  # the client went away or sent garbage: already recorded where it mattered
        except Exception as exc:  # noqa: BLE001 - no client, however hostile, may stop the listener
            result = CheckResult("listen", f"client {client}")
            result.cannot(f"the listener could not handle this connection ({type(exc).__name__})")
            result.fail(
                "client.unknown", f"the listener could not handle this connection ({type(exc).__name__})"
            )
            self._record(result, f"{result.target}: not judged ({type(exc).__name__})")
        finally:
            self._slots.release()

    def _refuse(self, client: str) -> None:
        # Said at once, then at most every 5 s: a flood must not flood the terminal too.
        self._refused += 1
        now = time.monotonic()
        if self._refused == 1 or now - self._refused_said >= 5:
            self._refused_said = now
            self.say(
                f"refused {client}: {_MAX_CONNECTIONS} connections already open "
                f"({self._refused} refused so far; they are not judged)"
            )

    def _record(self, result: CheckResult, line: str) -> None:
        with self._lock:
            self._keep(result)
        self.say(line)

    def _keep(self, result: CheckResult) -> None:
        """Keep a result for the report, or past _MAX_RESULTS tally its rules (lock held)."""
        if len(self.results) < _MAX_RESULTS:
            self.results.append(result)
            return
        self._dropped += 1
        for finding in {(f.rule, f.severity) for f in result.findings}:
            self._dropped_rules[finding] = self._dropped_rules.get(finding, 0) + 1

    def _dropped_summary(self) -> CheckResult:
        summary = CheckResult("listen", f"{self._dropped} further connection(s)")
        summary.facts["not_kept"] = self._dropped
        for (rule, severity), count in sorted(self._dropped_rules.items()):
            summary.fail(
                rule,
                f"in {count} of the {self._dropped} connections after the first {_MAX_RESULTS} "
                "(printed as they came, not kept in this report)",
                severity=severity,
            )
        if not summary.findings:
            summary.ok()
        return summary

    # -- TLS port

    def _serve_tls(self, conn: socket.socket, client: str) -> None:
        result = CheckResult("listen", f"TLS client {client}")
        reader = _Deadline(conn)
        try:
            raw = read_hello(reader.read)
            hello = parse_client_hello(raw)
        except NotTLS as exc:
            result.cannot(f"not a TLS ClientHello ({exc})")
            result.fail("client.unknown", f"not a TLS ClientHello ({exc})")
            self._record(result, f"{result.target}: not TLS ({exc})")
            return
        except (OSError, ConnectionError) as exc:
            result.cannot(f"the ClientHello did not arrive ({type(exc).__name__})")
            result.fail("client.unknown", "the ClientHello did not arrive")
            self._record(result, f"{result.target}: no ClientHello ({type(exc).__name__})")
            return
        judge_hello(hello, result)
        tls = _BioTLS(self.context, conn, raw)
        outcome = tls.handshake()
        result.facts["handshake"] = outcome
        request = None
        if tls.ok:
            request = _read_request(tls.read_exact_or_line)
            tls.write(_answer(200, b"recorded by sendvault scan listen\n"))
        else:
            _handshake_failed(result, outcome, refused=tls.refused)
            self._tls_failed(client, outcome)
        if request is not None:
            result.facts["request"] = {"method": request.method, "body_bytes": len(request.body)}
            self._followed(request, result)
        rules = ", ".join(sorted({f.rule for f in result.findings})) or "ok"
        self._record(
            result,
            f"{result.target}: {', '.join(result.facts['versions'])}; "  # type: ignore[arg-type]
            f"handshake {outcome}; {rules}",
        )

    def _tls_failed(self, client: str, outcome: str) -> None:
        # A client that followed a 308 but could not complete TLS here never sends its request:
        # its redirect cannot be judged as not followed. One failed connection is at most one
        # follower: the latest 308 still pending for that address (a client follows at once),
        # not every client behind the same address.
        address = client.rpartition(":")[0]
        with self._lock:
            pending = [r for r in self._redirects.values() if not r.done and r.client == address]
            pending = sorted(pending, key=lambda r: r.at)[-1:]
            for redirect in pending:
                redirect.done = True
        for redirect in pending:
            why = f"the client came to the TLS port but the handshake failed ({outcome})"
            redirect.result.cannot(why)
            redirect.result.fail("client.unknown", why)
            self.say(f"{redirect.result.target}: redirect unknown ({why})")

    def _followed(self, request: _Request, tls_result: CheckResult) -> None:
        if not request.path.startswith(_PREFIX):
            return
        token = request.path[len(_PREFIX) :].partition("/")[0]
        with self._lock:
            redirect = self._redirects.get(token)
        if redirect is None:
            return
        result = redirect.result
        result.facts["followed"] = {"method": request.method, "body_bytes": len(request.body)}
        late = redirect.done
        redirect.done = True
        if late:
            # Judged "not followed" when its time ran out; it came after all.
            result.findings[:] = [f for f in result.findings if f.rule != "client.redirect-not-followed"]
        result.ok()
        kept_method = request.method == redirect.method
        kept_body = hashlib.sha256(request.body).digest() == redirect.body_digest
        if kept_method and kept_body:
            result.ok()
            verdict = "followed, method and body kept"
        elif not kept_method:
            result.fail(
                "client.redirect-changes-method",
                f"a {redirect.method} answered 308 came back as {request.method}"
                + (" without its body" if redirect.body_size and not request.body else ""),
            )
            verdict = f"followed as {request.method}"
        else:
            result.fail(
                "client.redirect-changes-method",
                f"a {redirect.method} answered 308 came back with a different body "
                f"({redirect.body_size} -> {len(request.body)} bytes)",
            )
            verdict = "followed, body changed"
        tls_result.facts["redirect_of"] = result.target
        self.say(f"{result.target}: {verdict}")

    # -- HTTP port

    def _serve_http(self, conn: socket.socket, client: str) -> None:
        reader = _Deadline(conn)
        request = _read_request(reader.read_exact_or_line)
        result = CheckResult("listen", f"HTTP client {client}")
        if request is None:
            result.cannot("no HTTP request")
            result.fail("client.unknown", "no HTTP request arrived")
            self._record(result, f"{result.target}: no HTTP request")
            return
        token = secrets.token_urlsafe(12)
        host = request.host or self.host
        location = f"https://{_bracketed(host)}:{self.tls_port}{_PREFIX}{token}{request.path or '/'}"
        result.target = f"HTTP client {client} ({request.method})"
        result.facts["request"] = {"method": request.method, "body_bytes": len(request.body)}
        redirect = _Redirect(
            result,
            client.rpartition(":")[0],
            request.method,
            len(request.body),
            hashlib.sha256(request.body).digest(),
            time.monotonic(),
        )
        with self._lock:
            self._redirects[token] = redirect
            self._keep(result)
        conn.sendall(_answer(308, b"", location))
        self.say(f"{result.target}: answered 308 to the TLS port")

    def _expire(self, *, final: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            due = [
                r
                for r in self._redirects.values()
                if not r.done and (final or now - r.at > self.follow_seconds)
            ]
            for r in due:
                r.done = True
            # A late follower is still recognised for a while; after that, forget the token.
            forget = now - self.follow_seconds - 2 * _CONNECTION_SECONDS
            for token in [t for t, r in self._redirects.items() if r.done and r.at < forget]:
                del self._redirects[token]
        for r in due:
            r.result.fail(
                "client.redirect-not-followed",
                f"no request reached the TLS port within {self.follow_seconds:g} s of the 308",
            )
            self.say(f"{r.result.target}: 308 not followed")


def _handshake_failed(result: CheckResult, outcome: str, *, refused: bool) -> None:
    """The verdict of a ClientHello whose handshake with the platform-like policy failed.

    Refused by the policy (no common cipher, protocol, group or signature algorithm): the client
    cannot reach such a platform, ``client.cannot-connect``, unless a high offer rule already says
    why (TLS 1.1 at most, RSA key exchange only). Not completed for another reason (the client
    does not trust the listener's certificate, hung up, stalled): ``client.unknown``.
    """
    if refused:
        if not any(f.severity >= Severity.HIGH for f in result.findings):
            result.fail("client.cannot-connect", f"a TLS 1.2+ ECDHE/AEAD server refuses it: {outcome}")
        return
    why = (
        f"the handshake did not complete ({outcome}), so whether it reaches a TLS 1.2+ platform is not known"
    )
    result.cannot(why)
    result.fail("client.unknown", why)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# -- HTTP, just enough for one request ------------------------------------------------------------


@dataclass
class _Request:
    method: str
    target: str  # request target as sent; kept in memory only, never printed
    host: str | None
    body: bytes

    @property
    def path(self) -> str:
        """The target without its scheme and authority (an absolute-form target has them)."""
        if self.target.startswith(("http://", "https://")):
            rest = self.target.split("://", 1)[1]
            return "/" + rest.partition("/")[2]
        return self.target


def _read_request(read: Callable[[int | None], bytes]) -> _Request | None:
    """One HTTP/1.x request (headers up to 16 KiB, body up to 1 MiB); None when none arrives."""
    try:
        head = b""
        while not head.endswith(b"\r\n\r\n") and not head.endswith(b"\n\n"):
            head += read(None)
            if len(head) > _MAX_HEADERS:
                return None
        lines = head.decode("latin-1").splitlines()
        method, target, version = [*lines[0].split(" "), "", ""][:3]
        if not (method.isascii() and method.isalpha() and method.isupper()) or not version.startswith(
            "HTTP/1."
        ):
            return None
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = _chunked(read)
        elif headers.get("content-length", "0").isdigit():
            size = int(headers.get("content-length", "0"))
            if size > _MAX_BODY:
                return None
            body = read(size) if size else b""
        host = headers.get("host")
        if host and host.startswith("["):
            host = host[1:].partition("]")[0]
        elif host and host.count(":") == 1:
            host = host.partition(":")[0]
        return _Request(method, target, host or None, body)
    except (OSError, ConnectionError, ValueError, IndexError):
        return None


def _chunked(read: Callable[[int | None], bytes]) -> bytes:
    body = b""
    while True:
        size = int(read(None).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            read(None)  # the blank line after the last chunk (no trailers expected)
            return body
        if len(body) + size > _MAX_BODY:
            raise ValueError("body too large")
        body += read(size)
        read(None)


def _answer(status: int, body: bytes, location: str | None = None) -> bytes:
    reason = {200: "OK", 308: "Permanent Redirect"}[status]
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    if location:
        head += f"Location: {location}\r\n"
    return head.encode() + b"\r\n" + body


class _Deadline:
    """Reads from a socket, all within one connection-long deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = time.monotonic() + _CONNECTION_SECONDS
        self.buffer = b""

    def _more(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client took too long")
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        self.buffer += chunk

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes."""
        while len(self.buffer) < size:
            self._more()
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def read_exact_or_line(self, size: int | None) -> bytes:
        """``size`` bytes, or with None one line (with its end), at most 16 KiB."""
        if size is not None:
            return self.read(size)
        while b"\n" not in self.buffer:
            if len(self.buffer) > _MAX_HEADERS:
                raise ValueError("line too long")
            self._more()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"


class _BioTLS:
    """A server-side TLS session over a socket whose first bytes were already read."""

    def __init__(self, context: ssl.SSLContext, sock: socket.socket, first: bytes) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.incoming.write(first)
        self.raw = _Deadline(sock)
        self.sock = sock
        self.ok = False
        self.refused = False  # refused by the server policy (see _POLICY_REFUSALS)
        self.buffer = b""

    def _pump(self, action: Callable[[], object]) -> object:
        while True:
            try:
                out = action()
            except ssl.SSLWantReadError:
                self._flush()
                self.raw._more()
                self.incoming.write(self.raw.buffer)
                self.raw.buffer = b""
            else:
                self._flush()
                return out

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def handshake(self) -> str:
        """Complete the handshake; what came of it, in a few words."""
        try:
            self._pump(self.tls.do_handshake)
        except ssl.SSLError as exc:
            with contextlib.suppress(OSError):
                self._flush()  # the alert, so the client learns why
            self.refused = str(exc.reason) in _POLICY_REFUSALS
            return _refusal(exc)
        except (OSError, ConnectionError) as exc:
            return f"not completed ({type(exc).__name__})"
        self.ok = True
        cipher = self.tls.cipher()
        return f"{self.tls.version()} {cipher[0] if cipher else ''}".strip()

    def read_exact_or_line(self, size: int | None) -> bytes:
        """As _Deadline's, over TLS."""
        while (size is None and b"\n" not in self.buffer) or (size is not None and len(self.buffer) < size):
            if size is None and len(self.buffer) > _MAX_HEADERS:
                raise ValueError("line too long")
            chunk = self._pump(lambda: self.tls.read(65536))
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk  # type: ignore[operator]
        if size is None:
            line, _, self.buffer = self.buffer.partition(b"\n")
            return line + b"\n"
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def write(self, data: bytes) -> None:
        """Send ``data`` over TLS (best effort: the client may be gone)."""
        with contextlib.suppress(OSError, ssl.SSLError, ConnectionError):
            self._pump(lambda: self.tls.write(data))


_REFUSALS = {
    "NO_SHARED_CIPHER": "refused: no cipher suite in common (ECDHE with AEAD required)",
    "UNSUPPORTED_PROTOCOL": "refused: protocol version too old (TLS 1.2+ required)",
    "WRONG_VERSION_NUMBER": "refused: protocol version too old (TLS 1.2+ required)",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust the listener's certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client rejected the listener's certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client rejected the listener's certificate",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "refused: no signature algorithm in common",
    "NO_SHARED_GROUPS": "refused: no key exchange group in common",
}


# OpenSSL's reasons for refusing a ClientHello that the server policy (TLS 1.2+, ECDHE, AEAD)
# cannot serve: a platform with that policy refuses the client the same way.
_POLICY_REFUSALS = frozenset((
    "NO_SHARED_CIPHER", "UNSUPPORTED_PROTOCOL", "WRONG_VERSION_NUMBER", "VERSION_TOO_LOW",
    "NO_SUITABLE_SIGNATURE_ALGORITHM", "NO_SHARED_SIGNATURE_ALGORITHMS", "NO_SHARED_GROUPS",
    "NO_SUITABLE_KEY_SHARE", "INAPPROPRIATE_FALLBACK",
))  # fmt: skip


def _refusal(exc: ssl.SSLError) -> str:
    reason = str(exc.reason or type(exc).__name__)
    return _REFUSALS.get(reason, f"refused ({reason})")


def issue_certificate(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """The listener's certificate and key, issued once by sendvault's local CA in ``directory``
    (the one `sendvault certs` uses), and that CA's certificate: (cert, key, ca)."""
    from ..server.certs import CertAuthority  # noqa: PLC0415 - only the listener issues

    ca = CertAuthority.load_or_create(directory)
    cert, key = directory / "listen.pem", directory / "listen.key"
    if not (cert.exists() and key.exists()):
        ca.issue(cert, key, names)
    return cert, key, ca.cert_path
