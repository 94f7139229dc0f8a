"""Where ssh-audit is installed (the dev extra), `scan ssh` flags the same algorithms on every test
server: modern and legacy sshd, asyncssh with RSA key exchange and a 1024-bit key, asyncssh with
RSA key exchange alone.

ssh-audit judges more than the notices ask; its notes on these grounds are not sendvault rules
and are left out of the comparison: NIST curves ("suspected as being backdoored"), post-quantum
protection, encrypt-and-MAC mode, weak random number generators (ECDSA/DSA), and the 112-bit
strength of a 2048-bit Diffie-Hellman group (diffie-hellman-group14-sha256, which OpenSSH enables
by default; the issue's weak key exchanges are the SHA-1 and 1024-bit ones, and RSA key exchange
is flagged whatever its size). Everything else it flags as
fail or warn must be what sendvault flags, per algorithm and per category (kex, host key,
cipher, MAC), and a host key it fails for size must be ``ssh.small-host-key`` at high severity.
ssh-audit cannot read a host key through RSA key exchange (it reports no size then), so key
sizes are compared only where it gives one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest
from tests.scan.ssh_servers import Sshd

from sendvault.scan import Severity
from sendvault.scan.findings import CheckResult
from sendvault.scan.ssh import scan_ssh

SSH_AUDIT = shutil.which("ssh-audit")
_NOT_OURS = (
    "suspected as being backdoored",
    "post-quantum",
    "encrypt-and-MAC",
    "weak random number generator",
)
_RULES = {
    "kex": ("ssh.rsa-key-exchange", "ssh.weak-kex"),
    "enc": ("ssh.weak-cipher",),
    "mac": ("ssh.weak-mac",),
}


def _theirs(doc: dict[str, Any], category: str) -> set[str]:
    flagged = set()
    for entry in doc.get(category, []):
        ignored = _NOT_OURS
        if category == "kex" and entry["algorithm"].startswith("diffie-hellman-"):
            ignored += ("2048-bit modulus only provides 112-bits",)
        notes = [n for level in ("fail", "warn") for n in entry.get("notes", {}).get(level, [])]
        if any(not any(i in n for i in ignored) for n in notes):
            flagged.add(entry["algorithm"])
    return flagged


def _named(result: CheckResult, rules: tuple[str, ...]) -> set[str]:
    return {
        name for f in result.findings if f.rule in rules for name in f.detail.split(": ", 1)[1].split(", ")
    }


def _ours_keys(result: CheckResult, sized: set[str]) -> set[str]:
    keys: dict[str, Any] = result.facts["host_keys"]  # type: ignore[assignment]
    small = {
        alg for alg, key in keys.items()
        if alg in sized and key["type"].startswith(("ssh-rsa", "ssh-dss")) and key["bits"] < 3072
    }  # fmt: skip
    return small | _named(result, ("ssh.sha1-host-signature",))


@pytest.mark.skipif(SSH_AUDIT is None, reason="ssh-audit is not installed (pip install -e '.[dev]')")
@pytest.mark.parametrize("server", ["sshd_modern", "sshd_legacy", "asyncssh_legacy", "asyncssh_rsa_kex_only"])
def test_verdicts_match_ssh_audit(server: str, request: pytest.FixtureRequest) -> None:
    fixture = request.getfixturevalue(server)
    port = fixture.port if isinstance(fixture, Sshd) else int(fixture)
    ours = scan_ssh("127.0.0.1", port)
    assert SSH_AUDIT is not None
    run = subprocess.run([SSH_AUDIT, "-j", "--skip-rate-test", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    theirs = json.loads(run.stdout)
    for category, rules in _RULES.items():
        assert _named(ours, rules) == _theirs(theirs, category), category
    sized = {k["algorithm"] for k in theirs.get("key", []) if k.get("keysize")}
    assert _ours_keys(ours, sized) == _theirs(theirs, "key")
    small_fail = any(
        "using small" in note for k in theirs.get("key", []) for note in k.get("notes", {}).get("fail", [])
    )
    graded = [f.severity for f in ours.findings if f.rule == "ssh.small-host-key"]
    assert (graded == [Severity.HIGH]) == small_fail
