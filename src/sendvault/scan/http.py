"""`scan http`: does plain HTTP send callers to HTTPS, permanently, keeping POST; and HSTS.

Redirect codes (RFC 9110): 301 and 308 are permanent; 302, 303 and 307 are not. For API
endpoints that take POST (webhooks, Marketing Cloud's token calls), only 307 and 308 keep the
method and body: a 301/302/303 turns the retried POST into a GET. Every hop of the chain is
judged, for GET and for POST alike, and the HTTPS end should be on the host that was asked.
"""

from __future__ import annotations

import http.client
import re
import ssl
from urllib.parse import urljoin, urlsplit

from .findings import CheckResult
from .tls import load_ca

__all__ = ["scan_http"]

_MAX_HOPS = 5
_ONE_YEAR = 31_536_000
_REDIRECTS = (301, 302, 303, 307, 308)
_NOT_PERMANENT = (302, 303, 307)
_TO_GET = (301, 302, 303)  # what clients do with a POST that is answered so (RFC 9110 15.4)
_ERRORS = (OSError, ssl.SSLError, http.client.HTTPException)


def _request(url: str, method: str, ctx: ssl.SSLContext | None, timeout: float) -> tuple[int, dict[str, str]]:
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port or 443, timeout=timeout, context=ctx
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    try:
        conn.request(
            method, path, body=b"{}" if method == "POST" else None, headers={"User-Agent": "sendvault-scan"}
        )
        resp = conn.getresponse()
        resp.read(65536)
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def _chain(url: str, method: str, timeout: float) -> tuple[list[tuple[int, str, str]], str | None]:
    """Follow plain-HTTP redirects from ``url``: the hops (code, method, URL) and the https:// URL
    reached, or None when an answer is not a redirect (or the chain is too long)."""
    hops: list[tuple[int, str, str]] = []
    current = url
    for _ in range(_MAX_HOPS):
        status, headers = _request(current, method, None, timeout)
        hops.append((status, method, current))
        location = headers.get("location")
        if status not in _REDIRECTS or not location:
            return hops, None
        current = urljoin(current, location)
        if current.startswith("https://"):
            return hops, current
        if status in _TO_GET:
            method = "GET"
    return hops, None


def plain_url(url: str, http_port: int | None = None) -> str:
    """The http:// URL to probe for ``url``.

    An https:// URL names the TLS port, where plain HTTP is never served: its http:// form is
    on ``http_port`` (80 by default), same host, path and query.
    """
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.scheme == "https" or http_port is not None:
        port = http_port or 80
        netloc = host if port == 80 else f"{host}:{port}"
        return parts._replace(scheme="http", netloc=netloc).geturl()
    return parts._replace(scheme="http").geturl()


def scan_http(
    url: str,
    *,
    ca_file: str | None = None,
    timeout: float = 10.0,
    post: bool = True,
    http_port: int | None = None,
) -> CheckResult:
    """Check the redirect of the http:// form of ``url`` and HSTS on its https:// form.

    For an https:// URL the plain side is probed on ``http_port`` (80 by default), never on the
    TLS port. A ``ca_file`` that cannot be loaded leaves HSTS unknown (``http.unknown``); the
    redirect checks, which need no certificate, still run.
    """
    parts = urlsplit(url if "://" in url else f"http://{url}")
    plain = plain_url(url, http_port)
    host = parts.hostname or ""
    result = CheckResult("http", plain)
    if parts.scheme == "https":
        result.facts["given"] = url
    try:
        hops, https = _chain(plain, "GET", timeout)
    except _ERRORS as exc:
        result.cannot(f"plain HTTP: {type(exc).__name__}")
        result.fail("http.unknown", f"plain HTTP could not be checked ({type(exc).__name__})")
        return result
    result.facts["chain"] = [f"{code} {where}" for code, _, where in hops]
    if https is None:
        result.fail("http.no-https-redirect", f"http:// answers {hops[-1][0]} without reaching https://")
        return result
    _judge_hops(hops, result)
    https_host = urlsplit(https).hostname
    if https_host != host:
        result.facts["redirected_host"] = https_host
        result.fail("http.redirect-other-host", f"https:// is reached on {https_host}, not on {host}")
    else:
        result.ok()
    if post:
        _post(plain, timeout, result)
    try:
        ctx = load_ca(ca_file)
    except ValueError as exc:
        result.cannot(f"HTTPS: {exc}")
        result.fail("http.unknown", f"HSTS could not be checked: {exc}")
        return result
    _hsts(https, ctx, timeout, result)
    return result


def _judge_hops(hops: list[tuple[int, str, str]], result: CheckResult) -> None:
    temporary = [f"{code} at {where}" for code, _, where in hops if code in _NOT_PERMANENT]
    if temporary:
        result.fail("http.redirect-not-permanent", "redirect not permanent: " + ", ".join(temporary))
    else:
        result.ok()


def _post(plain: str, timeout: float, result: CheckResult) -> None:
    # A POST is sent as an API client sends it; its chain may differ from the GET's.
    try:
        hops, https = _chain(plain, "POST", timeout)
    except _ERRORS as exc:
        result.cannot(f"POST: {type(exc).__name__}")
        result.fail("http.unknown", f"POST could not be checked ({type(exc).__name__})")
        return
    result.facts["post_chain"] = [f"{code} {where}" for code, _, where in hops]
    if https is None:
        result.fail(
            "http.no-https-redirect", f"POST to http:// is answered {hops[-1][0]} without reaching https://"
        )
        return
    changed = next((code for code, method, _ in hops if method == "POST" and code in _TO_GET), None)
    if changed is not None:
        result.fail("http.redirect-changes-method", f"POST is answered {changed}; clients retry it as GET")
    else:
        result.ok()


def _hsts(url: str, ctx: ssl.SSLContext, timeout: float, result: CheckResult) -> None:
    try:
        _, headers = _request(url, "GET", ctx, timeout)
    except _ERRORS as exc:
        result.cannot(f"HTTPS: {type(exc).__name__}")
        result.fail("http.unknown", f"{url} could not be fetched ({type(exc).__name__})")
        return
    value = headers.get("strict-transport-security")
    result.facts["hsts"] = value
    if value is None:
        result.fail("http.hsts-missing", "no Strict-Transport-Security header")
        return
    match = re.search(r"max-age\s*=\s*\"?(\d+)", value, re.IGNORECASE)
    if match is not None and int(match.group(1)) == 0:
        result.fail("http.hsts-missing", "Strict-Transport-Security max-age=0 turns HSTS off")
    elif match is None or int(match.group(1)) < _ONE_YEAR:
        result.fail("http.hsts-short", f"max-age {match.group(1) if match else 'missing'} is under one year")
    else:
        result.ok()
