"""What every command shares: the settings/vault context, input reading, one-line errors."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ..errors import ConfigError, CryptoError, KeyProviderError, SendvaultError, StoreError

if TYPE_CHECKING:
    from ..audit import AuditLog, Event
    from ..config import Settings
    from ..vault import Vault

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "AppContext", "emit_json", "fail", "pass_app", "read_args"]

EXIT_FAILURE = 1
EXIT_USAGE = 2

_HINTS: list[tuple[type[SendvaultError], str]] = [
    (
        ConfigError,
        "check the setting in your sendvault.toml or SENDVAULT_* environment (docs/configuration.md)",
    ),
    (KeyProviderError, "check SENDVAULT_MASTER_KEY or $SENDVAULT_HOME/keys/master.key"),
    (CryptoError, "the stored data does not open with the configured keys"),
    (StoreError, "check that the database is reachable and writable"),
]


class AppContext:
    """Lazily loaded settings and vault for one CLI invocation."""

    def __init__(self, config_file: Path | None) -> None:
        self.config_file = config_file
        self._settings: Settings | None = None
        self._vault: Vault | None = None
        self._audit: AuditLog | None = None

    @property
    def settings(self) -> Settings:
        """Settings, loaded once."""
        if self._settings is None:
            from ..config import load_settings  # noqa: PLC0415 - `scan` never needs the settings

            self._settings = load_settings(self.config_file)
        return self._settings

    @property
    def vault(self) -> Vault:
        """The vault, opened once and closed when the command ends."""
        if self._vault is None:
            from ..vault import open_vault  # noqa: PLC0415 - each command loads only what it uses

            self._vault = open_vault(self.settings)
            click.get_current_context().call_on_close(self._vault.close)
        return self._vault

    @property
    def audit(self) -> AuditLog:
        """The audit log, opened once and closed (after writing) when the command ends."""
        if self._audit is None:
            from ..audit import open_audit  # noqa: PLC0415

            self._audit = open_audit(self.settings)
            click.get_current_context().call_on_close(self._audit.close)
        return self._audit

    def record(self, event: Event, **fields: Any) -> None:
        """Record a state change made by this command and wait until it is written."""
        self.audit.record_sync(event, actor=f"cli:{getpass.getuser()}", **fields)


pass_app = click.make_pass_decorator(AppContext)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, hint: str | None = None, code: int = EXIT_FAILURE) -> NoReturn:
    """Print one error line (and a hint) to stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(code)


def hint_for(exc: SendvaultError) -> str | None:
    """The hint shown under an error of this class."""
    for cls, hint in _HINTS:
        if isinstance(exc, cls):
            return hint
    return None


def read_args(values: Sequence[str]) -> Iterator[str]:
    """The command's values; a lone ``-`` reads one value per line from stdin."""
    if list(values) == ["-"]:
        for line in sys.stdin:
            yield line.rstrip("\r\n")
    else:
        yield from values


def emit_json(document: object) -> None:
    """Write one JSON document to stdout, compact and UTF-8 (as msgspec writes it)."""
    try:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except TypeError:
        # Structs, bytes and dates: msgspec knows them. Plain documents (every scan report)
        # skip its import, which is a tenth of a CI scan's start-up.
        import msgspec  # noqa: PLC0415

        text = msgspec.json.encode(document).decode()
    sys.stdout.write(text + "\n")
