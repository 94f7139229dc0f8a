"""The launcher starts a `scan ssh` before the CLI loads, and the command takes only its own scans."""

from __future__ import annotations

import click
import pytest
from tests.scan.ssh_servers import Sshd

from sendvault._launch import _FLAGS, _VALUED, _ssh_request, start_ssh, take_ssh
from sendvault.cli.scan import scan_ssh_cmd
from sendvault.scan.report import to_json
from sendvault.scan.ssh import scan_ssh


@pytest.mark.parametrize(
    ("args", "request_"),
    [
        (["scan", "ssh", "10.0.0.1"], ((("10.0.0.1", 22),), 5.0)),
        (
            ["scan", "ssh", "--json", "h:2222", "[::1]:22", "--timeout", "2"],
            ((("h", 2222), ("::1", 22)), 2.0),
        ),
        (
            ["scan", "ssh", "h", "--timeout=0.5", "--fail-on", "low", "--sarif", "r.sarif"],
            ((("h", 22),), 0.5),
        ),
        (["scan", "ssh", "h", "--timeout", "1", "--timeout", "3"], ((("h", 22),), 3.0)),
    ],
)
def test_a_plain_scan_ssh_is_read_as_click_reads_it(args: list[str], request_: object) -> None:
    assert _ssh_request(args) == request_


@pytest.mark.parametrize(
    "args",
    [
        ["scan", "ssh"],  # no target: a usage error
        ["scan", "ssh", "--help"],
        ["scan", "ssh", "-h", "host"],
        ["scan", "tls", "host"],
        ["--config", "x.toml", "scan", "ssh", "host"],
        ["scan", "ssh", "host:ssh"],  # a bad port
        ["scan", "ssh", "host:0"],
        ["scan", "ssh", "host", "--timeout", "0"],  # out of range
        ["scan", "ssh", "host", "--timeout", "nan"],
        ["scan", "ssh", "host", "--timeout"],  # no value
        ["scan", "ssh", "host", "--timeout", "--json"],
        ["scan", "ssh", "host", "--fail-on", "bogus"],
        ["scan", "ssh", "host", "--html", "."],  # a directory
        ["scan", "ssh", "host", "--verbose"],  # an unknown option
        ["scan", "ssh", "--", "host"],
        ["scan", "ssh", *[f"h{n}" for n in range(9)]],  # more hosts than the command scans at once
    ],
)
def test_anything_else_or_anything_doubtful_starts_nothing(args: list[str]) -> None:
    assert _ssh_request(args) is None
    assert start_ssh(args) is False
    assert take_ssh([("host", 22)], 5.0) is None


def test_the_launcher_knows_every_option_of_scan_ssh() -> None:
    # A new option of `scan ssh` makes the launcher start nothing (safe, but slow) until it is
    # added here and there.
    options = [p for p in scan_ssh_cmd.params if isinstance(p, click.Option) and p.name != "help"]
    assert {o for p in options if p.is_flag for o in p.opts} == _FLAGS
    assert {o for p in options if not p.is_flag for o in p.opts} == _VALUED


def test_the_command_takes_the_early_scans_only_for_the_same_hosts_and_timeout(
    sshd_modern: Sshd, sshd_legacy: Sshd
) -> None:
    modern, legacy = ("127.0.0.1", sshd_modern.port), ("127.0.0.1", sshd_legacy.port)
    assert start_ssh(["scan", "ssh", f"127.0.0.1:{sshd_modern.port}", "--timeout", "4"])
    assert take_ssh([modern], 5.0) is None  # another timeout: the command scans itself (once that ends)
    assert take_ssh([modern], 4.0) is None  # taken once, and that was the one
    args = ["scan", "ssh", f"127.0.0.1:{sshd_modern.port}", f"127.0.0.1:{sshd_legacy.port}", "--json"]
    assert start_ssh(args)
    assert take_ssh([legacy, modern], 5.0) is None  # another order
    assert start_ssh(args)
    early = take_ssh([modern, legacy], 5.0)
    assert early is not None
    assert to_json(early) == to_json([scan_ssh(*modern), scan_ssh(*legacy)])
    assert early[1].findings  # the legacy server's: the comparison is not of two empty reports
