"""`scan ssh`: the algorithms an SSH/SFTP server offers, its host keys, and which are on their way out.

One connection reads the server's identification and KEXINIT, without logging in; then one
short key exchange per host-key family (RSA, ECDSA, Ed25519, DSA, certificates), all at once,
learns each host key and its size (``_sshwire``). The first of them reuses the first connection;
the others take spares opened beside it (``_sshdial``), or, past those, connections of their own.
A key whose algorithm name gives its size (Ed25519, ECDSA) gets no connection of its own unless
every fingerprint is asked for: each connection costs the server a process.
Each offered algorithm is judged by name; what could not be read is ``ssh.unknown``, never a
pass. Verdicts are compared with ssh-audit's in tests/scan/test_against_ssh_audit.py.
"""

from __future__ import annotations

import re
from functools import partial  # loaded with re

from ._sshdial import Arrivals, Dial, dial_scan, spawn
from ._sshwire import (
    EC_BITS,
    GEX_PROBE,
    Connection,
    HostKey,
    Kexinit,
    OldProtocol,
    ProtocolError,
    gex_group_bits,
    handshake,
    host_key,
    read_kexinit,
)
from .findings import CheckResult, Severity

# Annotations only: typing is not imported when `scan ssh` runs (its start-up is most of it).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    _T = TypeVar("_T")
    _Opened = Callable[[], tuple[Connection, Kexinit]]

__all__ = ["scan_ssh"]

_RSA_KEX = ("rsa1024-sha1", "rsa2048-sha256")
# Host-key algorithms whose signatures are SHA-1: ssh-rsa (RFC 4253) and ssh-dss, with their
# certificate (v00 and v01), X.509, OpenPGP and SPKI forms.
_SHA1_SIGNATURES = frozenset((
    "ssh-rsa", "ssh-dss", "ssh-rsa1", "ssh-rsa-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com",
    "ssh-rsa-cert-v00@openssh.com", "ssh-dss-cert-v00@openssh.com", "x509v3-sign-rsa", "x509v3-sign-dss",
    "x509v3-sign-rsa-sha1", "x509v3-sign-dss-sha1", "x509v3-ssh-rsa", "x509v3-ssh-dss",
    "pgp-sign-rsa", "pgp-sign-dss", "spki-sign-rsa", "spki-sign-dss",
))  # fmt: skip
# Words of a cipher name that make it weak: CBC and the other non-AEAD, non-CTR modes (ECB, CFB,
# OFB), 3DES, arcfour (RC4), blowfish, cast128, IDEA, SEED.
_WEAK_CIPHER_PARTS = ("cbc", "ecb", "cfb", "ofb", "3des", "arcfour", "blowfish", "cast128", "rc4", "idea",
                      "seed")  # fmt: skip
# Elliptic curves under 256 bits that SSH names (RFC 5656 §6.1, §10: the NIST name, or the ASCII
# OID, as key blobs give them in EC_BITS; RFC 4462 GSS names use base64(MD5(DER OID))): as weak
# as a 1024-bit group or RSA key.
_SMALL_CURVES = {name.decode(): bits for name, bits in EC_BITS.items() if bits < 256} | {
    "5pPrSUQtIaTjUSt5VZNBjg==": 192, "jgoqSBazFp5ZAsXHBDUjzA==": 224, "4MHB+NBt3AlaSRQ7MnB4cg==": 163,
    "laRRO8poZiktIVRPUB5kbw==": 163, "e2pZXC+E8zmcY23Syw7bkw==": 233, "DEodXT7RTLrIQsrXBi/Bcg==": 233,
}  # fmt: skip
_SHA1 = re.compile(r"sha1(?![0-9])", re.IGNORECASE)  # sha1, SHA1, not sha160...
# At most this many host-key handshakes per server: a KEXINIT naming a thousand host-key
# algorithms must not make the scan open a thousand connections.
_MAX_FAMILIES = 8
_GEX_PREFIX = "diffie-hellman-group-exchange-"
# Host-key algorithms whose name gives the key's type and size (RFC 5656, 8709, OpenSSH's FIDO
# keys): without --fingerprints, no connection is opened only to read one of them.
_NAMED_SIZES = {
    "ssh-ed25519": 256, "sk-ssh-ed25519@openssh.com": 256, "ssh-ed448": 456,
    "ecdsa-sha2-nistp256": 256, "ecdsa-sha2-nistp384": 384, "ecdsa-sha2-nistp521": 521,
    "sk-ecdsa-sha2-nistp256@openssh.com": 256,
}  # fmt: skip


