"""The `sendvault` entry point: a `scan ssh` starts scanning while the command line loads.

A `sendvault scan ssh HOST` process spends about as long importing click and the CLI as its scan
spends waiting for the server (an sshd forks and re-executes itself for every connection). So
when the arguments are plainly a `scan ssh` (targets, ``--timeout`` and the output options, and
nothing this reading is unsure of), the scans start on threads before the CLI is imported, and
the command takes their results, but only if click, parsing the same arguments, asks for exactly
the same hosts, ports and timeout (:func:`take_ssh`); otherwise it scans afresh and the early
threads, daemons, are dropped. Any other command starts nothing early.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .scan.findings import CheckResult

__all__ = ["main", "start_ssh", "take_ssh"]

_Request = tuple[tuple[tuple[str, int], ...], float]

# `scan ssh`'s options (cli/scan.py), as far as the early start reads them.
_FLAGS = frozenset({"--json"})
_VALUED = frozenset({"--timeout", "--fail-on", "--sarif", "--html"})
_MAX_HOSTS = 8  # the command's own concurrency; more hosts start nothing early


class _Scan:
    """One host's scan on a daemon thread."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._args = (host, port, timeout)
        self._value: CheckResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Imported already (start_ssh): on this thread, beside the CLI's imports, it took the GIL
        # in turns with them and the connections went out twice as late.
        from .scan.ssh import scan_ssh  # noqa: PLC0415

        host, port, timeout = self._args
        try:
            self._value = scan_ssh(host, port, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - raised again in the command, as if it ran it
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> CheckResult:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


_started: tuple[_Request, list[_Scan]] | None = None


def _ssh_request(args: Sequence[str]) -> _Request | None:
    """The (endpoints, timeout) of ``scan ssh ...`` arguments, or None when they are anything
    else or anything this reading is unsure of (help, an unknown option, a bad value)."""
    if list(args[:2]) != ["scan", "ssh"]:
        return None
    from .scan.targets import host_port  # noqa: PLC0415

    endpoints: list[tuple[str, int]] = []
    timeout: float | None = 5.0
    words = iter(args[2:])
    for word in words:
        if word in _FLAGS:
            continue
        name, equals, value = word.partition("=")
        if name in _VALUED:
            value = value if equals else next(words, "-")
            if not _value_ok(name, value):
                return None
            timeout = _timeout(value) if name == "--timeout" else timeout
            continue
        if word.startswith("-"):
            return None
        try:
            endpoints.append(host_port(word, 22))
        except ValueError:
            return None
    if timeout is None or not 1 <= len(endpoints) <= _MAX_HOSTS:
        return None
    return tuple(endpoints), timeout


def _timeout(value: str) -> float | None:
    try:
        timeout = float(value)
    except ValueError:
        return None
    return timeout if math.isfinite(timeout) and 0.1 <= timeout <= 120 else None


def _value_ok(name: str, value: str) -> bool:
    """Whether click takes ``value`` for the option ``name`` (a usage error starts no scan)."""
    if value.startswith("-"):
        return False
    if name == "--timeout":
        return _timeout(value) is not None
    if name == "--fail-on":
        from .scan.findings import Severity  # noqa: PLC0415

        return value in {s.label for s in Severity}
    from pathlib import Path  # noqa: PLC0415 - what a scan starts with comes first

    return not Path(value).is_dir()  # --sarif, --html


def take_ssh(endpoints: Sequence[tuple[str, int]], timeout: float) -> list[CheckResult] | None:
    """The results of the scans started early, if they were started for exactly ``endpoints``
    and ``timeout`` (once); else None, and the caller scans (after any other early scans end, so
    that no server is scanned twice at once: sshd drops connections beyond its MaxStartups)."""
    global _started  # one early start per process, taken once
    started, _started = _started, None
    if started is None:
        return None
    request, scans = started
    if request != (tuple(endpoints), timeout):
        for scan in scans:
            scan.wait()
        return None
    return [scan.result() for scan in scans]


def start_ssh(args: Sequence[str]) -> bool:
    """Start the scans that the command line ``args`` will ask for, if it plainly is a `scan ssh`."""
    global _started  # noqa: PLW0603 - the one early start, for take_ssh
    request = _ssh_request(args)
    if request is not None:
        import sendvault.scan.ssh  # noqa: F401, PLC0415 - see _Scan._run
    _started = None if request is None else (request, [_Scan(h, p, request[1]) for h, p in request[0]])
    return request is not None


def main() -> None:
    """Console-script entry point: start a `scan ssh` early, then run the CLI."""
    start_ssh(sys.argv[1:])
    from .cli import main as cli_main  # noqa: PLC0415 - after the scans have started

    cli_main()
