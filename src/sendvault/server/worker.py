"""One worker process: open the vault, build the app, serve HTTPS on the inherited socket."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..api import Authenticator, TokenApi
from ..api.metrics import METRICS
from ..audit import open_audit
from ..config import Settings
from ..errors import ConfigError
from ..vault import open_vault
from .logs import configure_logging
from .tls import ReloadableContext, server_context

__all__ = ["build_app", "run_worker"]

# Audit records of API calls gather this long before the writer takes them (well inside the
# one second within which a record must be visible): fewer, larger transactions.
_AUDIT_LINGER = 0.2

log = logging.getLogger("sendvault.server")


class TlsAwareProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol plus the ASGI TLS extension (version and cipher) for the audit log."""

    _tls: dict[str, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        obj = transport.get_extra_info("ssl_object")
        cipher = obj.cipher() if obj is not None else None
        self._tls = (
            {"version": str(obj.version()), "cipher": cipher[0]} if obj is not None and cipher else None
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]


def build_app(settings: Settings) -> TokenApi:
    """The ASGI app with its vault, authenticator and audit log, ready to serve."""
    vault = open_vault(settings)
    auth = Authenticator(
        vault.store,
        vault.shared_key("jwt"),
        cache_seconds=settings.auth_cache_seconds,
        token_seconds=settings.token_lifetime_seconds,
        max_failures=settings.auth_max_failures,
        failure_window=settings.auth_failure_window_seconds,
    )
    if settings.audit == "off":
        log.warning("audit is off: API calls are not recorded")
    return TokenApi(
        vault,
        auth,
        settings,
        audit=open_audit(settings, linger_seconds=_AUDIT_LINGER) if settings.audit == "on" else None,
    )


def _tls(settings: Settings) -> ReloadableContext:
    def build() -> ssl.SSLContext:
        return server_context(
            settings.cert_path,
            settings.key_path,
            min_version=settings.tls_min_version,
            client_ca_file=Path(settings.tls_client_ca_file) if settings.tls_client_ca_file else None,
            client_cert=settings.tls_client_cert,
            on_failure=METRICS.tls_failure,
        )

    return ReloadableContext(build)


class _Server(uvicorn.Server):
    """uvicorn's server, telling the main process once it accepts connections, and reloading
    its certificate on SIGHUP (sent by the main process once it has checked the new files)."""

    def __init__(
        self, config: uvicorn.Config, on_started: Callable[[], None] | None, tls: ReloadableContext
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._tls = tls

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._reload)
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    def _reload(self) -> None:
        try:
            self._tls.reload()
        except ConfigError as exc:
            log.error("certificate not reloaded in this worker: %s", exc)  # noqa: TRY400 - no traceback
        else:
            log.debug("certificate reloaded in this worker")


def run_worker(
    settings: Settings, sock: socket.socket, *, on_started: Callable[[], None] | None = None
) -> None:
    """Serve until the main process stops us; ``on_started`` runs once connections are accepted."""
    configure_logging(settings)
    app = build_app(settings)
    tls = _tls(settings)
    config = uvicorn.Config(
        app,
        http=TlsAwareProtocol,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        # Our handler and format (server/logs.py), not uvicorn's own.
        log_config=None,
        log_level=None,
        server_header=False,
        # uvicorn would otherwise take X-Forwarded-For from any loopback peer as the caller's
        # address, before the app's allowlists see it: `trusted_proxies` alone decides that.
        proxy_headers=False,
        timeout_keep_alive=75,
        ssl_context_factory=lambda _config, _default: tls.base,
    )
    try:
        _Server(config, on_started, tls).run(sockets=[sock])
    finally:
        app.auth.close()
        app.vault.close()
        if app.audit is not None:
            app.audit.close()
