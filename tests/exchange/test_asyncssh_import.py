"""Importing the SFTP side prints nothing: asyncssh's import-time DSA warning is silenced, no more."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import warnings
from sendvault.exchange import Exchange
assert "asyncssh" in sys.modules
from cryptography.hazmat.primitives.asymmetric import dsa
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    dsa.DSAPrivateKey
print(len(caught))
"""


_SFTP_SIDE = (
    "import sys; from sendvault.exchange import Exchange, SftpError; assert 'asyncssh' in sys.modules"
)


def test_the_exchange_package_imports_under_warnings_as_errors() -> None:
    # A fresh interpreter: in this one asyncssh is already imported and would not warn again.
    # The package imports its modules on first use: the names taken here bring asyncssh in.
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _SFTP_SIDE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_dsa_use_outside_asyncssh_still_warns_after_the_import() -> None:
    import cryptography

    major = int(cryptography.__version__.split(".")[0])
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    # cryptography deprecated DSA in 51; before that there is no warning to keep.
    assert done.stdout.strip() == ("1" if major >= 51 else "0")
