"""Rules, severities and per-target results shared by every check.

Rule ids are stable and documented in docs/rules.md; a test keeps that file and this registry
in step. Each check returns a :class:`CheckResult` per target: findings (rules broken), the
number of checks passed, and ``unknown`` entries for what could not be checked (never a pass).
"""

from __future__ import annotations

import enum

__all__ = ["RULES", "CheckResult", "Finding", "Rule", "Severity"]


class Severity(enum.IntEnum):
    """Ordered severities; `--fail-on` compares with them."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """Lower-case name."""
        return self.name.lower()


# Records by hand, not dataclasses: the dataclasses import (inspect with it) was a sixth of a
# `scan ssh` process, which is mostly start-up, and typing's a twentieth. They keep what the
# dataclasses gave: equality and repr over their fields; Rule and Finding are frozen and hashable.
class _Record:  # noqa: PLW1641 - unhashable, as a dataclass with eq is; _Frozen hashes
    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Record)
        return self._values() == other._values()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._fields)})"

    def __reduce__(self) -> tuple[type[_Record], tuple[object, ...]]:
        # copy, deepcopy and pickle rebuild a record through its constructor (fields in order).
        return type(self), self._values()


class _Frozen(_Record):
    __slots__ = ()

    def _init(self, *values: object) -> None:
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be set")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be deleted")

    def __hash__(self) -> int:
        return hash(self._values())


class Rule(_Frozen):
    """A rule a finding can break, and what to do about it."""

    __slots__ = ("fix", "id", "notice", "severity", "title")
    _fields = __match_args__ = ("id", "severity", "title", "notice", "fix")
    id: str
    severity: Severity
    title: str
    notice: str
    fix: str

    def __init__(self, id: str, severity: Severity, title: str, notice: str, fix: str) -> None:  # noqa: A002
        self._init(id, severity, title, notice, fix)


_H, _M, _L, _I = Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO

RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        # -- TLS endpoints
        Rule("tls.legacy-protocol", _H, "TLS 1.0 or 1.1 accepted", "Constant Contact (002)",
             "Set the minimum protocol to TLS 1.2 (nginx `ssl_protocols TLSv1.2 TLSv1.3`)."),
        Rule("tls.rsa-key-exchange", _H, "RSA key exchange accepted (no forward secrecy)", "Contactlab (001)",
             "Offer only ECDHE (and TLS 1.3) suites; remove every `AES*-SHA*`/`RSA` kx suite."),
        Rule("tls.weak-cipher", _M, "Non-AEAD (CBC, RC4, 3DES), NULL or anonymous cipher accepted",
             "001, 002", "Offer AES-GCM and ChaCha20-Poly1305 suites only."),
        Rule("tls.cert-expired", _H, "A certificate of the chain is expired or not yet valid", "all",
             "Renew the named certificate; for an intermediate, install the CA's current one."),
        Rule("tls.cert-expiring", _L, "A certificate of the chain expires within 30 days", "all",
             "Renew it (automate renewal, e.g. ACME)."),
        Rule("tls.cert-hostname", _H, "Certificate does not name the host", "all",
             "Issue a certificate whose subjectAltName lists the host clients use."),
        Rule("tls.cert-untrusted", _H, "Certificate chain not trusted", "all",
             "Serve the full chain from a trusted CA (leaf first, then intermediates)."),
        Rule("tls.weak-key", _M, "Certificate key too small (RSA/DSA < 2048, EC < 256 bits)", "all",
             "Issue a new certificate on an RSA 2048+ or ECDSA P-256+ key."),
        Rule("tls.unknown", _I, "A TLS check could not be made", "all",
             "Read the detail; rerun from a host that reaches the endpoint."),
        # -- HTTP redirects and HSTS
        Rule("http.no-https-redirect", _H, "Plain HTTP is served, not redirected to HTTPS", "Maropost (000)",
             "Answer every http:// request with a 308 to the https:// URL."),
        Rule("http.redirect-not-permanent", _M, "HTTP redirects with 302/303/307, not 301/308", "000",
             "Redirect with 308 (or 301)."),
        Rule("http.redirect-changes-method", _M, "Redirect code turns POST into GET (not 307/308)", "000",
             "Redirect with 308, which keeps the method and body."),
        Rule("http.redirect-other-host", _L, "HTTP redirects to HTTPS on another host", "000",
             "Redirect to https:// on the same host first, then elsewhere."),
        Rule("http.hsts-missing", _M, "No Strict-Transport-Security on HTTPS (or max-age=0)", "000, 003",
             "Send `Strict-Transport-Security: max-age=31536000` on HTTPS answers."),
        Rule("http.hsts-short", _L, "HSTS max-age under one year", "000, 003",
             "Raise max-age to at least 31536000."),
        Rule("http.unknown", _I, "An HTTP check could not be made", "all",
             "Read the detail; rerun from a host that reaches the endpoint."),
        # -- pages and code
        Rule("content.mixed-blockable", _H, "http:// script, style, frame, object or form in a page",
             "Qualifio (003)", "Load it over https:// (host it yourself if its host has no HTTPS)."),
        Rule("content.mixed-upgradable", _M, "http:// image, audio or video in a page", "Qualifio (003)",
             "Write the URL as https://."),
        Rule("content.unknown", _I, "A page or file could not be read", "003",
             "Check the path or URL and its permissions."),
        Rule("code.insecure-url", _M, "http:// endpoint in source or configuration", "000, 004",
             "Use the https:// endpoint."),
        # -- databases
        Rule("db.tls-not-required", _H, "Database accepts logins without TLS", "Maropost (000)",
             "Require TLS (MySQL `require_secure_transport=ON`; PostgreSQL `hostssl` lines only)."),
        Rule("db.tls-unavailable", _H, "Database does not offer TLS", "000",
             "Configure a server certificate and key and turn TLS on."),
        Rule("db.tls-files-rejected", _H, "Given CA, certificate or key do not complete TLS", "000",
             "Check that the CA issued the server certificate and that the client pair matches."),
        Rule("db.unknown", _I, "A database check could not be made", "000",
             "Read the detail; give --user for the login probe."),
        # -- SSH/SFTP endpoints
        Rule("ssh.rsa-key-exchange", _H, "RSA key exchange offered (rsa1024-sha1, rsa2048-sha256)",
             "Contactlab (001)", "Remove rsa1024-sha1 and rsa2048-sha256 from the server's key exchanges."),
        Rule("ssh.weak-kex", _H, "SHA-1 or small-group key exchange offered (group1, group14-sha1, gex-sha1; "
             "gex handing out < 2048-bit groups; curves < 256 bits)",
             "001", "OpenSSH: `KexAlgorithms -diffie-hellman-group1-sha1,diffie-hellman-group14-sha1,"
             "diffie-hellman-group-exchange-sha1`; other servers: no moduli under 2048 bits."),
        Rule("ssh.sha1-host-signature", _M, "SHA-1 host-key signatures offered (ssh-rsa, ssh-dss)", "001",
             "OpenSSH: `HostKeyAlgorithms -ssh-rsa,ssh-dss`; rsa-sha2-256/512 keep the same RSA key."),
        Rule("ssh.small-host-key", _M,
             "RSA/DSA host key under 3072 bits (high under 2048; EC under 256: high)", "001",
             "`ssh-keygen -t ed25519` (or `-t rsa -b 4096`) for a new host key; remove the small one."),
        Rule("ssh.weak-cipher", _M, "CBC (or ECB/CFB/OFB), 3DES, arcfour, blowfish or cast128 cipher offered",
             "001",
             "OpenSSH: `Ciphers -*-cbc`; keep chacha20-poly1305, AES-GCM and AES-CTR."),
        Rule("ssh.weak-mac", _M, "MD5 or SHA-1 MAC, or a tag of 96 bits or less (-96, umac-64) offered",
             "001",
             "OpenSSH: `MACs hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,"
             "umac-128-etm@openssh.com`."),
        Rule("ssh.terrapin", _M, "Terrapin (CVE-2023-48795): chacha20-poly1305, or CBC with an -etm MAC, "
             "offered without strict key exchange", "001",
             "Update the SSH server (OpenSSH 9.6+, or a distribution build offering "
             "kex-strict-s-v00@openssh.com); until then remove chacha20-poly1305@openssh.com and CBC "
             "ciphers."),
        Rule("ssh.old-software", _H, "SSH server with known-broken defaults (OpenSSH < 7.4, SSH 1)", "001",
             "Upgrade the SSH server to your distribution's current OpenSSH."),
        Rule("ssh.unknown", _I, "An SSH check could not be made", "001",
             "Read the detail; check that the port speaks SSH and is reachable from here."),
        # -- this host's clients
        Rule("client.cannot-connect", _H, "A client cannot complete a TLS 1.2+ ECDHE AEAD handshake",
             "001, 002", "Upgrade the client's TLS library (OpenSSL 1.0.1+, Java 8+, .NET 4.6+)."),
        # -- a client under test (scan listen)
        Rule("client.no-tls12", _H, "Client offers no TLS 1.2 (at most 1.1, or 1.3 alone)",
             "Constant Contact (002)",
             "Enable TLS 1.2 in the client's stack (Java 8+, .NET 4.6+ with SchUseStrongCrypto)."),
        Rule("client.offers-legacy-protocol", _M, "Client offers TLS 1.0/1.1 (or SSL)", "002",
             "Set the client's minimum protocol to TLS 1.2."),
        Rule("client.offers-rsa-key-exchange", _M, "Client offers RSA key exchange (high when nothing else)",
             "Contactlab (001)", "Enable ECDHE suites in the client; remove `TLS_RSA_*` suites."),
        Rule("client.redirect-not-followed", _H, "Client does not follow a 308 to HTTPS", "Maropost (000)",
             "Call the https:// URL directly, or let the HTTP library follow redirects."),
        Rule("client.redirect-changes-method", _H, "Client changes the method or drops the body on a 308",
             "000", "Call the https:// URL directly; fix or upgrade the HTTP library (RFC 9110 §15.4.9)."),
        Rule("client.unknown", _I, "What a client did could not be told", "all",
             "Read the detail; check that the client trusts the listener's CA."),
    )
}  # fmt: skip


class Finding(_Frozen):
    """One broken rule on one target, with what was seen."""

    __slots__ = ("detail", "file", "level", "line", "rule")
    _fields = __match_args__ = ("rule", "detail", "file", "line", "level")
    rule: str
    detail: str
    # Where in a file the finding is (content and code checks), for SARIF and editors.
    file: str | None
    line: int | None
    # A rule whose severity depends on what was seen (ssh.small-host-key: high under 2048 bits).
    level: Severity | None

    def __init__(
        self,
        rule: str,
        detail: str,
        file: str | None = None,
        line: int | None = None,
        level: Severity | None = None,
    ) -> None:
        self._init(rule, detail, file, line, level)

    @property
    def severity(self) -> Severity:
        """This finding's severity: the rule's, unless the finding was graded."""
        return self.level if self.level is not None else RULES[self.rule].severity


class CheckResult(_Record):
    """The outcome of one check on one target."""

    __slots__ = ("check", "facts", "findings", "passed", "target", "unknown")
    _fields = __match_args__ = ("check", "target", "findings", "passed", "unknown", "facts")

    def __init__(  # noqa: PLR0917 - the dataclass's positional order, kept for callers
        self,
        check: str,
        target: str,
        findings: list[Finding] | None = None,
        passed: int = 0,
        unknown: list[str] | None = None,
        facts: dict[str, object] | None = None,
    ) -> None:
        self.check = check
        self.target = target
        self.findings: list[Finding] = [] if findings is None else findings
        self.passed = passed
        self.unknown: list[str] = [] if unknown is None else unknown
        self.facts: dict[str, object] = {} if facts is None else facts

    def fail(
        self,
        rule: str,
        detail: str,
        *,
        file: str | None = None,
        line: int | None = None,
        severity: Severity | None = None,
    ) -> None:
        """Record a finding (with its file and line, where it has one; ``severity`` grades it
        above or below its rule's)."""
        if rule not in RULES:
            raise KeyError(rule)
        self.findings.append(Finding(rule, detail, file, line, severity))

    def ok(self, count: int = 1) -> None:
        """Count passed checks."""
        self.passed += count

    def cannot(self, what: str) -> None:
        """Record a check that could not be made."""
        self.unknown.append(what)


def rules_reference() -> str:
    """docs/rules.md: every rule id with its severity, meaning and the notice it answers."""
    lines = [
        "# Scanner rules",
        "",
        "Generated by `python -m sendvault.scan`; a test fails when this file is stale.",
        "Rule ids are stable. `--fail-on` (default `medium`) sets the severity that makes `sendvault scan`",
        "exit 1; a check that could not be made gives a `*.unknown` finding and exit 2 when nothing",
        "failed, never a pass. Notices: 000 Maropost, 001 Contactlab, 002 Constant Contact, 003",
        "Qualifio, 004 Salesforce Marketing Cloud.",
        "",
        "| rule | severity | meaning | notice | fix |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| `{r.id}` | {r.severity.label} | {r.title} | {r.notice} | {r.fix} |" for r in RULES.values()]
    return "\n".join(lines) + "\n"
