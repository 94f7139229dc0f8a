"""Transport checks: HSTS, the 308 from plain HTTP, TLS versions and key exchange.

TLS versions and key exchange come from the compliance scanner (:func:`sendvault.scan.tls.scan_tls`),
which proves on loopback what this machine's OpenSSL can still offer before it counts a refusal:
a legacy version this machine cannot offer is ``untested``, never ``pass``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit

from ..scan.tls import scan_tls
from ._http import Connection, Endpoint, HttpFailure, request_head
from ._mask import clean
from ._model import Evidence, Exchange, Status

__all__ = ["hsts", "redirect_308", "tls_checks"]

ONE_YEAR = 31_536_000
_MAX_AGE = re.compile(r"max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


def hsts(headers: dict[str, str] | None, url: str) -> tuple[Status, Evidence]:
    """Strict-Transport-Security on an HTTPS answer, with a max-age of at least one year."""
    if headers is None:
        return "untested", Evidence("no HTTPS answer to look at")
    value = headers.get("strict-transport-security")
    exchange = Exchange("POST", url, headers={"strict-transport-security": clean(value or "(absent)")})
    if value is None:
        return "fail", Evidence("no Strict-Transport-Security header on the HTTPS answer", [exchange])
    match = _MAX_AGE.search(value)
    if match is None:
        return "fail", Evidence("Strict-Transport-Security has no max-age", [exchange])
    digits = match.group(1).lstrip("0") or "0"
    # int() refuses thousands of digits; any number of more than 18 is over a year anyway.
    age = int(digits) if len(digits) <= 18 else 10**18
    if age < ONE_YEAR:
        return "fail", Evidence(f"max-age={age} is under one year ({ONE_YEAR} s)", [exchange])
    return "pass", Evidence(f"max-age={age} (at least one year)", [exchange])


async def redirect_308(
    http: Endpoint,
    https: Endpoint,
    path: str,
    body: bytes,
    *,
    follow: Callable[[str, bytes], Awaitable[tuple[int | None, Exchange, str | None]]],
    timeout: float,
) -> tuple[Status, Evidence]:
    """A POST to plain HTTP is answered 308 to the same path on HTTPS, and the POST there works.

    No credentials travel over plain HTTP: the redirect must come before authentication. The
    body is re-sent to the Location only on the target's own host, with the session's
    credentials, through ``follow`` (an async callable taking the path and the body).
    """
    head = request_head("POST", http, path, {"Content-Type": "application/json"}, len(body))
    url = http.url(path)
    try:
        conn = await Connection.open(http, None, timeout)
        try:
            answer = await conn.request(head, body, timeout)
        finally:
            await conn.aclose()
    except HttpFailure as exc:
        return "fail", Evidence(f"plain HTTP: {exc.detail}", [Exchange("POST", url, error=exc.detail)])
    location = answer.headers.get("location")
    first = Exchange("POST", url, status=answer.status, headers={"location": clean(location or "(absent)")})
    if answer.status != 308:
        what = (
            "a temporary redirect: clients may turn the POST into a GET"
            if answer.status in (301, 302, 303)
            else "no redirect"
        )
        return "fail", Evidence(f"plain HTTP answered {answer.status} ({what}); 308 is required", [first])
    if not location:
        return "fail", Evidence("308 without a Location header", [first])
    try:
        target = urljoin(url, location)
        parts = urlsplit(target)
        host = parts.hostname
    except ValueError:
        return "fail", Evidence("308 with a Location that is not a URL", [first])
    if parts.scheme != "https":
        return "fail", Evidence(f"308 points to {clean(parts.scheme, 40)}://, not https://", [first])
    if parts.path != https.base + path:
        return "fail", Evidence(
            f"308 points to {clean(parts.path, 200)!r}, not the same path {https.base + path!r}", [first]
        )
    if host != https.host:
        return "fail", Evidence(
            f"308 points to host {clean(str(host), 100)}, not {https.host}: not followed with credentials",
            [first],
        )
    status, second, problem = await follow(path, body)
    if problem:
        return "fail", Evidence(
            f"the POST re-sent to {clean(target, 200)} failed: {problem}", [first, second]
        )
    return "pass", Evidence(
        f"308 to {clean(target, 200)}; the POST re-sent there was answered {status} correctly",
        [first, second],
    )


async def tls_checks(
    endpoint: Endpoint, ca_file: str | None, *, client_cert: bool
) -> dict[str, tuple[Status, Evidence]]:
    """``transport.tls-legacy-refused`` and ``transport.rsa-kex-refused`` from a TLS scan."""
    result = await asyncio.to_thread(scan_tls, endpoint.host, endpoint.port, ca_file=ca_file)
    facts = {k: v for k, v in result.facts.items() if k.startswith("TLSv")}
    notes = [f"{label}: {state}" for label, state in facts.items()]
    notes += [f"could not check: {what}" for what in result.unknown]
    if client_cert:
        caveat = (
            "the TLS scan offers no client certificate; on a server that requires one, a refused "
            "handshake may be the missing certificate, so refusals prove nothing"
        )
        evidence = Evidence(caveat, notes=notes)
        return {
            "transport.tls-legacy-refused": ("untested", evidence),
            "transport.rsa-kex-refused": ("untested", evidence),
        }
    out: dict[str, tuple[Status, Evidence]] = {}
    legacy = {label: facts.get(label, "unknown") for label in ("TLSv1.0", "TLSv1.1")}
    accepted = [label for label, state in legacy.items() if state == "accepted"]
    if accepted:
        out["transport.tls-legacy-refused"] = (
            "fail",
            Evidence(f"{' and '.join(accepted)} accepted", notes=notes),
        )
    elif all(state == "refused" for state in legacy.values()):
        out["transport.tls-legacy-refused"] = ("pass", Evidence("TLS 1.0 and TLS 1.1 refused", notes=notes))
    else:
        unknown = [label for label, state in legacy.items() if state != "refused"]
        out["transport.tls-legacy-refused"] = (
            "untested",
            Evidence(f"{' and '.join(unknown)} could not be tried from this machine", notes=notes),
        )
    rsa = [f.detail for f in result.findings if f.rule == "tls.rsa-key-exchange"]
    handshook = any(state == "accepted" for state in facts.values())
    if rsa:
        out["transport.rsa-kex-refused"] = ("fail", Evidence(rsa[0], notes=notes))
    elif handshook:
        suites = result.facts.get("ciphers", {})
        offered = sum(len(v) for v in suites.values()) if isinstance(suites, dict) else 0
        out["transport.rsa-kex-refused"] = (
            "pass",
            Evidence(f"no RSA key exchange among the {offered} TLS <= 1.2 suite(s) accepted", notes=notes),
        )
    else:
        out["transport.rsa-kex-refused"] = ("untested", Evidence("no TLS handshake completed", notes=notes))
    return out
