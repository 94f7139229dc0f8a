"""`sendvault serve`: sockets, worker processes, the 308 listener and the admin listener.

The main process binds every socket, refuses unsafe settings, then starts ``workers`` processes
that share the HTTPS socket and each run the ASGI app under uvicorn. The plain HTTP 308 listener
and the Prometheus admin listener (127.0.0.1 by default, never the public address) run in the
main process. Metrics of all workers are aggregated through prometheus-client's multiprocess
mode.

The main process also logs the start-up and shutdown lines, and reloads the certificate: on
SIGHUP, or when the watch (``tls_reload_seconds``) sees the files change, it checks the new
certificate and key, then tells every worker to serve them to new connections (open
connections, such as Marketing Cloud's keep-alive ones, keep theirs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIServer

from .. import __version__
from ..config import Settings
from ..errors import ConfigError, SendvaultError
from .certfile import CertFacts, file_stamp
from .preflight import bind, preflight

__all__ = ["bind", "preflight", "serve"]

log = logging.getLogger("sendvault.server")


def _initialize(settings: Settings, *, dev: bool = False) -> None:
    """Create what a first start needs (data directory, keys, schema, audit log), once the
    checks have passed; a bad key or a wrong master key still stops start-up here in one line.
    In dev mode an older schema is migrated too (in production that is `sendvault db migrate`)."""
    from ..vault import open_vault  # noqa: PLC0415 - keeps `sendvault --help` light

    open_vault(settings, upgrade=dev).close()
    if settings.audit == "on":
        from ..audit import open_audit  # noqa: PLC0415

        open_audit(settings).close()


def _worker(settings: Settings, sock: socket.socket, metrics_dir: str, ready: Any, parent_pid: int) -> None:
    # Runs in a spawned process. First of all: never outlive the main process.
    from .._orphan import watch_parent  # noqa: PLC0415

    watch_parent(parent_pid)
    # The metrics directory must be set before prometheus-client loads.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from .worker import run_worker  # noqa: PLC0415

    code = 0
    try:
        run_worker(settings, sock, on_started=ready.set)
    except SendvaultError as exc:
        # One line, like every other start-up failure (the main process then says the server
        # stopped); a traceback would add nothing the message does not say.
        log.error("worker stopped: %s", exc)  # noqa: TRY400 - one line, no traceback
        code = 1
    # Everything the worker opened is closed and written: the interpreter's own teardown would
    # only add time (under load a few hundred ms, when an orphan must be gone within a second).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _start_exchange_jobs(settings: Settings) -> Any:
    """The file exchange's scheduled jobs (pull, sweep, status), if the config file has any."""
    if not settings.exchange.schedule:
        return None
    from ..exchange.schedule import Scheduler, audit_recorder  # noqa: PLC0415 - only with jobs

    return Scheduler(settings, audit_recorder(settings)).start()


class _Reencryption:
    """The background re-encryption (and re-indexing) of the main process, with the vault it owns."""

    def __init__(self, settings: Settings) -> None:
        from ..vault import open_vault  # noqa: PLC0415
        from ..vault.lifecycle import BackgroundReencryption  # noqa: PLC0415

        self._settings = settings
        self._vault = open_vault(settings)
        job = BackgroundReencryption(self._vault, share=settings.reencrypt_share)
        job.on_index_done = self._audit_index
        self._job = job.start()

    def _audit_index(self, done: Any) -> None:
        """A finished background re-indexing, and the blind-index key it retired, as audit events
        (the operator's `keys reencrypt` records the same ones)."""
        if self._settings.audit != "on":
            return
        from ..audit import Event, open_audit  # noqa: PLC0415

        audit = open_audit(self._settings)
        try:
            audit.record_sync(
                Event.KEY_REENCRYPT,
                actor="serve",
                meta={"key": "index", "key_id": done.key_id, "complete": done.complete},
                counts={"rows": done.changed, "unreadable": done.unreadable},
            )
            for old in done.retired:
                audit.record_sync(Event.KEY_RETIRE, actor="serve", meta={"key": "index", "key_id": old})
        finally:
            audit.close()

    def stop(self) -> None:
        self._job.stop()
        self._vault.close()


