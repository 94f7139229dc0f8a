"""asyncssh, imported once, without the DSA deprecation warning its import raises.

cryptography 51 deprecates DSA and warns whenever a module reads ``dsa.DSAPrivateKey``; asyncssh
does so at import, in a type alias, for keys sendvault never offers or accepts. Every command that
reached SFTP printed that warning, and under ``-W error`` (our test suite) the import failed.
The filter names the one message and asyncssh's own modules only, so DSA use anywhere else, and
every other warning, still shows. Import asyncssh from here, never directly.
"""

from __future__ import annotations

import warnings

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="DSA is deprecated", category=CryptographyDeprecationWarning, module=r"asyncssh\."
    )
    import asyncssh

__all__ = ["asyncssh"]
