"""File exchange: bulk CSV tokenize/detokenize, the clear-value guard, SFTP, retention."""

from ._csvio import CsvFormat, CsvInput, CsvProblem, sniff
from ._rejects import RejectsFile, RejectsStream
from .check import Finding, check_file, mask
from .convert import ColumnError, Summary, TooManyErrors, detokenize_file, tokenize_file

__all__ = [
    "ColumnError",
    "CsvFormat",
    "CsvInput",
    "CsvProblem",
    "Finding",
    "RejectsFile",
    "RejectsStream",
    "Summary",
    "TooManyErrors",
    "check_file",
    "detokenize_file",
    "mask",
    "sniff",
    "tokenize_file",
]