def _start_reencryption(settings: Settings) -> _Reencryption | None:
    """Move rows to the current data key in the background, unless turned off."""
    return _Reencryption(settings) if settings.reencrypt_share > 0 else None


def serve(settings: Settings, *, dev: bool = False, on_ready: Callable[[], None] | None = None) -> None:
    """Run the server until SIGINT or SIGTERM; raise :class:`SendvaultError` if a worker dies."""
    # Until the main loop handles SIGHUP (reload), it is ignored here and in the workers, which
    # inherit the disposition: an early reload must not kill the server.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    started = time.monotonic()
    for finding in preflight(settings, dev=dev):
        if finding.level == "warning":
            log.warning("%s %s", finding.check, finding.message)
    _initialize(settings, dev=dev)
    reencryption = _start_reencryption(settings)
    https = bind(settings.host, settings.https_port, "https_port")
    http = bind(settings.host, settings.http_port, "http_port") if settings.http_port else None
    metrics_dir = tempfile.mkdtemp(prefix="sendvault-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    admin: WSGIServer | None = None
    scheduler: Any = None
    ctx = multiprocessing.get_context("spawn")
    ready = [ctx.Event() for _ in range(settings.workers)]
    workers = [
        ctx.Process(
            target=_worker,
            args=(settings, https, metrics_dir, ready[i], os.getpid()),
            name=f"sendvault-worker-{i}",
            daemon=False,
        )
        for i in range(settings.workers)
    ]
    certs = _Served(settings)
    try:
        # Bound before any worker starts: a busy admin port is a start-up error like the others.
        admin = _start_admin(settings, metrics_dir, certs) if settings.admin_port else None
        for proc in workers:
            proc.start()
        scheduler = _start_exchange_jobs(settings)
        asyncio.run(_main_loop(settings, http, workers, ready, on_ready, certs=certs))
    finally:
        if scheduler is not None:
            scheduler.stop()
        if reencryption is not None:
            reencryption.stop()
        _stop_workers(workers)
        _checkpoint(settings)
        if admin is not None:
            admin.shutdown()
        https.close()
        if http is not None:
            http.close()
        _remove_dir(metrics_dir)
        if any(proc.pid is not None for proc in workers):
            log.info(
                "sendvault stopped",
                extra={"fields": {"event": "stop", "uptime_seconds": round(time.monotonic() - started, 1)}},
            )


def _stop_workers(workers: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """SIGTERM every worker (uvicorn lets open requests finish), then wait; kill after 30 s."""
    for proc in workers:
        if proc.is_alive():
            proc.terminate()
    for proc in workers:
        if proc.pid is not None:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


def _checkpoint(settings: Settings) -> None:
    """Fold the SQLite WAL files into their databases and remove them, once no worker writes.

    Each worker's last connection does so as it closes; this is for a worker that was killed, so
    a stopped server never leaves a WAL behind (it would hold the last records and, after an
    erasure, old page images).
    """
    paths = [settings.home_path / "audit.db"]
    if not settings.database_url or settings.database_url.startswith("sqlite:///"):
        paths.append(settings.sqlite_path)
    for path in paths:
        if not Path(f"{path}-wal").exists():
            continue
        try:
            conn = sqlite3.connect(path, timeout=1.0)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.close()  # the last connection to close removes the WAL file
        except sqlite3.Error as exc:
            log.warning("%s: WAL not checkpointed at stop (%s)", path.name, exc)


def _remove_dir(path: str) -> None:
    for item in Path(path).glob("*"):
        item.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        Path(path).rmdir()


async def _main_loop(
    settings: Settings,
    http: socket.socket | None,
    workers: Sequence[multiprocessing.process.BaseProcess],
    ready: Sequence[Any],
    on_ready: Callable[[], None] | None,
    *,
    certs: _Served,
) -> None:
    from .redirect import start_redirect_server  # noqa: PLC0415

    stop = asyncio.Event()
    stopped_by: list[str] = []
    loop = asyncio.get_running_loop()

    def on_stop(sig: signal.Signals) -> None:
        stopped_by.append(sig.name)
        stop.set()

    reloader = _Reloader(settings, workers, certs)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop, sig)
    loop.add_signal_handler(signal.SIGHUP, reloader.request, "SIGHUP")
    redirect = (
        await start_redirect_server(
            settings.host,
            settings.http_port,
            settings.public_https_port or settings.https_port,
            settings.public_host,
            sock=http,
            names=lambda: certs.facts.names if certs.facts is not None else (),
            head_timeout=settings.header_timeout_seconds,
            max_per_address=settings.max_connections_per_address,
            max_connections=settings.max_connections,
        )
        if http is not None
        else None
    )
    announced = False
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.1 if not announced else 1.0)
            dead = [p for p in workers if not p.is_alive()]
            if dead and not stop.is_set():
                raise SendvaultError(f"a worker exited (code {dead[0].exitcode}); the server stopped")
            # "Serving" only once every worker has opened the vault and is accepting.
            if not announced and all(event.is_set() for event in ready):
                announced = True
                _log_started(settings)
                if on_ready is not None:
                    on_ready()
            if announced:
                reloader.tick()
    finally:
        if stopped_by:
            log.info(
                "sendvault stopping (%s): open requests finish first",
                stopped_by[0],
                extra={"fields": {"event": "stopping", "signal": stopped_by[0]}},
            )
        if redirect is not None:
            redirect.close()
            await redirect.wait_closed()


