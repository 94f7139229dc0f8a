"""File exchange: bulk CSV tokenize/detokenize, the clear-value guard, SFTP, retention, schedules."""

from ._csvio import CsvFormat, CsvInput, CsvProblem, sniff
from ._rejects import RejectsFile, RejectsStream
from ._state import TransferState
from ._workers import default_workers
from .check import Finding, check_file, mask
from .convert import ColumnError, Summary, TooManyErrors, detokenize_file, tokenize_file, unwritten
from .retention import SweepRefused
from .sftp import HostKeyError, Remote, SftpError, TransferResult, parse_remote, remote_from_settings
from .transfer import Exchange

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
