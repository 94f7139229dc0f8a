"""What the exchange remembers between runs: partial transfers and the files already pulled.

One small JSON file (``$SENDVAULT_HOME/exchange/state.json``, mode 0600), changed under an
exclusive lock and replaced atomically, so a scheduled pull in ``serve`` and a pull from the
command line never lose each other's entries. It holds remote paths, sizes, times and SHA-256
checksums: no contact data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["TransferState"]


class TransferState:
    """Partial-transfer markers and the pulled-files ledger."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load()
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                tmp = self.path.with_name(f".{self.path.name}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    json.dump(data, fh, indent=1, sort_keys=True)
                    fh.flush()
                    os.fsync(fh.fileno())
                tmp.replace(self.path)
        finally:
            os.close(lock)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"partial": {}, "pulled": {}}
        except (OSError, ValueError):
            # A damaged state file only costs a transfer from the start: never a wrong resume.
            return {"partial": {}, "pulled": {}}
        if not isinstance(data, dict):
            return {"partial": {}, "pulled": {}}
        data.setdefault("partial", {})
        data.setdefault("pulled", {})
        return data

    def get(self, key: str) -> str | None:
        """The marker of a partial transfer."""
        with self._locked() as data:
            value = data["partial"].get(key)
        return value if isinstance(value, str) else None

    def put(self, key: str, value: str) -> None:
        """Remember a partial transfer."""
        with self._locked() as data:
            data["partial"][key] = value

    def drop(self, key: str) -> None:
        """Forget a partial transfer."""
        with self._locked() as data:
            data["partial"].pop(key, None)

    def pulled(self, remote: str, path: str) -> dict[str, Any] | None:
        """The ledger entry of a remote file pulled before, if any."""
        with self._locked() as data:
            entry = data["pulled"].get(f"{remote}|{path}")
        return entry if isinstance(entry, dict) else None

    def mark_pulled(self, remote: str, path: str, entry: dict[str, Any]) -> None:
        """Record a pulled file (size, mtime, sha256, local path, when)."""
        with self._locked() as data:
            data["pulled"][f"{remote}|{path}"] = entry

    def forget_pulled(self, remote: str, path: str) -> None:
        """Drop a ledger entry (the remote file was swept)."""
        with self._locked() as data:
            data["pulled"].pop(f"{remote}|{path}", None)