class _Served:
    """The certificate being served, and how reloads went: for the metrics and the logs."""

    def __init__(self, settings: Settings) -> None:
        from .certfile import read_certificate  # noqa: PLC0415

        self.facts: CertFacts | None = None
        with contextlib.suppress(ConfigError):
            self.facts = read_certificate(settings.cert_path)
        self.reloads = {"ok": 0, "failed": 0}


class _Reloader:
    """Serve a renewed certificate: on SIGHUP, or when the watch sees the files change.

    The main process checks the new files first (a renewal caught half-written, or a key that
    does not match, is logged and the current certificate kept), then signals every worker,
    which builds its new TLS context for new connections.
    """

    def __init__(
        self, settings: Settings, workers: Sequence[multiprocessing.process.BaseProcess], served: _Served
    ) -> None:
        self._settings = settings
        self._workers = workers
        self._served = served
        self._paths = (
            settings.cert_path,
            settings.key_path,
            Path(settings.tls_client_ca_file) if settings.tls_client_ca_file else None,
        )
        self._stamp = file_stamp(*self._paths)
        self._next_look = time.monotonic() + settings.tls_reload_seconds
        self._pending: str | None = None
        self._changed_at = 0.0

    def request(self, why: str) -> None:
        """Reload at the next tick (SIGHUP)."""
        self._pending = why

    def tick(self) -> None:
        """Called about once a second by the main loop."""
        now = time.monotonic()
        interval = self._settings.tls_reload_seconds
        if interval and now >= self._next_look:
            self._next_look = now + interval
            stamp = file_stamp(*self._paths)
            if stamp != self._stamp:
                self._stamp = stamp
                # Renewal tools write the certificate and the key one after the other: wait for
                # a second without change before reading them.
                self._pending, self._changed_at = "file change", now
                self._next_look = now + 1
                return
        if self._pending is None or (self._pending == "file change" and now - self._changed_at < 1):
            return
        why, self._pending = self._pending, None
        self._stamp = file_stamp(*self._paths)
        self._reload(why)

    def _reload(self, why: str) -> None:
        settings = self._settings
        try:
            facts = _check_renewal(settings)
        except ConfigError as exc:
            self._served.reloads["failed"] += 1
            log.error(  # noqa: TRY400 - a bad file, not a bug: one line, no traceback
                "certificate not reloaded (%s): %s; still serving the previous one",
                why,
                exc,
                extra={"fields": {"event": "cert-reload-failed", "reason": why}},
            )
            return
        for proc in self._workers:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGHUP)
        self._served.facts = facts
        self._served.reloads["ok"] += 1
        days = facts.seconds_left() / 86400
        log.info(
            "certificate reloaded (%s): %s, expires %s (%.0f days)",
            why,
            facts.subject,
            f"{facts.not_after:%Y-%m-%d}",
            days,
            extra={
                "fields": {
                    "event": "cert-reload",
                    "reason": why,
                    "serial": f"{facts.serial:x}",
                    "not_after": facts.not_after.isoformat(),
                }
            },
        )