def _parts(name: str) -> list[str]:
    # "hmac-sha1-96@example.com" -> ["hmac", "sha1", "96"]: the dash-separated words, suffix dropped.
    return name.partition("@")[0].split("-")


def _curve(name: str) -> int | None:
    """Bits of the small curve an ECDH/ECDSA name ends with (``ecdh-sha2-nistk163``), else None."""
    for prefix in ("ecdh-sha2-", "ecdsa-sha2-", "x509v3-ecdsa-sha2-", "sk-ecdsa-sha2-"):
        if name.startswith(prefix):
            return _SMALL_CURVES.get(name[len(prefix) :].partition("@")[0].removesuffix("-cert-v01"))
    return None


def _weak_kex(name: str) -> bool:
    """SHA-1 (group1-sha1, group14-sha1, group-exchange-sha1, gss-*-sha1-*, Go's kexAlgoDH1SHA1...),
    a 1024-bit group, or a curve under 256 bits."""
    return (
        bool(_SHA1.search(name))
        or name.startswith(("diffie-hellman-group1-", "gss-group1-"))
        or _curve(name) is not None
    )


def _weak_cipher(name: str) -> bool:
    """CBC, ECB, CFB, OFB, 3DES, arcfour (RC4), blowfish, cast128, IDEA, SEED, single DES, or none."""
    return any(p in name for p in _WEAK_CIPHER_PARTS) or name.startswith("des") or name == "none"


def _weak_mac(name: str) -> bool:
    """MD5 or SHA-1 (hmac-md5*, hmac-sha1*, ssh.com's md5/sha1), a tag of 96 bits or fewer (-96,
    -56, umac-64, umac-32, ssh.com's -8 bytes), a CBC-MAC over DES, 3DES or blowfish, or none."""
    parts = _parts(name)
    return (
        name.startswith(("hmac-md5", "hmac-sha1", "umac-64", "umac-32", "md5", "sha1"))
        or any(p in ("96", "56", "8", "des", "3des", "blowfish") for p in parts)
        or name == "none"
    )


def _openssh_version(software: str) -> tuple[int, int] | None:
    """(major, minor) of ``OpenSSH_7.2p2``; None for other software."""
    if not software.startswith("OpenSSH_"):
        return None
    major, _, rest = software[len("OpenSSH_") :].removeprefix("for_Windows_").partition(".")
    minor = rest[: len(rest) - len(rest.lstrip("0123456789"))]
    return (int(major), int(minor)) if major.isascii() and major.isdigit() and minor else None


def _family(algorithm: str) -> str:
    """The key an algorithm signs with: ssh-rsa, rsa-sha2-256/512 and ssh.com's ssh-rsa-sha*
    all use the one RSA key (and their certificate forms the one RSA certificate)."""
    cert = "-cert-v01@openssh.com" in algorithm
    if algorithm.startswith(("ssh-rsa", "rsa-sha2-")):
        return "rsa-cert" if cert else "rsa"
    return algorithm


def _key_type(algorithm: str) -> str:
    """The key type a host-key algorithm signs with: ssh-rsa for rsa-sha2-256/512 and ssh.com's
    ssh-rsa-sha*, the RSA certificate for theirs; the algorithm's own name for the others."""
    family = _family(algorithm)
    return {"rsa": "ssh-rsa", "rsa-cert": "ssh-rsa-cert-v01@openssh.com"}.get(family, family)


