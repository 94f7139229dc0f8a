"""The Marketing Cloud simulator: conformance checks, load, retries and the No Token Queue, reports.

`sendvault harness check` and `sendvault harness load` play Marketing Cloud against any token
server (docs/harness.md).
"""

from ._http import Credentials, TlsFileError, TlsOptions
from ._model import CheckReport, LoadReport
from .checks import CHECKS, CheckOptions, Target, Unreachable, run_checks

__all__ = [
    "CHECKS",
    "CheckOptions",
    "CheckReport",
    "Credentials",
    "LoadReport",
    "Target",
    "TlsFileError",
    "TlsOptions",
    "Unreachable",
    "run_checks",
]
