"""The one exception tree of sendvault.

No exception raised by sendvault ever carries a clear value (an email address, a phone
number, an attribute value or a key): messages name the setting, the input position or a
reason code, never the data. Callers may log any of these messages as they are.

::

    SendvaultError
    ├── ConfigError            a setting is missing, malformed or unsafe (names the setting)
    ├── CryptoError            a ciphertext or key failed to open: one opaque message, fail closed
    │   └── KeyProviderError   the key-encryption key is unusable (missing, unsafe file mode, wrong)
    │       ├── KeyProviderUnavailable  the key manager (OpenBao/Vault) cannot be reached or is sealed
    │       └── StaleKeys      keys changed since this process loaded them; reload and retry
    ├── StoreError             the store could not be read or written
    │   └── StoreUnavailable   the store is down or busy; the request may be retried (HTTP 503)
    ├── AuditUnavailable       audit records cannot be written; requests are refused (HTTP 503)
    │   └── AuditTampered      the log does not match its signed head: stopped, never signed over
    ├── InvalidValue           a value failed normalization; carries a reason code and position
    ├── NotFound               a token or client the caller named does not exist
    └── AuthError              credentials missing, wrong, expired, or not allowed (HTTP 401/403/429)
"""

from __future__ import annotations

__all__ = [
    "AuditTampered",
    "AuditUnavailable",
    "AuthError",
    "ConfigError",
    "CryptoError",
    "InvalidValue",
    "KeyProviderError",
    "KeyProviderUnavailable",
    "NotFound",
    "SchemaOutdated",
    "SchemaTooNew",
    "SendvaultError",
    "StaleKeys",
    "StdoutFailed",
    "StoreError",
    "StoreUnavailable",
]


class SendvaultError(Exception):
    """Base of every error sendvault raises on purpose."""


class StdoutFailed(OSError):
    """Standard output could not be written (a full disk, /dev/full), from a writer that streams
    to it directly: the CLI says so in one line, as for every other command's output."""


class ConfigError(SendvaultError):
    """A setting is missing, malformed or unsafe. The message names the setting.

    ``allowed`` says what the setting accepts, ``source`` where the bad value came from (a file,
    an environment variable, a flag) and ``hint`` what to run; none of them echoes the value.
    """

    def __init__(
        self,
        setting: str,
        problem: str,
        *,
        allowed: str | None = None,
        hint: str | None = None,
        source: str | None = None,
    ) -> None:
        self.setting = setting
        self.problem = problem
        self.allowed = allowed
        self.hint = hint
        self.source = source
        where = " (default)" if source == "default" else f" (from {source})" if source else ""
        text = f"setting {setting}{where}: {problem}"
        super().__init__(text + (f" (allowed: {allowed})" if allowed else ""))

    def with_source(self, source: str | None) -> ConfigError:
        """The same error, saying where the value came from (unless it already does)."""
        if source is None or self.source is not None:
            return self
        return ConfigError(self.setting, self.problem, allowed=self.allowed, hint=self.hint, source=source)


class CryptoError(SendvaultError):
    """A ciphertext could not be opened. Deliberately says nothing about why."""

    def __init__(self, message: str = "ciphertext could not be opened") -> None:
        super().__init__(message)


class KeyProviderError(CryptoError):
    """The key-encryption key is missing, unsafe or does not open the stored data keys."""


class KeyProviderUnavailable(KeyProviderError):
    """The key manager cannot be reached, or is sealed; the same call may succeed later."""


class StaleKeys(KeyProviderError):
    """A write was refused because the vault's keys changed since this process loaded them.

    The vault reloads its keys and retries; callers outside the vault never see it.
    """

    def __init__(self, message: str = "the vault's keys changed; reload them") -> None:
        super().__init__(message)


class WorkerStopped(SendvaultError):
    """A worker process of a bulk job stopped before its part was done (killed, out of memory)."""


class StoreError(SendvaultError):
    """The store failed in a way that is not the caller's fault."""


class StoreUnavailable(StoreError):
    """The store is down or too busy right now; the same request may succeed later.

    ``busy`` marks a lock held by another writer: worth retrying in a moment.
    """

    def __init__(self, message: str = "store unavailable", *, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy


class SchemaOutdated(StoreError):
    """The database's schema is older than this sendvault's; ``sendvault db migrate`` upgrades it."""

    hint = "back up the database, then run: sendvault db migrate (sendvault db status lists what it applies)"


class SchemaTooNew(StoreError):
    """The database was migrated by a newer sendvault; this one must not write to it."""

    hint = "run the sendvault release that migrated it, or newer (sendvault db status lists the versions)"


class AuditUnavailable(SendvaultError):
    """Audit records cannot be written now; the log is mandatory, so the request is refused."""


class AuditTampered(AuditUnavailable):
    """The audit log on disk does not match its signed head (or a witnessed one).

    The writer found it before extending the log: nothing is signed over it, and every request
    is refused until the log verifies again.
    """


class InvalidValue(SendvaultError):
    """A value could not be normalized.

    ``reason`` is a stable code such as ``invalid-email``; ``position`` is the item's index in
    its batch when known. The value itself is never kept.
    """

    def __init__(self, reason: str, position: int | None = None) -> None:
        where = "" if position is None else f" at position {position}"
        super().__init__(f"{reason}{where}")
        self.reason = reason
        self.position = position


class NotFound(SendvaultError):
    """The token, contact or client named by the caller does not exist."""


class AuthError(SendvaultError):
    """Authentication or authorization failed.

    ``status`` is the HTTP status the API answers with (401, 403 or 429); the message is safe to
    show the caller and never says whether a client id exists.
    """

    def __init__(self, message: str, status: int = 401, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