def scan_ssh(
    host: str,
    port: int = 22,
    *,
    timeout: float = 5.0,
    fingerprints: bool = False,
    dials: list[Dial] | None = None,
) -> CheckResult:
    """Scan one SSH endpoint; every judgement is a finding, a pass or unknown.

    A host key whose size its algorithm names (Ed25519, ECDSA on nistp256/384/521) is read only
    on a connection that is open anyway, unless ``fingerprints`` asks for every key's fingerprint.
    ``dials``: the scan's connections, opened beforehand (``_sshdial.dial_scan``).
    """
    result = CheckResult("ssh", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if dials is None:
        dials = dial_scan(host, port, timeout, fingerprints=fingerprints)
    arrivals = Arrivals()
    opening = [spawn(_opened, dial, then=partial(arrivals.arrived, n)) for n, dial in enumerate(dials)]
    # Loaded while the server forks and sends its KEXINIT, rather than after: fingerprints need them.
    import base64  # noqa: PLC0415, F401
    import hashlib  # noqa: PLC0415, F401

    try:
        conn, server, spares = _first(opening, arrivals)
    except BaseException as exc:
        if isinstance(exc, OldProtocol):
            result.facts["identification"] = exc.identification
            result.fail("ssh.old-software", f"{exc.identification}: SSH protocol 1 only")
            return result
        if isinstance(exc, TimeoutError):
            return _unknown(result, f"no SSH identification and KEXINIT within {timeout:g} s")
        if isinstance(exc, OSError):
            return _unknown(result, f"connection failed ({_why(exc)})")
        if isinstance(exc, (ProtocolError, ValueError)):
            return _unknown(result, f"no SSH identification and KEXINIT ({_why(exc)})")
        raise
    families = _families(server.lists["host_key"])
    if len(families) > _MAX_FAMILIES:
        result.cannot(f"{len(families)} host-key algorithms offered; the keys of "
                      f"{', '.join(families[_MAX_FAMILIES:])} were not read")  # fmt: skip
        result.fail("ssh.unknown", f"only the first {_MAX_FAMILIES} of {len(families)} host keys were read")
        families = families[:_MAX_FAMILIES]
    by_name = {a: _NAMED_SIZES[a] for a in families if a in _NAMED_SIZES}
    needed = [a for a in families if a not in by_name]
    # The keys whose size matters first: under a connection limit, the connection that serves
    # reads one of them. The first connection reads a key in any case (the first, if none is).
    read = needed + list(by_name) if fingerprints else needed or families[:1]
    gex = _gex_to_probe(server.lists)
    jobs, probe = _start(spares, (host, port, timeout), read, gex)
    keys: dict[str, HostKey | str] = {}
    with conn:
        if read:
            keys[read[0]] = _outcome(lambda: handshake(conn, server.lists, read[0]))
    for alg, job in jobs.items():
        keys[alg] = _outcome(job)
    group = None if probe is None else _outcome(probe)
    # A key whose name gives its size and that no connection was spent on is judged by the name;
    # one that a handshake tried and could not read is unknown, as every key is.
    keys.update({a: HostKey(a, a, bits, b"") for a, bits in by_name.items() if a not in keys})
    _judge(server, keys, result)
    if gex is not None:
        _group_exchange(server.lists["kex"], group, result)
    return result


def _first(opening: list[_Opened], arrivals: Arrivals) -> tuple[Connection, Kexinit, list[_Opened]]:
    """The connection that reaches its KEXINIT first, and those that have not failed, as spares.
    A server that limits connections before login (sshd's MaxStartups, PerSourceMaxStartups, a
    proxy that serves one at a time) may drop, refuse or hold some of those a scan opens at once,
    not always the last: whichever got through serves. When every one failed, the first one's
    error is raised."""
    if not opening:
        raise ValueError("no connection to scan on")
    failed: dict[int, Exception] = {}
    seen = 0
    while len(failed) < len(opening):
        arrivals.wait()
        while seen < len(arrivals.order):
            n = arrivals.order[seen]
            seen += 1
            try:
                conn, server = opening[n]()
            except (ProtocolError, OSError, ValueError) as exc:
                failed[n] = exc
                continue
            return conn, server, [job for i, job in enumerate(opening) if i != n and i not in failed]
    raise failed[0]


def _start(
    spares: list[_Opened],
    endpoint: tuple[str, int, float],
    families: list[str],
    gex: str | None,
) -> tuple[dict[str, Callable[[], HostKey]], Callable[[], int | None] | None]:
    """Start the host-key handshakes of every family to read but the first (which continues on
    the first connection), each on a spare connection (already past its KEXINIT, or nearly) or a
    new one, and the group-exchange probe on the next; close the spares left over."""
    jobs: dict[str, Callable[[], HostKey]] = {}
    for n, alg in enumerate(families[1:]):
        if n < len(spares):
            jobs[alg] = spawn(_on_spare, spares[n], alg)
        else:
            jobs[alg] = spawn(host_key, *endpoint[:2], alg, endpoint[2])
    used = max(len(families) - 1, 0)
    probe = None
    if gex is not None:
        spare = spares[used] if used < len(spares) else spawn(_opened, Dial(*endpoint))
        probe = spawn(_probe_on, spare, gex)
        used += 1
    _close_all(spares[used:])
    return jobs, probe


def _outcome(call: Callable[[], _T]) -> _T | str:
    """What ``call`` returns, or why it failed (a server's error is a result, not a crash)."""
    try:
        return call()
    except (ProtocolError, OSError, ValueError) as exc:
        return _why(exc)


def _gex_to_probe(lists: dict[str, tuple[str, ...]]) -> str | None:
    """The group exchange to ask for a small group: the first offered that is not SHA-1 (those are
    weak whatever the group), provided the server has a host-key algorithm to pin."""
    if not lists["host_key"]:
        return None
    return next((k for k in lists["kex"] if k.startswith(_GEX_PREFIX) and not _weak_kex(k)), None)


def _probe_on(spare: _Opened, kex: str) -> int | None:
    conn, server = spare()
    with conn:
        return gex_group_bits(conn, server.lists, kex)


def _group_exchange(kex: tuple[str, ...], group: int | str | None, result: CheckResult) -> None:
    """ssh.weak-kex for group exchanges when the server hands out a group under 2048 bits."""
    names = [k for k in kex if k.startswith(_GEX_PREFIX) and not _weak_kex(k)]
    if isinstance(group, str):
        why = f"whether group exchange hands out groups under 2048 bits ({group})"
        result.cannot(why)
        result.fail("ssh.unknown", f"could not tell {why}")
        return
    result.facts["group_exchange"] = {"smallest_group_bits": group}
    if group is not None and group < 2048:
        low, _, high = GEX_PROBE
        asked = f"group exchange hands out a {group}-bit group when asked for {low}-{high} bits"
        result.fail("ssh.weak-kex", f"{asked}: {', '.join(names)}")
    else:
        result.ok()


def _opened(dial: Dial) -> tuple[Connection, Kexinit]:
    conn = Connection(dial)
    try:
        return conn, read_kexinit(conn)
    except BaseException:
        conn.close()
        raise


def _on_spare(spare: _Opened, algorithm: str) -> HostKey:
    conn, server = spare()
    with conn:
        return handshake(conn, server.lists, algorithm)


def _close_all(spares: list[_Opened]) -> None:
    """Close spare connections that are not needed, whenever they are ready (without waiting)."""
    for spare in spares:
        spawn(_discard, spare)


def _discard(spare: _Opened) -> None:
    try:
        conn, _ = spare()
    except BaseException:  # noqa: BLE001 - a spare that failed to open has nothing to close
        return
    conn.close()


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ProtocolError) else f"{type(exc).__name__}: {exc}".rstrip(": ")


