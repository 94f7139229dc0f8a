"""PostgreSQL links, shared by the store, the audit witness and the settings: whether a kept
connection is still alive, and connection strings without their secrets.

Nothing here imports psycopg (an optional extra): the settings mask URLs without it.
"""

from __future__ import annotations

import re
import select
from typing import Any
from urllib.parse import unquote

__all__ = ["alive", "masked", "problem", "scrubbed"]

# Connection parameters whose values are secrets (libpq: the login's and the client key's).
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
_MASK = "***"
# One `key = value` pair of a libpq conninfo string; a value is a bare word or single-quoted
# with backslash escapes.
_CONNINFO_PAIR = re.compile(r"(\w+)(\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)")
# Parameters libpq takes only from a closed list; it checks them when connecting, not parsing.
_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "sslcertmode": ("disable", "allow", "require"),
    "sslnegotiation": ("postgres", "direct"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
}
_NUMBERS = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
            "tcp_user_timeout")  # fmt: skip
_QUOTED = re.compile(r"""(["'])(.*?)\1""")
# A URL starts with its scheme (RFC 3986); `://` later on is part of a conninfo value.
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def alive(conn: Any) -> bool:
    """Whether a kept, idle psycopg connection can still be used.

    A server that restarts or shuts down ends every session with a FATAL message and closes the
    socket, so a cut connection's socket is readable while a usable idle one has nothing to read.
    One poll that does not wait tells them apart without a round trip; a connection cut without
    a word (a network failure) passes, and fails at its next query instead.
    """
    if conn.closed:
        return False
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError, AttributeError):
        return False


def masked(link: str) -> str:
    """``link`` (a ``postgresql://`` URL or a libpq ``key=value`` string) with every password
    masked: the URL's ``user:PASSWORD@``, and ``password`` or ``sslpassword`` given as query
    parameters or conninfo keywords. For messages, logs and ``config show``.

    Masks too much rather than too little: a password holding ``@``, ``/`` or ``?`` unencoded
    (which libpq itself would misread) is masked up to the last ``@``.
    """
    if not _URL_SCHEME.match(link):
        return _CONNINFO_PAIR.sub(_mask_pair, link)
    scheme, rest = link.split("://", 1)
    colon, first_at = rest.find(":"), rest.find("@")
    if 0 <= colon < first_at:
        rest = rest[: colon + 1] + _MASK + rest[rest.rfind("@") :]
    head, question, query = rest.partition("?")
    if question:
        query = "&".join(_mask_query_pair(pair) for pair in query.split("&"))
    return f"{scheme}://{head}{question}{query}"


def _mask_query_pair(pair: str) -> str:
    key, eq, _ = pair.partition("=")
    if eq and unquote(key).strip().lower() in _SECRET_PARAMS:
        return f"{key}={_MASK}"
    return pair


def _mask_pair(found: re.Match[str]) -> str:
    key, eq, value = found.groups()
    if key.lower() in _SECRET_PARAMS and value:
        return f"{key}{eq}{_MASK}"
    return found.group(0)


def problem(link: str) -> str | None:
    """What is wrong with a PostgreSQL URL or conninfo string, as the end of one sentence that
    holds no secret of it; None when libpq would take it.

    libpq's parser (through psycopg) finds malformed URLs and unknown parameters; the values it
    only checks when connecting (``sslmode``, ports, timeouts) are checked here, so a bad one is
    reported at start-up, naming its setting, rather than as a connection failure.
    """
    try:
        import psycopg.conninfo  # noqa: PLC0415 - optional extra; without it the store says so
    except ImportError:
        return None
    try:
        params = psycopg.conninfo.conninfo_to_dict(link)
    except psycopg.Error as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = lines[0] if lines else type(exc).__name__
        return f"is not a valid PostgreSQL URL: {scrubbed(reason, link)}"
    for name, allowed in _CHOICES.items():
        value = params.get(name)
        if value is not None and value not in allowed:
            return f"has {name}={scrubbed(str(value), link)}, which is not one of {', '.join(allowed)}"
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            return "has a port that is not a number from 1 to 65535"
    for name in _NUMBERS:
        value = params.get(name)
        if value is not None and not re.fullmatch(r"-?\d+", str(value).strip()):
            return f"has {name}={scrubbed(str(value), link)}, which is not a whole number"
    return None


def scrubbed(text: str, link: str) -> str:
    """``text`` (an error message about ``link``) without any secret of ``link``: each password
    replaced, and every quoted fragment that is part of one (libpq quotes what it could not
    read, which may be a piece of a password it cut in the wrong place)."""
    secrets = _secrets(link)
    if not secrets:
        return text

    def quoted(found: re.Match[str]) -> str:
        mark, inner = found.groups()
        if inner and any(inner in secret or secret in inner for secret in secrets):
            return f"{mark}{_MASK}{mark}"
        return found.group(0)

    text = _QUOTED.sub(quoted, text)
    for secret in sorted(secrets, key=len, reverse=True):
        # A very short one would match inside ordinary words; quoted, it was masked above.
        if len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return text


def _secrets(link: str) -> set[str]:
    """Every password in ``link``, as written and percent-decoded, and its pieces between
    URL delimiters (where libpq may cut a password holding an unencoded ``@``, ``/`` or ``:``)."""
    found: list[str] = []
    if "://" in link:
        rest = link.split("://", 1)[1]
        colon, first_at = rest.find(":"), rest.find("@")
        if 0 <= colon < first_at:
            found.append(rest[colon + 1 : rest.rfind("@")])
            found.append(rest[colon + 1 : first_at])
        query = rest.partition("?")[2]
        for pair in query.split("&"):
            key, eq, value = pair.partition("=")
            if eq and unquote(key).strip().lower() in _SECRET_PARAMS:
                found.append(value)
    else:
        for key, _, value in _CONNINFO_PAIR.findall(link):
            if key.lower() in _SECRET_PARAMS:
                found.append(value)
                found.append(value.strip("'").replace("\\'", "'").replace("\\\\", "\\"))
    whole = {variant for secret in found if secret for variant in (secret, unquote(secret)) if variant}
    pieces = {piece for secret in whole for piece in re.split(r"[@/:?&=]", secret) if len(piece) >= 2}
    return whole | pieces
