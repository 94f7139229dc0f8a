"""`scan http`: does plain HTTP send callers to HTTPS, permanently, keeping POST; and HSTS.

Redirect codes (RFC 9110): 301 and 308 are permanent; 302 and 307 are not. For API endpoints
that take POST (webhooks, Marketing Cloud's token calls), only 307 and 308 keep the method and
body: a 301/302/303 turns the retried POST into a GET.
"""

from __future__ import annotations

import http.client
import re
import ssl
from urllib.parse import urljoin, urlsplit

from .findings import CheckResult

__all__ = ["scan_http"]

_MAX_HOPS = 5
_ONE_YEAR = 31_536_000


def _request(url: str, method: str, ca_file: str | None, timeout: float) -> tuple[int, dict[str, str]]:
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname or "",
            parts.port or 443,
            timeout=timeout,
            context=ssl.create_default_context(cafile=ca_file),
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


def scan_http(
    url: str, *, ca_file: str | None = None, timeout: float = 10.0, post: bool = True
) -> CheckResult:
    """Check the redirect of the http:// form of ``url`` and HSTS on its https:// form."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    plain = parts._replace(scheme="http").geturl()
    host = parts.hostname or ""
    result = CheckResult("http", plain)
    chain: list[str] = []
    current = plain
    try:
        for _ in range(_MAX_HOPS):
            status, headers = _request(current, "GET", ca_file, timeout)
            location = headers.get("location")
            chain.append(f"{status} {current}")
            if status not in (301, 302, 303, 307, 308) or not location:
                break
            current = urljoin(current, location)
            if current.startswith("https://"):
                break
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        result.cannot(f"plain HTTP: {type(exc).__name__}")
        result.fail("http.unknown", f"plain HTTP could not be checked ({type(exc).__name__})")
        return result
    result.facts["chain"] = chain
    first_code = int(chain[0].split(" ", 1)[0])
    if not current.startswith("https://"):
        result.fail("http.no-https-redirect", f"http:// answers {first_code} without reaching https://")
        return result
    if urlsplit(current).hostname != host:
        result.facts["redirected_host"] = urlsplit(current).hostname
    if first_code in (302, 303, 307):
        result.fail("http.redirect-not-permanent", f"first redirect is {first_code}")
    else:
        result.ok()
    if post:
        try:
            post_code, _ = _request(plain, "POST", ca_file, timeout)
        except (OSError, http.client.HTTPException):
            post_code = first_code
        if post_code in (301, 302, 303):
            result.fail(
                "http.redirect-changes-method", f"POST is answered {post_code}; clients retry it as GET"
            )
        else:
            result.ok()
    _hsts(current, ca_file, timeout, result)
    return result


def _hsts(url: str, ca_file: str | None, timeout: float, result: CheckResult) -> None:
    try:
        _, headers = _request(url, "GET", ca_file, timeout)
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        result.cannot(f"HTTPS: {type(exc).__name__}")
        result.fail("http.unknown", f"{url} could not be fetched ({type(exc).__name__})")
        return
    value = headers.get("strict-transport-security")
    result.facts["hsts"] = value
    if value is None:
        result.fail("http.hsts-missing", "no Strict-Transport-Security header")
        return
    match = re.search(r"max-age\s*=\s*\"?(\d+)", value, re.IGNORECASE)
    if match is None or int(match.group(1)) < _ONE_YEAR:
        result.fail("http.hsts-short", f"max-age {match.group(1) if match else 'missing'} is under one year")
    else:
        result.ok()