def _unknown(result: CheckResult, why: str) -> CheckResult:
    result.cannot(why)
    result.fail("ssh.unknown", why)
    return result


def _families(host_key_algorithms: tuple[str, ...]) -> list[str]:
    """One host-key algorithm per key the server may hold, in the server's order."""
    seen: dict[str, str] = {}
    for alg in host_key_algorithms:
        seen.setdefault(_family(alg), alg)
    return list(seen.values())


def _size_verdict(key: HostKey) -> Severity | None:
    """HIGH for an RSA or DSA key under 2048 bits or an ECDSA key under 256, MEDIUM for RSA or
    DSA under 3072; None for a sound size, or none known."""
    if not key.bits:
        return None
    if key.key_type.startswith(("ssh-rsa", "ssh-dss")):
        return Severity.HIGH if key.bits < 2048 else Severity.MEDIUM if key.bits < 3072 else None
    return Severity.HIGH if key.bits < 256 and "ecdsa" in key.key_type else None


def _unsound(alg: str, key: HostKey) -> str | None:
    """Why a key of no small size cannot pass: its size cannot be told, or it is not of the
    algorithm's type (OpenSSH's client refuses an Ed25519 key for rsa-sha2-256, or a P-384 key
    for ecdsa-sha2-nistp256: no client gets a key exchange with it)."""
    if not key.bits:
        # An X.509 or OpenPGP key, an unknown type, an ECDSA curve by an unknown name or OID.
        return f"key type {key.key_type}: a type, curve or key this scanner cannot size"
    if key.blob and key.key_type != _key_type(alg):
        return f"the server sent a {key.key_type} key, which clients refuse for {alg}"
    return None


