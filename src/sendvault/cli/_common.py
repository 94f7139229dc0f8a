"""What every command shares: the settings/vault context, input reading, one-line errors."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from ..errors import (
    AuditTampered,
    ConfigError,
    CryptoError,
    InvalidValue,
    KeyProviderError,
    SendvaultError,
    StoreError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from ..audit import AuditLog, Event
    from ..config import Settings
    from ..vault import Vault

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "AppContext",
    "FloatRange",
    "changes_state",
    "emit_json",
    "fail",
    "pass_app",
    "read_args",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C stopped

_HINTS: list[tuple[type[SendvaultError], str]] = [
    (
        AuditTampered,
        (
            "run `sendvault audit verify` (with the trusted public key) to see what differs; commands"
            " that change state are refused until the log verifies"
        ),
    ),
    (
        ConfigError,
        "fix it where it is set (docs/configuration.md lists every setting); then: sendvault config check",
    ),
    (
        KeyProviderError,
        "check SENDVAULT_MASTER_KEY or $SENDVAULT_HOME/keys/master.key; sendvault config check says more",
    ),
    (CryptoError, "the stored data does not open with the configured keys"),
    (StoreError, "check that the database is reachable and writable: sendvault config check"),
]
# A SQLite write lock held by another process for longer than this one waits (busy timeout).
_LOCKED_HINT = (
    "another process held the database's write lock longer than this one waits "
    "(sqlite_busy_timeout_ms), e.g. a csv tokenize with a long sqlite_bulk_lock_seconds: "
    "run it again, or raise SENDVAULT_SQLITE_BUSY_TIMEOUT_MS"
)

# What each reason code of InvalidValue means to someone at a terminal: (problem, what to do).
REASONS: dict[str, tuple[str, str]] = {
    "invalid-client-id": (
        "a client name is 1 to 128 characters without spaces, tabs, line breaks or ':'",
        "e.g. sendvault clients add marketing-cloud",
    ),
    "invalid-network": (
        "not an IP network",
        "write CIDRs such as 198.51.100.0/24 or 2001:db8::/32 (a bare address is one host)",
    ),
    "unknown-scope": ("unknown scope", "scopes are resolve and tokenize, e.g. --scopes resolve"),
    "invalid-attribute-name": (
        "an attribute name is letters, digits, '_' or '-'",
        "write attributes as Name=value, e.g. FirstName=Ann",
    ),
    "invalid-attribute-value": (
        "an attribute value is too long or not text",
        "keep values short and in UTF-8",
    ),
    "invalid-email": ("not a valid email address", "give the address as someone@example.com"),
    "invalid-mobile": ("not a possible mobile number", "give it with its country code, e.g. 447700900123"),
    "mobile-needs-country-code": (
        "a number in national form needs a country code",
        "add the country code, or set default_region (e.g. GB)",
    ),
    "empty-value": ("the value is empty", "give a non-empty value"),
    "unknown-type": ("unknown type", "types are email and mobile"),
}


class AppContext:
    """Lazily loaded settings and vault for one CLI invocation."""

    def __init__(self, config_file: Path | None = None) -> None:
        self.config_file = config_file
        # Command-line options that are settings (`serve --https-port`); they win over the rest.
        self.overrides: dict[str, Any] = {}
        self._settings: Settings | None = None
        self._sources: dict[str, str] | None = None
        self._vault: Vault | None = None
        self._audit: AuditLog | None = None

    @property
    def settings(self) -> Settings:
        """Settings, loaded once."""
        if self._settings is None:
            from ..config import load_settings_with_sources  # noqa: PLC0415 - `scan` never needs them

            self._settings, self._sources = load_settings_with_sources(
                self.config_file, overrides=self.overrides
            )
        return self._settings

    @property
    def loaded_settings(self) -> Settings | None:
        """The settings if they loaded, else None (never loads them)."""
        return self._settings

    @property
    def loaded_sources(self) -> dict[str, str] | None:
        """The sources if the settings loaded, else None (never loads them)."""
        return self._sources

    @property
    def sources(self) -> dict[str, str]:
        """Where each setting's value came from (loads the settings)."""
        if self._sources is None:
            _ = self.settings
        assert self._sources is not None
        return self._sources

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

            # Checked against its signed head (and witnesses) when opened: a command refuses to
            # run on a log that does not verify rather than chain its record onto a forgery.
            self._audit = open_audit(self.settings, refuse_tampered=True)
            click.get_current_context().call_on_close(self._audit.close)
        return self._audit

    def check_audit(self) -> None:
        """Before a command changes state: the audit log must verify against its signed head.

        Raises :class:`~sendvault.errors.AuditTampered` (one line and a hint, exit 1) before
        anything is changed.
        """
        try:
            _ = self.audit
        except AuditTampered as exc:
            raise AuditTampered(f"the audit log does not verify ({exc}): nothing was changed") from None

    def record(self, event: Event, **fields: Any) -> None:
        """Record a state change made by this command and wait until it is written."""
        import getpass  # noqa: PLC0415 - only commands that write the audit log need it

        self.audit.record_sync(event, actor=f"cli:{getpass.getuser()}", **fields)


pass_app = click.make_pass_decorator(AppContext)
F = TypeVar("F", bound=Callable[..., Any])


