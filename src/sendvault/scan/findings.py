"""Rules, severities and per-target results shared by every check.

Rule ids are stable and documented in docs/rules.md; a test keeps that file and this registry
in step. Each check returns a :class:`CheckResult` per target: findings (rules broken), the
number of checks passed, and ``unknown`` entries for what could not be checked (never a pass).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule a finding can break."""

    id: str
    severity: Severity
    title: str
    notice: str


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule("tls.legacy-protocol", Severity.HIGH, "TLS 1.0 or 1.1 accepted", "Constant Contact (002)"),
        Rule(
            "tls.rsa-key-exchange",
            Severity.HIGH,
            "RSA key exchange accepted (no forward secrecy)",
            "Contactlab (001)",
        ),
        Rule(
            "tls.weak-cipher",
            Severity.MEDIUM,
            "Non-AEAD (CBC, RC4, 3DES), NULL or anonymous cipher accepted",
            "001, 002",
        ),
        Rule("tls.cert-expired", Severity.HIGH, "Certificate expired or not yet valid", "all"),
        Rule("tls.cert-expiring", Severity.LOW, "Certificate expires within 30 days", "all"),
        Rule("tls.cert-hostname", Severity.HIGH, "Certificate does not name the host", "all"),
        Rule("tls.cert-untrusted", Severity.HIGH, "Certificate chain not trusted", "all"),
        Rule("tls.unknown", Severity.INFO, "A TLS check could not be made", "all"),
        Rule(
            "http.no-https-redirect",
            Severity.HIGH,
            "Plain HTTP is served, not redirected to HTTPS",
            "Maropost (000)",
        ),
        Rule(
            "http.redirect-not-permanent",
            Severity.MEDIUM,
            "HTTP redirects with 302/303/307, not 301/308",
            "000",
        ),
        Rule(
            "http.redirect-changes-method",
            Severity.MEDIUM,
            "Redirect code turns POST into GET (not 307/308)",
            "000",
        ),
        Rule("http.redirect-other-host", Severity.LOW, "HTTP redirects to HTTPS on another host", "000"),
        Rule(
            "http.hsts-missing",
            Severity.MEDIUM,
            "No Strict-Transport-Security on HTTPS (or max-age=0)",
            "000, 003",
        ),
        Rule("http.hsts-short", Severity.LOW, "HSTS max-age under one year", "000, 003"),
        Rule("http.unknown", Severity.INFO, "An HTTP check could not be made", "all"),
        Rule(
            "content.mixed-blockable",
            Severity.HIGH,
            "http:// script, style, frame, object or form in a page",
            "Qualifio (003)",
        ),
        Rule(
            "content.mixed-upgradable",
            Severity.MEDIUM,
            "http:// image, audio or video in a page",
            "Qualifio (003)",
        ),
        Rule("content.unknown", Severity.INFO, "A page or file could not be read", "003"),
        Rule("code.insecure-url", Severity.MEDIUM, "http:// endpoint in source or configuration", "000, 004"),
        Rule("db.tls-not-required", Severity.HIGH, "Database accepts logins without TLS", "Maropost (000)"),
        Rule("db.tls-unavailable", Severity.HIGH, "Database does not offer TLS", "000"),
        Rule(
            "db.tls-files-rejected", Severity.HIGH, "Given CA, certificate or key do not complete TLS", "000"
        ),
        Rule("db.unknown", Severity.INFO, "A database check could not be made", "000"),
        Rule(
            "client.cannot-connect",
            Severity.HIGH,
            "A local client cannot complete a TLS 1.2+ ECDHE handshake",
            "001, 002",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken rule on one target, with what was seen."""

    rule: str
    detail: str
    # Where in a file the finding is (content and code checks), for SARIF and editors.
    file: str | None = None
    line: int | None = None

    @property
    def severity(self) -> Severity:
        """The rule's severity."""
        return RULES[self.rule].severity


@dataclass(slots=True)
class CheckResult:
    """The outcome of one check on one target."""

    check: str
    target: str
    findings: list[Finding] = field(default_factory=list)
    passed: int = 0
    unknown: list[str] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)

    def fail(self, rule: str, detail: str, *, file: str | None = None, line: int | None = None) -> None:
        """Record a finding (with its file and line, where it has one)."""
        if rule not in RULES:
            raise KeyError(rule)
        self.findings.append(Finding(rule, detail, file, line))

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
        "| rule | severity | meaning | notice |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{r.id}` | {r.severity.label} | {r.title} | {r.notice} |" for r in RULES.values()]
    return "\n".join(lines) + "\n"