def _fingerprint(blob: bytes) -> str:
    # Imported here (loaded by scan_ssh while the server works): `scan ssh` is mostly start-up.
    import base64  # noqa: PLC0415
    import hashlib  # noqa: PLC0415

    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _judge(server: Kexinit, keys: dict[str, HostKey | str], result: CheckResult) -> None:
    lists = server.lists
    software = server.identification.split("-", 2)[2] if server.identification.count("-") >= 2 else ""
    ciphers = sorted({*lists["enc_c2s"], *lists["enc_s2c"]})
    macs = sorted({*lists["mac_c2s"], *lists["mac_s2c"]})
    result.facts.update(
        {
            "identification": server.identification,
            "kex": list(lists["kex"]),
            "host_key_algorithms": list(lists["host_key"]),
            "ciphers": ciphers,
            "macs": macs,
            "compression": sorted({*lists["comp_c2s"], *lists["comp_s2c"]}),
        }
    )
    if server.pre_lines:
        result.facts["banner_lines"] = list(server.pre_lines)
    kex = lists["kex"]
    _flag(result, "ssh.rsa-key-exchange", "RSA key exchange offered", [k for k in kex if k in _RSA_KEX])
    _flag(result, "ssh.weak-kex", "SHA-1 or 1024-bit key exchange offered",
          [k for k in kex if k not in _RSA_KEX and _weak_kex(k)])  # fmt: skip
    _flag(result, "ssh.sha1-host-signature", "SHA-1 host-key signatures offered",
          [a for a in lists["host_key"] if a in _SHA1_SIGNATURES])  # fmt: skip
    _flag(result, "ssh.weak-cipher", "weak ciphers offered", [c for c in ciphers if _weak_cipher(c)])
    _flag(result, "ssh.weak-mac", "weak MACs offered", [m for m in macs if _weak_mac(m)])
    _flag(result, "ssh.terrapin", "open to Terrapin (CVE-2023-48795), no strict key exchange offered with",
          _terrapin(kex, ciphers, macs))  # fmt: skip
    _software(software.split(" ", 1)[0], server.identification, result)
    # Each offered algorithm gets the key of its family's handshake.
    by_family = {_family(alg): key for alg, key in keys.items()}
    _host_keys(
        {alg: by_family[_family(alg)] for alg in lists["host_key"] if _family(alg) in by_family}, result
    )