def _standby_label(settings: Settings) -> str:
    if not settings.database_read_url:
        return ""
    url = urlsplit(settings.database_read_url)
    return f" (resolve reads from standby {url.hostname or 'localhost'}:{url.port or 5432})"


def _check_renewal(settings: Settings) -> CertFacts:
    """The new certificate files as the listener would load them, and valid today.

    Raises ConfigError naming the setting; a renewal never installs what callers refuse.
    """
    from .certfile import read_certificate  # noqa: PLC0415
    from .tls import server_context  # noqa: PLC0415

    facts = read_certificate(settings.cert_path, settings.key_path)
    server_context(
        settings.cert_path,
        settings.key_path,
        min_version=settings.tls_min_version,
        client_ca_file=Path(settings.tls_client_ca_file) if settings.tls_client_ca_file else None,
        client_cert=settings.tls_client_cert,
    )
    problem = facts.validity_problem()
    if problem is not None:
        raise ConfigError("tls_cert_file", f"{settings.cert_path}: the new certificate {problem}")
    return facts


def _log_started(settings: Settings) -> None:
    from .preflight import database_label  # noqa: PLC0415

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    https = f"https://{host}:{settings.https_port}"
    http = f"http://{host}:{settings.http_port}" if settings.http_port else None
    admin_host = f"[{settings.admin_host}]" if ":" in settings.admin_host else settings.admin_host
    metrics = f"http://{admin_host}:{settings.admin_port}/metrics" if settings.admin_port else None
    fields = {
        "event": "start",
        "version": __version__,
        "url": https,
        "redirect": http,
        "metrics": metrics,
        "database": database_label(settings) + _standby_label(settings),
        "key_provider": settings.key_provider,
        "workers": settings.workers,
        "audit": settings.audit,
        "pid": os.getpid(),
    }
    log.info(
        "sendvault %s serving %s (%s; metrics %s); database %s; key provider %s; %d worker(s); audit %s",
        __version__,
        https,
        f"{http} answers 308" if http else "no plain HTTP listener",
        metrics or "off",
        fields["database"],
        settings.key_provider,
        settings.workers,
        settings.audit,
        extra={"fields": fields},
    )


def _start_admin(settings: Settings, metrics_dir: str, certs: _Served) -> WSGIServer:
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    from .status import StatusCollector  # noqa: PLC0415

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    # The operator's facts (certificate expiry, audit health, keys) beside the workers' counters.
    registry.register(
        StatusCollector(settings, served=lambda: certs.facts, reloads=lambda: dict(certs.reloads))
    )
    try:
        server, _thread = start_http_server(settings.admin_port, addr=settings.admin_host, registry=registry)
    except OSError as exc:
        where = f"{settings.admin_host}:{settings.admin_port}"
        raise ConfigError("admin_port", f"cannot listen on {where} ({exc.strerror})") from None
    return server