def changes_state(fn: F) -> F:
    """Mark a command that changes state (and records it): before it runs, the audit log must
    verify against its signed head (:meth:`AppContext.check_audit`). Goes under ``@pass_app``."""

    @functools.wraps(fn)
    def checked(app: AppContext, /, *args: Any, **kwargs: Any) -> Any:
        app.check_audit()
        return fn(app, *args, **kwargs)

    return cast("F", checked)


@contextlib.contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Ctrl-C does nothing until the block is done: for the last steps of a run whose work is
    done (its output in place), which must all happen (its audit record above all). Only the
    main thread can hold it; elsewhere Ctrl-C cannot reach the block anyway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def fail(message: str, hint: str | None = None, code: int = EXIT_FAILURE) -> NoReturn:
    """Print one error line (and a hint) to stderr and exit with ``code``.

    A usage error without a hint of its own points at the command's help.
    """
    if hint is None and code == EXIT_USAGE:
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            hint = f"see `{ctx.command_path} --help`"
    from ._output import printable  # noqa: PLC0415

    # Printable: a message may quote what a file or a server held (terminal escapes).
    click.echo(f"error: {printable(message)}", err=True)
    if hint:
        click.echo(f"hint: {printable(hint)}", err=True)
    sys.exit(code)


# A KEK error's hint names where *this* provider's KEK comes from (the class's names the local one).
_PROVIDER_HINTS = {
    "sealed": (
        "check SENDVAULT_MASTER_PASSPHRASE (or the passphrase typed at the prompt) and "
        "$SENDVAULT_HOME/keys/master.sealed; sendvault config check says more"
    ),
    "transit": (
        "check transit_url, transit_token and transit_key, and that OpenBao (or Vault) answers; "
        "sendvault config check says more"
    ),
}


def hint_for(exc: SendvaultError, key_provider: str | None = None) -> str | None:
    """The hint shown under an error: its own when it has one, else its class's (for a KEK
    error, the configured ``key_provider``'s)."""
    own = getattr(exc, "hint", None)
    if isinstance(own, str) and own:
        return own
    if isinstance(exc, KeyProviderError) and key_provider in _PROVIDER_HINTS:
        return _PROVIDER_HINTS[key_provider]
    if isinstance(exc, StoreUnavailable) and exc.busy:
        return _LOCKED_HINT
    for cls, hint in _HINTS:
        if isinstance(exc, cls):
            return hint
    return None


def describe_error(exc: SendvaultError, sources: dict[str, str] | None = None) -> str:
    """One line for an error: a setting's names where its value came from and what it allows;
    a reason code becomes words."""
    if isinstance(exc, ConfigError):
        if exc.setting == "config":
            return f"config file: {exc.problem}"
        if exc.setting == "clients":
            return exc.problem
        from ..config import Settings, allowed_text  # noqa: PLC0415

        known = exc.setting in Settings.__struct_fields__
        allowed = exc.allowed or (allowed_text(exc.setting) if known else None)
        source = exc.source or (sources or {}).get(exc.setting)
        return str(ConfigError(exc.setting, exc.problem, allowed=allowed, source=source))
    if isinstance(exc, InvalidValue) and exc.reason in REASONS:
        where = "" if exc.position is None else f" (item {exc.position})"
        return f"{REASONS[exc.reason][0]}{where}"
    return str(exc)


def reason_hint(exc: SendvaultError) -> str | None:
    """The hint for an InvalidValue reason code, when there is one."""
    if isinstance(exc, InvalidValue) and exc.reason in REASONS:
        return REASONS[exc.reason][1]
    return None


def read_args(values: Sequence[str]) -> Iterator[str]:
    """The command's values; a lone ``-`` reads one value per line from stdin."""
    if list(values) == ["-"]:
        for line in sys.stdin:
            yield line.rstrip("\r\n")
    else:
        yield from values


class FloatRange(click.FloatRange):
    """click.FloatRange without NaN, which it lets through: every comparison with NaN is false,
    so no bound refuses it, and `--timeout nan` reached a socket as a timeout."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


class OutputFile(click.Path):
    """The path of a file a command writes (renamed into place whole): refused, as a usage
    error, when it cannot be a new or regular file: empty, ending with a slash or ``/.``, under
    a file or a dangling link, or naming a device (run as root, ``--output /dev/null`` replaced
    the device), a FIFO, a socket, a folder or a symbolic link."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Path):
            return value
        from .._fs import output_problem  # noqa: PLC0415

        text = str(value)
        why = output_problem(text)
        if why is not None:
            self.fail(f"{text!r} {why}.", param, ctx)
        return Path(text)


@contextlib.contextmanager
def stdout_errors() -> Iterator[None]:
    """Write to standard output in the block, and flush it: a full disk or a closed device is
    one error line and exit 2 rather than a traceback (or Python's exit 120 at exit). A closed
    pipe (`| head`) stays click's: exit 1, quietly."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        from ._output import stdout_failed  # noqa: PLC0415

        stdout_failed(exc)


def emit_json(document: object) -> None:
    """Write one JSON document to stdout, compact and UTF-8 (as msgspec writes it)."""
    try:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except TypeError:
        # Structs, bytes and dates: msgspec knows them. Plain documents (every scan report)
        # skip its import, which is a tenth of a CI scan's start-up.
        import msgspec  # noqa: PLC0415

        text = msgspec.json.encode(document).decode()
    with stdout_errors():  # `--json > /dev/full`: the standard-output error, not a disk error
        sys.stdout.write(text + "\n")