def _terrapin(kex: tuple[str, ...], ciphers: list[str], macs: list[str]) -> list[str]:
    """What a Terrapin prefix truncation (CVE-2023-48795) works on, as ssh-audit lists it:
    chacha20-poly1305, and CBC ciphers with Encrypt-then-MAC MACs, unless the server offers
    strict key exchange (OpenSSH 9.6+ and distribution backports)."""
    if "kex-strict-s-v00@openssh.com" in kex:
        return []
    chacha = [c for c in ciphers if c.startswith("chacha20-poly1305")]
    cbc = [
        c
        for c in ciphers
        if c.endswith(("-cbc", "-cbc@openssh.org", "-cbc@ssh.com")) or c == "rijndael-cbc@lysator.liu.se"
    ]
    etm = [m for m in macs if m.endswith("-etm@openssh.com")]
    return chacha + (cbc + etm if cbc and etm else [])


def _flag(result: CheckResult, rule: str, what: str, names: list[str]) -> None:
    if names:
        result.fail(rule, f"{what}: {', '.join(names)}")
    else:
        result.ok()


def _software(software: str, identification: str, result: CheckResult) -> None:
    result.facts["software"] = software
    version = _openssh_version(software)
    if identification.startswith("SSH-1.99-"):
        result.fail("ssh.old-software", f"{identification}: speaks SSH protocol 1 as well (version 1.99)")
    elif version is not None and version < (7, 4):
        result.fail(
            "ssh.old-software",
            f"{identification}: OpenSSH before 7.4 (SHA-1 and CBC on by default, unmaintained)",
        )
    else:
        result.ok()


def _host_keys(keys: dict[str, HostKey | str], result: CheckResult) -> None:
    facts: dict[str, object] = {}
    small: dict[Severity, list[str]] = {Severity.HIGH: [], Severity.MEDIUM: []}
    failed: dict[str, list[str]] = {}
    sized = 0
    for alg, key in keys.items():
        if isinstance(key, str):
            facts[alg] = "unknown"
            failed.setdefault(key, []).append(alg)
            continue
        # A key whose name gave its size, read on no connection, has no blob: no fingerprint.
        facts[alg] = {"type": key.key_type, "bits": key.bits,
                      "fingerprint": _fingerprint(key.blob) if key.blob else None}  # fmt: skip
        verdict = _size_verdict(key)
        if verdict is not None:
            small[verdict].append(f"{alg} ({key.key_type} {key.bits} bits)")
        elif (why := _unsound(alg, key)) is not None:
            failed.setdefault(why, []).append(alg)
            continue
        sized += 1
    small_high, small_medium = small[Severity.HIGH], small[Severity.MEDIUM]
    result.facts["host_keys"] = facts
    for why, algs in failed.items():
        result.cannot(f"host key for {', '.join(algs)}: {why}")
        result.fail("ssh.unknown", f"the host key for {', '.join(algs)} could not be read ({why})")
    if small_high:
        also = f"; under 3072 bits: {', '.join(small_medium)}" if small_medium else ""
        detail = "too small (RSA/DSA under 2048 bits, EC under 256): " + ", ".join(small_high) + also
        result.fail("ssh.small-host-key", detail, severity=Severity.HIGH)
    elif small_medium:
        result.fail("ssh.small-host-key", "under 3072 bits: " + ", ".join(small_medium))
    elif sized:
        result.ok()
    if not keys:
        result.cannot("the server offers no host-key algorithm")
        result.fail("ssh.unknown", "the server offers no host-key algorithm")
