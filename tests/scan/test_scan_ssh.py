"""`scan ssh` against Debian's sshd (modern and legacy configurations) and asyncssh servers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.scan.ssh_servers import AsyncsshServers, Sshd

from sendvault.scan import Severity, exit_code
from sendvault.scan.findings import CheckResult
from sendvault.scan.ssh import scan_ssh


def _rules(result: CheckResult) -> set[str]:
    return {f.rule for f in result.findings}


def _detail(result: CheckResult, rule: str) -> str:
    return next(f.detail for f in result.findings if f.rule == rule)


def test_a_modern_sshd_passes(sshd_modern: Sshd) -> None:
    result = scan_ssh("127.0.0.1", sshd_modern.port)
    assert result.findings == []
    assert not result.unknown
    keys = result.facts["host_keys"]
    assert keys["ssh-ed25519"]["bits"] == 256  # type: ignore[index]
    assert keys["ecdsa-sha2-nistp256"]["bits"] == 256  # type: ignore[index]
    assert keys["rsa-sha2-512"] == {  # type: ignore[index]
        "type": "ssh-rsa",
        "bits": 3072,
        "fingerprint": keys["rsa-sha2-512"]["fingerprint"],  # type: ignore[index]
    }
    assert str(result.facts["identification"]).startswith("SSH-2.0-OpenSSH_")
    assert exit_code([result], Severity.LOW) == 0


def test_host_key_fingerprints_match_ssh_keygen(sshd_modern: Sshd) -> None:
    result = scan_ssh("127.0.0.1", sshd_modern.port, fingerprints=True)
    ours = {k["fingerprint"] for k in result.facts["host_keys"].values()}  # type: ignore[union-attr]
    theirs = set()
    for public in sshd_modern.directory.glob("host_*.pub"):
        line = subprocess.run(["ssh-keygen", "-lf", str(public)], capture_output=True, text=True,
                              check=True, timeout=30).stdout  # fmt: skip
        theirs.add(line.split()[1])
    assert ours == theirs


def _settled(connections: list[object]) -> int:
    """How many connections the server took, once no more arrive (a scan's unused spare is
    closed without being waited for)."""
    deadline, seen = time.monotonic() + 10, -1
    while len(connections) != seen and time.monotonic() < deadline:
        seen = len(connections)
        time.sleep(0.3)
    return seen


def _keyed_server(asyncssh_servers: AsyncsshServers, connections: list[object], *kinds: str) -> int:
    from sendvault.exchange._asyncssh import asyncssh

    keys = [asyncssh.generate_private_key(k, **({"key_size": 3072} if k == "ssh-rsa" else {})) for k in kinds]
    return asyncssh_servers.start(
        connections,
        server_host_keys=keys,
        kex_algs=["curve25519-sha256", "diffie-hellman-group-exchange-sha256"],
        signature_algs=["rsa-sha2-256"],
    )


def test_keys_whose_name_gives_their_size_take_no_connection_of_their_own(
    asyncssh_servers: AsyncsshServers,
) -> None:
    connections: list[object] = []
    port = _keyed_server(asyncssh_servers, connections, "ssh-ed25519", "ecdsa-sha2-nistp384", "ssh-rsa")
    result = scan_ssh("127.0.0.1", port)
    keys: dict[str, dict[str, object]] = result.facts["host_keys"]  # type: ignore[assignment]
    assert keys["ssh-ed25519"] == {"type": "ssh-ed25519", "bits": 256, "fingerprint": None}
    assert keys["ecdsa-sha2-nistp384"] == {"type": "ecdsa-sha2-nistp384", "bits": 384, "fingerprint": None}
    assert keys["rsa-sha2-256"]["bits"] == 3072
    assert str(keys["rsa-sha2-256"]["fingerprint"]).startswith("SHA256:")
    assert not result.unknown
    # The RSA key on the first connection, the group-exchange probe on the spare.
    assert _settled(connections) == 2


def test_fingerprints_read_every_host_key_one_connection_each(asyncssh_servers: AsyncsshServers) -> None:
    connections: list[object] = []
    port = _keyed_server(asyncssh_servers, connections, "ssh-ed25519", "ecdsa-sha2-nistp384", "ssh-rsa")
    result = scan_ssh("127.0.0.1", port, fingerprints=True)
    keys: dict[str, dict[str, object]] = result.facts["host_keys"]  # type: ignore[assignment]
    for alg, bits in (("ssh-ed25519", 256), ("ecdsa-sha2-nistp384", 384), ("rsa-sha2-256", 3072)):
        assert keys[alg]["bits"] == bits
    assert all(str(key["fingerprint"]).startswith("SHA256:") for key in keys.values())
    assert _settled(connections) == 4  # three keys and the group-exchange probe


def test_a_key_whose_name_gives_its_size_is_read_when_a_connection_is_open_anyway(
    asyncssh_servers: AsyncsshServers,
) -> None:
    port = _keyed_server(asyncssh_servers, [], "ssh-ed25519")
    keys = scan_ssh("127.0.0.1", port).facts["host_keys"]
    assert str(keys["ssh-ed25519"]["fingerprint"]).startswith("SHA256:")  # type: ignore[index]


def _idle(server: Sshd) -> None:
    """Until sshd has no child left: one per connection not yet logged in (the start-up check's,
    the last scan's), each counting against MaxStartups."""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().strip():
        assert time.monotonic() < deadline, "sshd's children did not exit"
        time.sleep(0.02)


def test_a_server_that_takes_one_connection_at_a_time_is_still_read() -> None:
    # MaxStartups 1: sshd drops every connection beyond one that has not logged in, and the scan
    # opens two at once: whichever it keeps, the scan reads the KEXINIT on it. 10 rounds.
    from tests.scan.ssh_servers import sshd

    with sshd("modern", "MaxStartups 1\n") as server:
        for _ in range(10):
            _idle(server)
            result = scan_ssh("127.0.0.1", server.port)
            assert str(result.facts.get("identification", "")).startswith("SSH-2.0-OpenSSH_"), result


def test_fingerprints_under_a_connection_limit_keep_the_verdicts() -> None:
    # The one connection sshd keeps reads the RSA key (whose size matters) before the Ed25519
    # and ECDSA keys, whose own connections are dropped: those are unknown, never a pass.
    from tests.scan.ssh_servers import sshd

    with sshd("legacy", "MaxStartups 1\n") as server:
        for _ in range(5):
            _idle(server)
            default = scan_ssh("127.0.0.1", server.port)
            _idle(server)
            every = scan_ssh("127.0.0.1", server.port, fingerprints=True)
            judged = [(f.rule, f.detail) for f in every.findings if f.rule != "ssh.unknown"]
            assert judged == [(f.rule, f.detail) for f in default.findings if f.rule != "ssh.unknown"]
            assert "ssh.small-host-key" in _rules(every)


def test_the_connection_that_answers_first_serves(asyncssh_servers: AsyncsshServers) -> None:
    # A proxy that serves one connection at a time, or a limiter that refuses some: the scan
    # reads the KEXINIT on whichever connection gets it, without waiting out the others. (One
    # Ed25519 key and no group exchange: the scan needs no spare.)
    import socket

    from tests.scan.ssh_servers import free_port

    from sendvault.exchange._asyncssh import asyncssh
    from sendvault.scan._sshdial import Dial

    port = asyncssh_servers.start(
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")], kex_algs=["curve25519-sha256"]
    )
    with socket.create_server(("127.0.0.1", 0)) as silent:
        for first in (silent.getsockname()[1], free_port()):  # accepted, never answered; refused
            started = time.monotonic()
            dials = [Dial("127.0.0.1", first, 3.0), Dial("127.0.0.1", port, 3.0)]
            result = scan_ssh("127.0.0.1", port, timeout=3.0, dials=dials)
            assert str(result.facts["identification"]).startswith("SSH-2.0-AsyncSSH_")
            assert not result.unknown
            assert time.monotonic() - started < 2.5


def test_a_legacy_sshd_is_reported_rule_by_rule(sshd_legacy: Sshd) -> None:
    result = scan_ssh("127.0.0.1", sshd_legacy.port)
    assert _rules(result) == {
        "ssh.weak-kex", "ssh.sha1-host-signature", "ssh.weak-cipher", "ssh.weak-mac", "ssh.small-host-key"
    }  # fmt: skip
    kex = _detail(result, "ssh.weak-kex")
    for name in (
        "diffie-hellman-group1-sha1",
        "diffie-hellman-group14-sha1",
        "diffie-hellman-group-exchange-sha1",
    ):
        assert name in kex
    assert "curve25519" not in kex
    assert _detail(result, "ssh.sha1-host-signature").endswith("ssh-rsa, ssh-dss")
    assert "3des-cbc" in _detail(result, "ssh.weak-cipher")
    assert "aes128-ctr" not in _detail(result, "ssh.weak-cipher")
    macs = _detail(result, "ssh.weak-mac")
    for name in ("hmac-sha1", "hmac-sha1-96", "hmac-md5", "hmac-md5-96", "umac-64@openssh.com"):
        assert name in macs.split(": ")[1].split(", ")
    assert "hmac-sha2-256" not in macs.split(": ")[1].split(", ")
    small = next(f for f in result.findings if f.rule == "ssh.small-host-key")
    # The 1024-bit DSA key makes it high; the 2048-bit RSA key is named too.
    assert small.severity is Severity.HIGH
    assert "ssh-dss 1024" in small.detail
    assert "ssh-rsa 2048" in small.detail
    assert not result.unknown


def test_an_asyncssh_server_with_rsa_key_exchange_and_a_small_key(asyncssh_legacy: int) -> None:
    result = scan_ssh("127.0.0.1", asyncssh_legacy)
    assert _rules(result) == {
        "ssh.rsa-key-exchange", "ssh.weak-kex", "ssh.sha1-host-signature", "ssh.weak-cipher",
        "ssh.weak-mac", "ssh.small-host-key",
    }  # fmt: skip
    assert _detail(result, "ssh.rsa-key-exchange").endswith("rsa2048-sha256, rsa1024-sha1")
    weak = _detail(result, "ssh.weak-cipher")
    for name in ("arcfour256", "blowfish-cbc", "cast128-cbc", "3des-cbc"):
        assert name in weak
    small = next(f for f in result.findings if f.rule == "ssh.small-host-key")
    assert small.severity is Severity.HIGH
    assert "1024 bits" in small.detail
    assert exit_code([result], Severity.HIGH) == 1


def test_a_host_key_is_read_through_rsa_key_exchange_alone(asyncssh_rsa_kex_only: int) -> None:
    # The server offers nothing but rsa2048-sha256: the host key comes in its KEXRSA_PUBKEY.
    result = scan_ssh("127.0.0.1", asyncssh_rsa_kex_only)
    # ext-info-s and kex-strict-s-v00@openssh.com are markers (RFC 8308, Terrapin), not exchanges.
    assert [k for k in result.facts["kex"] if not k.startswith(("ext-info", "kex-strict"))] == [  # type: ignore[attr-defined]
        "rsa2048-sha256"
    ]
    assert result.facts["host_keys"]["rsa-sha2-256"]["bits"] == 2048  # type: ignore[index]
    assert not result.unknown
    medium = next(f for f in result.findings if f.rule == "ssh.small-host-key")
    assert medium.severity is Severity.MEDIUM
    # And its identification names OpenSSH 7.2: old software.
    assert "OpenSSH_7.2p2" in _detail(result, "ssh.old-software")


def test_group_exchange_that_hands_out_a_1024_bit_group_is_weak_kex(asyncssh_gex_1024: int) -> None:
    # diffie-hellman-group-exchange-sha256 is a SHA-256 exchange, but the server picks the group:
    # asked for a small one, this one hands out 1024 bits (Logjam territory). Only asking shows it.
    result = scan_ssh("127.0.0.1", asyncssh_gex_1024)
    assert _rules(result) == {"ssh.weak-kex"}, result.findings
    detail = _detail(result, "ssh.weak-kex")
    assert detail.endswith(": diffie-hellman-group-exchange-sha256")
    assert "1024-bit" in detail
    assert result.facts["group_exchange"] == {"smallest_group_bits": 1024}
    assert not result.unknown


def test_group_exchange_that_refuses_small_groups_passes(sshd_modern: Sshd, sshd_legacy: Sshd) -> None:
    # OpenSSH 9 refuses a request whose maximum is under 2048 bits (DH_GRP_MIN): no small group.
    for server in (sshd_modern, sshd_legacy):
        result = scan_ssh("127.0.0.1", server.port)
        assert result.facts["group_exchange"] == {"smallest_group_bits": None}
        assert "1024-bit group" not in " ".join(f.detail for f in result.findings)


def test_an_unreachable_port_is_unknown_not_pass() -> None:
    from tests.scan.ssh_servers import free_port

    result = scan_ssh("127.0.0.1", free_port(), timeout=2)
    assert _rules(result) == {"ssh.unknown"}
    assert result.passed == 0
    assert exit_code([result], Severity.MEDIUM) == 2


def test_cli_scans_several_hosts_with_every_output(
    sshd_modern: Sshd, sshd_legacy: Sshd, tmp_path: Path
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "ssh", f"127.0.0.1:{sshd_modern.port}",
         f"127.0.0.1:{sshd_legacy.port}", "--json", "--sarif", str(tmp_path / "r.sarif"),
         "--html", str(tmp_path / "r.html")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    assert [t["target"] for t in doc["targets"]] == [
        f"127.0.0.1:{sshd_modern.port}",
        f"127.0.0.1:{sshd_legacy.port}",
    ]
    assert doc["targets"][0]["findings"] == []
    severities = {f["rule"]: f["severity"] for f in doc["targets"][1]["findings"]}
    assert severities["ssh.small-host-key"] == "high"
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    levels = {r["ruleId"]: r["level"] for r in sarif["runs"][0]["results"]}
    assert levels["ssh.small-host-key"] == "error"
    assert "ssh.weak-mac" in (tmp_path / "r.html").read_text()


def test_cli_a_modern_server_passes_even_at_fail_on_low(sshd_modern: Sshd) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "ssh", f"127.0.0.1:{sshd_modern.port}",
         "--fail-on", "low"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_cli_a_bad_port_is_a_usage_error() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "ssh", "sftp.example.com:ssh"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "port" in run.stderr
    assert "Traceback" not in run.stderr


def test_scan_all_runs_ssh_targets(sshd_legacy: Sshd, tmp_path: Path) -> None:
    from sendvault.scan.targets import scan_targets

    targets = tmp_path / "t.toml"
    targets.write_text(f'[[ssh]]\ntarget = "127.0.0.1:{sshd_legacy.port}"\n')
    [result] = scan_targets(targets)
    assert result.check == "ssh"
    assert "ssh.weak-kex" in _rules(result)


def test_scan_all_refuses_a_malformed_ssh_target(tmp_path: Path) -> None:
    from sendvault.scan.targets import scan_targets

    targets = tmp_path / "t.toml"
    targets.write_text('[[ssh]]\ntarget = "sftp:99999"\n')
    with pytest.raises(ValueError, match="the port must be a number"):
        scan_targets(targets)


@pytest.mark.parametrize(
    ("kind", "size"), [("ed25519", []), ("ecdsa", ["-b", "384"]), ("rsa", ["-b", "2048"]), ("dsa", [])]
)
def test_a_host_certificate_s_fingerprint_is_its_key_s_as_ssh_keygen_prints_it(
    tmp_path: Path, kind: str, size: list[str]
) -> None:
    # ssh-keygen -l on a certificate prints the certified key's fingerprint (and size), not a
    # hash of the whole certificate.
    import base64

    from sendvault.scan._sshwire import _key_size
    from sendvault.scan.ssh import _fingerprint

    def keygen(*args: str) -> str:
        return subprocess.run(["ssh-keygen", *args], capture_output=True, text=True, check=True,
                              timeout=60).stdout  # fmt: skip

    keygen("-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca"))
    keygen("-q", "-t", kind, *size, "-N", "", "-f", str(tmp_path / "host"))
    keygen("-q", "-s", str(tmp_path / "ca"), "-h", "-I", "host", "-n", "sftp.example.com",
           str(tmp_path / "host.pub"))  # fmt: skip
    certificate = (tmp_path / "host-cert.pub").read_text().split()
    key_type, bits, key = _key_size(base64.b64decode(certificate[1]))
    theirs = keygen("-lf", str(tmp_path / "host-cert.pub")).split()
    assert key_type == certificate[0]
    assert key_type.endswith("-cert-v01@openssh.com")
    assert (str(bits), _fingerprint(key)) == (theirs[0], theirs[1])
    assert _fingerprint(key) == keygen("-lf", str(tmp_path / "host.pub")).split()[1]
