"""`sendvault scan ssh HOST[:PORT]` on a short path: a CI job's scan is mostly start-up.

The scan's connections open first (``scan._sshdial``), so the server forks and loads its keys
while the scanner loads; click is never imported. Only arguments this path reads the way the
click command does take it: one target, ``--timeout``, ``--fail-on``, ``--fingerprints`` and
``--json``. Anything else (``--help``, ``--sarif``, several targets, a malformed value) returns
to the whole command line, which says what is wrong: both paths answer the same arguments the
same way.
"""

from __future__ import annotations

import sys

__all__ = ["scan_ssh"]

_SEVERITIES = ("info", "low", "medium", "high", "critical")
_TIMEOUT = (0.1, 120.0)  # scan ssh --timeout's range


class _Args:
    """`scan ssh`'s options, with the click command's defaults."""

    __slots__ = ("as_json", "fail_on", "fingerprints", "host", "port", "timeout")

    def __init__(self) -> None:
        self.host, self.port, self.timeout, self.fail_on = "", 22, 5.0, "medium"
        self.as_json = self.fingerprints = False


def _parse(args: list[str]) -> _Args | None:
    """The arguments, or None when they need click."""
    targets: list[str] = []
    out = _Args()
    words = iter(args)
    for word in words:
        name, eq, value = word.partition("=")
        if word in ("--json", "--fingerprints"):
            out.as_json |= word == "--json"
            out.fingerprints |= word == "--fingerprints"
        elif name in ("--timeout", "--fail-on"):
            if not eq:
                value = next(words, "")
            if not _option(out, name, value):
                return None
        elif word.startswith("-") or not word:
            return None
        else:
            targets.append(word)
    if len(targets) != 1:
        return None
    from ..scan.targets import host_port, plain_host  # noqa: PLC0415 - stdlib os only

    try:
        out.host, out.port = host_port(targets[0], 22)
    except ValueError:
        return None
    return out if out.host and plain_host(out.host) else None


def _option(out: _Args, name: str, value: str) -> bool:
    """Take ``--timeout`` or ``--fail-on``'s value as click does; False when click must say why not."""
    if name == "--fail-on":
        out.fail_on = value
        return value in _SEVERITIES
    try:
        out.timeout = float(value)
    except ValueError:
        return False
    return _TIMEOUT[0] <= out.timeout <= _TIMEOUT[1]  # NaN is neither


def scan_ssh(args: list[str]) -> None:
    """Run `scan ssh` on ``args`` (the words after it) and exit; return when click must."""
    a = _parse(args)
    if a is None:
        return
    try:
        from ..scan._sshdial import dial_scan  # noqa: PLC0415

        dials = dial_scan(a.host, a.port, a.timeout, fingerprints=a.fingerprints)
        from ..scan import ssh  # noqa: PLC0415
        from ..scan.findings import Severity  # noqa: PLC0415
        from ..scan.report import exit_code, to_json  # noqa: PLC0415

        results = [ssh.scan_ssh(a.host, a.port, timeout=a.timeout, fingerprints=a.fingerprints, dials=dials)]
        try:
            if a.as_json:
                import json  # noqa: PLC0415

                # As the click command writes it (_common.emit_json): compact, UTF-8.
                document = json.dumps(
                    to_json(results), ensure_ascii=False, separators=(",", ":"), allow_nan=False
                )
                sys.stdout.write(document + "\n")
            else:
                from ..scan.report import table_rows  # noqa: PLC0415
                from ._output import print_table  # noqa: PLC0415

                print_table(["check", "target", "rule", "severity", "detail"], table_rows(results))
            sys.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:  # a full disk, /dev/full: as the click commands say it
            from ._output import stdout_failed  # noqa: PLC0415

            stdout_failed(exc)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")  # as the click commands say it
        sys.exit(130)  # _common.EXIT_INTERRUPTED, not imported on this quick path
    except BrokenPipeError:
        # A reader that went away (`| head`): exit 1 quietly, as click does, and let nothing
        # try to flush into the closed pipe again at exit.
        import os  # noqa: PLC0415 - loaded by the interpreter already

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    sys.exit(exit_code(results, Severity[a.fail_on.upper()]))
