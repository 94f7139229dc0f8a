"""`scan ssh` flags the same algorithms as ssh-audit (in the test extra: these tests fail, never
skip, when it is missing) on every test server: modern and legacy sshd, asyncssh with RSA key
exchange and a 1024-bit key, asyncssh with RSA key exchange alone, asyncssh whose group exchange
hands out a 1024-bit group; and judges every algorithm of ssh-audit's database alike.

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
import subprocess
import sys
from typing import Any

import pytest
from tests.scan.ssh_servers import Sshd

from sendvault.scan import Severity
from sendvault.scan.findings import CheckResult
from sendvault.scan.ssh import scan_ssh

# Run as a module of this interpreter: the test extra installs it beside pytest, PATH or not.
SSH_AUDIT = [sys.executable, "-m", "ssh_audit"]
_NOT_OURS = (
    "suspected as being backdoored",
    "post-quantum",
    "encrypt-and-MAC",
    "weak random number generator",
)
_RULES = {
    "kex": ("ssh.rsa-key-exchange", "ssh.weak-kex"),
    "enc": ("ssh.weak-cipher", "ssh.terrapin"),
    "mac": ("ssh.weak-mac", "ssh.terrapin"),
}
_OFFERED = {"kex": "kex", "enc": "ciphers", "mac": "macs"}


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


def _named(result: CheckResult, rules: tuple[str, ...], category: str | None = None) -> set[str]:
    """The algorithms ``rules`` name (of ``category`` only: ssh.terrapin names ciphers and MACs)."""
    names = {
        name for f in result.findings if f.rule in rules for name in f.detail.split(": ", 1)[1].split(", ")
    }
    return names if category is None else names & set(result.facts[_OFFERED[category]])  # type: ignore[arg-type]


def _ours_keys(result: CheckResult, sized: set[str]) -> set[str]:
    keys: dict[str, Any] = result.facts["host_keys"]  # type: ignore[assignment]
    small = {
        alg for alg, key in keys.items()
        if alg in sized and key["type"].startswith(("ssh-rsa", "ssh-dss")) and key["bits"] < 3072
    }  # fmt: skip
    return small | _named(result, ("ssh.sha1-host-signature",))


@pytest.mark.parametrize(
    "server", ["sshd_modern", "sshd_legacy", "asyncssh_legacy", "asyncssh_rsa_kex_only", "asyncssh_gex_1024"]
)
def test_verdicts_match_ssh_audit(server: str, request: pytest.FixtureRequest) -> None:
    fixture = request.getfixturevalue(server)
    port = fixture.port if isinstance(fixture, Sshd) else int(fixture)
    ours = scan_ssh("127.0.0.1", port)
    run = subprocess.run([*SSH_AUDIT, "-j", "--skip-rate-test", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    theirs = json.loads(run.stdout)
    for category, rules in _RULES.items():
        assert _named(ours, rules, category) == _theirs(theirs, category), category
    sized = {k["algorithm"] for k in theirs.get("key", []) if k.get("keysize")}
    assert _ours_keys(ours, sized) == _theirs(theirs, "key")
    small_fail = any(
        "using small" in note for k in theirs.get("key", []) for note in k.get("notes", {}).get("fail", [])
    )
    graded = [f.severity for f in ours.findings if f.rule == "ssh.small-host-key"]
    assert (graded == [Severity.HIGH]) == small_fail


# Where the two tools disagree by design, each with its reason; everything else ssh-audit's
# database knows must be judged alike, name by name.
_WE_ALSO_FLAG = {
    # The rules: RSA key exchange whatever its size; every -96 truncated MAC.
    ("kex", "rsa2048-sha256"), ("mac", "hmac-sha2-256-96"), ("mac", "hmac-sha2-512-96"),
    ("mac", "umac-96@openssh.com"),
    # 192- and 224-bit curves: ssh-audit calls their OID and host-key forms "small ECC modulus",
    # not these two names.
    ("kex", "ecdh-sha2-nistp192"), ("kex", "ecdh-sha2-nistp224"),
}  # fmt: skip
_WE_DO_NOT_FLAG = {
    # A 224-bit HMAC-SHA2 tag: ssh-audit's "small 64-bit tag size" note does not fit it.
    ("mac", "hmac-sha2-224"),
    # OCB is an AEAD mode; ssh-audit's "weak cipher mode" note does not fit it.
    ("enc", "aes128-ocb@libassh.org"),
    # No host key at all (GSS-API key exchange authenticates the server), and ssh.com's bare
    # RIPEMD-160 MAC: neither is a ground of the notices.
    ("key", "null"), ("mac", "ripemd160"),
    # GSS/ECDH names hashed from curve OIDs that we cannot map to a curve (ours are MD5 of the DER OID).
    ("kex", "ecdh-sha2-qCbG5Cn/jjsZ7nBeR7EnOA=="), ("kex", "ecdh-sha2-VqBg4QRPjxx1EXZdV0GdWQ=="),
    ("kex", "ecdh-sha2-zD/b3hu/71952ArpUG4OjQ=="),
}  # fmt: skip
# ssh-audit grounds that are not sendvault rules (see docs/scan.md), beside _NOT_OURS.
_NOT_JUDGED = (
    "unproven algorithm", "unknown algorithm", "experimental algorithm", "developed in secret",
    "deprecated Serpent", "deprecated RIPEMD", "non-standardized Rijndael",
    "SHA-1 hash algorithm is considered", "112-bits of symmetric strength", "does not provide protection",
)  # fmt: skip


def _db() -> dict[str, dict[str, list[list[str]]]]:
    from ssh_audit.ssh2_kexdb import SSH2_KexDB

    get = getattr(SSH2_KexDB, "get_db", None)
    return get() if get is not None else SSH2_KexDB.ALGORITHMS  # type: ignore[no-any-return]


def _flagged_by_ssh_audit(entry: list[list[str]]) -> bool:
    notes = [n for level in entry[1:3] for n in level]
    return any(not any(g in n for g in (*_NOT_OURS, *_NOT_JUDGED)) for n in notes)


def _flagged_by_us(category: str, name: str) -> bool:
    from sendvault.scan import ssh

    if category == "kex":
        return name in ssh._RSA_KEX or ssh._weak_kex(name)
    if category == "enc":
        return ssh._weak_cipher(name)
    if category == "mac":
        return ssh._weak_mac(name)
    # Host keys: SHA-1 signatures by name; DSA keys are 1024 bits in SSH and small curves are small
    # by name, both judged by ssh.small-host-key once the key is read.
    small_by_name = any(w in ssh._parts(name) for w in ("dss", "dsa")) or ssh._curve(name) is not None
    return name in ssh._SHA1_SIGNATURES or small_by_name


def test_every_algorithm_ssh_audit_knows_is_judged_alike() -> None:
    db = _db()
    disagree = []
    for category in ("kex", "key", "enc", "mac"):
        for name, entry in db[category].items():
            theirs, ours = _flagged_by_ssh_audit(entry), _flagged_by_us(category, name)
            if theirs == ours or (category, name) in (_WE_ALSO_FLAG if ours else _WE_DO_NOT_FLAG):
                continue
            disagree.append((category, name, "ours" if ours else "theirs", entry[1:3]))
    assert disagree == []
    # The allowances are real disagreements, not stale entries.
    for category, name in _WE_ALSO_FLAG | _WE_DO_NOT_FLAG:
        assert name in db[category], name


_CHACHA = "chacha20-poly1305@openssh.com"
_ETM = "hmac-sha2-256-etm@openssh.com"


@pytest.mark.parametrize(
    ("kex", "ciphers", "macs", "open_to"),
    [
        (("curve25519-sha256",), (_CHACHA, "aes128-ctr"), ("hmac-sha2-256",), {_CHACHA}),
        (("curve25519-sha256",), ("aes128-cbc", "aes256-ctr"), (_ETM, "hmac-sha2-256"), {"aes128-cbc", _ETM}),
        (("curve25519-sha256",), ("aes128-cbc", "aes256-ctr"), ("hmac-sha2-256",), set()),
        (("curve25519-sha256", "kex-strict-s-v00@openssh.com"), (_CHACHA, "aes128-cbc"), (_ETM,), set()),
    ],
    ids=["chacha", "cbc-etm", "cbc-without-etm", "strict-kex"],
)  # fmt: skip
def test_terrapin_is_judged_as_ssh_audit_judges_it(
    kex: tuple[str, ...], ciphers: tuple[str, ...], macs: tuple[str, ...], open_to: set[str]
) -> None:
    # A server before OpenSSH 9.6 (no strict key exchange): ssh-audit warns on chacha20-poly1305,
    # and on CBC ciphers with -etm MACs, "vulnerable to the Terrapin attack (CVE-2023-48795)".
    from tests.scan.test_scan_ssh_hostile import IDENT, _names, _packet, _sends, scripted

    lists = [kex, ("ssh-ed25519",), ciphers, ciphers, macs, macs, ("none",), ("none",), (), ()]
    kexinit = _packet(b"\x14" + bytes(16) + b"".join(_names(*n) for n in lists) + b"\x00" + bytes(4))
    with scripted(_sends(IDENT, kexinit, hold=1.0)) as port:
        ours = scan_ssh("127.0.0.1", port, timeout=2)
        run = subprocess.run([*SSH_AUDIT, "-j", "--skip-rate-test", "-t", "3", f"127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    theirs = json.loads(run.stdout)
    terrapin = {
        entry["algorithm"]
        for category in ("enc", "mac")
        for entry in theirs.get(category, [])
        if any("Terrapin" in n for n in entry.get("notes", {}).get("warn", []))
    }
    assert terrapin == open_to
    assert _named(ours, ("ssh.terrapin",)) == open_to
    for category, rules in _RULES.items():
        assert _named(ours, rules, category) == _theirs(theirs, category), category
