"""File exchange: bulk CSV tokenize/detokenize, the clear-value guard, SFTP, retention, schedules.

Names are imported from their modules on first use: a bulk worker process, or `csv tokenize`,
imports the CSV code without the SFTP client (asyncssh alone takes a fifth of a second).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._csvio import CsvFormat, CsvInput, CsvProblem, sniff
    from ._rejects import RejectsFile, RejectsStream
    from ._state import TransferState
    from ._workers import default_workers
    from .check import Finding, check_file, mask
    from .convert import ColumnError, Summary, TooManyErrors, detokenize_file, tokenize_file, unwritten
    from .retention import SweepRefused
    from .sftp import HostKeyError, Remote, SftpError, TransferResult, parse_remote, remote_from_settings
    from .transfer import Exchange

_MODULES = {
    "._csvio": ("CsvFormat", "CsvInput", "CsvProblem", "sniff"),
    "._rejects": ("RejectsFile", "RejectsStream"),
    "._state": ("TransferState",),
    "._workers": ("default_workers",),
    ".check": ("Finding", "check_file", "mask"),
    ".convert": ("ColumnError", "Summary", "TooManyErrors", "detokenize_file", "tokenize_file", "unwritten"),
    ".retention": ("SweepRefused",),
    ".sftp": (
        "HostKeyError",
        "Remote",
        "SftpError",
        "TransferResult",
        "parse_remote",
        "remote_from_settings",
    ),
    ".transfer": ("Exchange",),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "ColumnError",
    "CsvFormat",
    "CsvInput",
    "CsvProblem",
    "Exchange",
    "Finding",
    "HostKeyError",
    "RejectsFile",
    "RejectsStream",
    "Remote",
    "SftpError",
    "Summary",
    "SweepRefused",
    "TooManyErrors",
    "TransferResult",
    "TransferState",
    "check_file",
    "default_workers",
    "detokenize_file",
    "mask",
    "parse_remote",
    "remote_from_settings",
    "sniff",
    "tokenize_file",
    "unwritten",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


_OWN = {"Any", "TYPE_CHECKING", "annotations", "importlib", "_MODULES", "_HOME", "_OWN"}


def __dir__() -> list[str]:
    return sorted((set(globals()) - _OWN) | set(_HOME))
