"""One worker process: open the vault, build the app, serve HTTPS on the inherited socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn

from ..api import Authenticator, TokenApi
from ..api.auth import parse_networks
from ..api.metrics import METRICS
from ..audit import open_audit
from ..audit.witness import WitnessTorn
from ..config import Settings
from ..errors import AuditTampered, AuditUnavailable, ConfigError, SendvaultError, StoreUnavailable
from ..vault import Vault, open_vault
from .logs import configure_logging
from .protocol import ConnectionLimits, ConnectionTable, protocol_class
from .tls import ReloadableContext, server_context

__all__ = ["build_app", "connection_limits", "run_worker"]

# Audit records of API calls gather this long before the writer takes them (well inside the
# one second within which a record must be visible): fewer, larger transactions.
_AUDIT_LINGER = 0.2
# How long a starting worker waits for the database or an audit witness to answer.
START_WAIT_SECONDS = 60.0

log = logging.getLogger("sendvault.server")


def build_app(settings: Settings) -> TokenApi:
    """The ASGI app with its vault, authenticator and audit log, ready to serve."""
    vault = open_vault(settings)
    try:
        return _app(settings, vault)
    except BaseException:
        vault.close()
        raise


def _app(settings: Settings, vault: Vault) -> TokenApi:
    auth = Authenticator(
        vault.store,
        vault.shared_key("jwt"),
        cache_seconds=settings.auth_cache_seconds,
        token_seconds=settings.token_lifetime_seconds,
        max_failures=settings.auth_max_failures,
        failure_window=settings.auth_failure_window_seconds,
        spacing=settings.auth_failure_spacing_seconds,
    )
    if settings.audit == "off":
        log.warning("audit is off: API calls are not recorded")
    return TokenApi(
        vault,
        auth,
        settings,
        audit=open_audit(settings, linger_seconds=_AUDIT_LINGER) if settings.audit == "on" else None,
    )


def open_app(settings: Settings, *, wait_seconds: float = START_WAIT_SECONDS) -> TokenApi:
    """:func:`build_app`, waiting up to ``wait_seconds`` while the database or an audit witness
    cannot be reached: the main process checked both a moment ago, so this is a restart or a
    blip during start-up, and the worker serves once it is over. Anything else (and a log that
    fails verification) stops the worker at once."""
    deadline = time.monotonic() + wait_seconds
    pause = 0.2
    waiting = False
    while True:
        try:
            app = build_app(settings)
        except (StoreUnavailable, AuditUnavailable) as exc:
            # A torn witness line does not heal by waiting: the operator repairs the file.
            if isinstance(exc, (AuditTampered, WitnessTorn)) or time.monotonic() + pause > deadline:
                raise
            if not waiting:
                log.warning("worker waits to start: %s", exc)
                waiting = True
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        if waiting:
            log.warning("worker starts: the database and audit log answer again")
        return app


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The per-connection limits of the settings (the total within this process's file limit)."""
    return ConnectionLimits(
        head_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        body_min_rate=float(settings.body_min_bytes_per_second),
        per_address=settings.max_connections_per_address,
        total=_connection_room(settings.max_connections),
        exempt=parse_networks(settings.trusted_proxies),
    )


# Descriptors kept for what is not a connection: databases, WAL files, logs, the listening socket.
_SPARE_FILES = 64


def _connection_room(wanted: int) -> int:
    """``wanted``, or fewer if the process may not open that many files.

    Past the file limit accept() fails and the event loop logs an error per attempt, with the
    listening socket still readable: a busy loop that no cap of ours would stop. So the soft
    limit is raised to the hard one where allowed, and the cap kept under it.
    """
    try:
        import resource  # noqa: PLC0415 - POSIX only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = wanted + _SPARE_FILES if hard == resource.RLIM_INFINITY else hard
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except ImportError:
        return wanted
    room = max(1, soft - _SPARE_FILES) if soft != resource.RLIM_INFINITY else wanted
    if room < wanted:
        log.warning(
            "max_connections %d is over this process's file limit (%d); %d connections per worker",
            wanted,
            soft,
            room,
        )
    return min(wanted, room)


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
    """uvicorn's server on inherited sockets, with a TLS handshake deadline, telling the main
    process once it accepts connections, and reloading its certificate on SIGHUP (sent by the
    main process once it has checked the new files)."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_started: Callable[[], None] | None,
        tls: ReloadableContext,
        *,
        handshake_timeout: float,
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._tls = tls
        self._handshake_timeout = handshake_timeout

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own startup, for the inherited-sockets case only, because it has no way to
        # pass the handshake deadline: the event loop's default lets a silent TLS client hold a
        # socket for 60 s before the HTTP protocol (and its limits) ever sees it.
        assert sockets is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            raise SystemExit(3)
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        self.servers = [
            await loop.create_server(
                create_protocol,
                sock=sock,
                ssl=config.ssl,
                backlog=config.backlog,
                ssl_handshake_timeout=self._handshake_timeout,
                ssl_shutdown_timeout=self._handshake_timeout,
            )
            for sock in sockets
        ]
        self.started = True
        if self._on_started is not None:
            self._on_started()

    def _reload(self) -> None:
        try:
            self._tls.reload()
        except ConfigError as exc:
            log.error("certificate not reloaded in this worker: %s", exc)  # noqa: TRY400 - no traceback
        else:
            log.debug("certificate reloaded in this worker")


_server: _Server | None = None


def _stopped(_sig: int, _frame: object) -> None:
    """SIGTERM or SIGINT outside uvicorn's own handlers: before it runs, stop it at its start;
    after its shutdown (it raises the signal again), nothing more to do."""
    if _server is not None:
        _server.should_exit = True


class KeyWatcher:
    """Loads data keys that other processes add (`keys rotate dek`), so new writes move to the
    newest key within seconds; keys already loaded keep serving if the key provider is down."""

    def __init__(self, vault: Vault, seconds: float = 2.0) -> None:
        self._vault = vault
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sendvault-key-watcher", daemon=True)

    def start(self) -> KeyWatcher:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._seconds):
            try:
                self._vault.refresh_keys()
            except SendvaultError as exc:
                if not failing:
                    log.warning("new data keys cannot be loaded yet: %s", exc)
                failing = True
            else:
                failing = False


def run_worker(
    settings: Settings, sock: socket.socket, *, on_started: Callable[[], None] | None = None
) -> None:
    """Serve until the main process stops us; ``on_started`` runs once connections are accepted."""
    configure_logging(settings)
    app = open_app(settings)
    tls = _tls(settings)
    table = ConnectionTable(connection_limits(settings))
    app.connection_pressure = table.saturation
    config = uvicorn.Config(
        app,
        http=protocol_class(table),
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
        timeout_keep_alive=settings.keep_alive_seconds,
        # A stop lets open answers finish, within a bound: the main process kills after 30 s.
        timeout_graceful_shutdown=20,
        ssl_context_factory=lambda _config, _default: tls.base,
    )
    # uvicorn restores the handlers it found and raises the signal that stopped it again once it
    # has shut down; with the default handlers that kills the process before the `finally` below
    # (queued audit records lost, the databases not closed and their WAL not checkpointed).
    global _server  # noqa: PLW0603 - the one server of this process, for the signal handler
    _server = _Server(config, on_started, tls, handshake_timeout=settings.header_timeout_seconds)
    server = _server
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)
    watcher = KeyWatcher(app.vault).start()
    try:
        server.run(sockets=[sock])
    finally:
        watcher.stop()
        app.auth.close()
        app.vault.close()
        if app.audit is not None:
            app.audit.close()
