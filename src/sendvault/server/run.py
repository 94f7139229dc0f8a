"""`sendvault serve`: sockets, worker processes, the 308 listener and the admin listener.

The main process binds every socket, refuses unsafe settings, then starts ``workers`` processes
that share the HTTPS socket and each run the ASGI app under uvicorn. The plain HTTP 308 listener
and the Prometheus admin listener (127.0.0.1 by default, never the public address) run in the
main process. Metrics of all workers are aggregated through prometheus-client's multiprocess
mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from ..config import Settings
from ..errors import ConfigError, SendvaultError

__all__ = ["bind", "preflight", "serve"]

log = logging.getLogger("sendvault.server")


def bind(host: str, port: int, setting: str = "https_port") -> socket.socket:
    """A listening TCP socket (IPv6 when ``host`` is an IPv6 address); ``setting`` names the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(setting, f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def preflight(settings: Settings, *, dev: bool) -> None:
    """Refuse to start with unsafe settings: one clear ConfigError naming the problem."""
    from ..server.tls import server_context  # noqa: PLC0415 - keeps `sendvault --help` light

    server_context(
        settings.cert_path,
        settings.key_path,
        min_version=settings.tls_min_version,
        client_ca_file=Path(settings.tls_client_ca_file) if settings.tls_client_ca_file else None,
        client_cert=settings.tls_client_cert,
    )
    # The keys, the store and the audit log open here once, so a bad key file or a wrong master
    # key stops start-up with one line, before any worker starts or "serving" is printed.
    from ..vault import open_vault  # noqa: PLC0415

    vault = open_vault(settings)
    try:
        if not dev and not vault.store.list_clients():
            raise ConfigError(
                "clients", "no API clients are configured; add one with: sendvault clients add NAME"
            )
    finally:
        vault.close()
    if settings.audit == "on":
        from ..audit import open_audit  # noqa: PLC0415

        open_audit(settings).close()


def _worker(settings: Settings, sock: socket.socket, metrics_dir: str, ready: Any) -> None:
    # Runs in a spawned process: the metrics directory must be set before prometheus-client loads.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from .worker import run_worker  # noqa: PLC0415

    run_worker(settings, sock, on_started=ready.set)


def serve(settings: Settings, *, dev: bool = False, on_ready: Callable[[], None] | None = None) -> None:
    """Run the server until SIGINT or SIGTERM; raise :class:`SendvaultError` if a worker dies."""
    preflight(settings, dev=dev)
    https = bind(settings.host, settings.https_port, "https_port")
    http = bind(settings.host, settings.http_port, "http_port") if settings.http_port else None
    metrics_dir = tempfile.mkdtemp(prefix="sendvault-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    admin: WSGIServer | None = None
    ctx = multiprocessing.get_context("spawn")
    ready = [ctx.Event() for _ in range(settings.workers)]
    workers = [
        ctx.Process(
            target=_worker,
            args=(settings, https, metrics_dir, ready[i]),
            name=f"sendvault-worker-{i}",
            daemon=False,
        )
        for i in range(settings.workers)
    ]
    try:
        # Bound before any worker starts: a busy admin port is a start-up error like the others.
        admin = _start_admin(settings, metrics_dir) if settings.admin_port else None
        for proc in workers:
            proc.start()
        asyncio.run(_main_loop(settings, http, workers, ready, on_ready))
    finally:
        for proc in workers:
            if proc.is_alive():
                proc.terminate()
        for proc in workers:
            if proc.pid is not None:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
        if admin is not None:
            admin.shutdown()
        https.close()
        if http is not None:
            http.close()
        for path in Path(metrics_dir).glob("*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            Path(metrics_dir).rmdir()


async def _main_loop(
    settings: Settings,
    http: socket.socket | None,
    workers: Sequence[multiprocessing.process.BaseProcess],
    ready: Sequence[Any],
    on_ready: Callable[[], None] | None,
) -> None:
    from .redirect import start_redirect_server  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    redirect = (
        await start_redirect_server(
            settings.host,
            settings.http_port,
            settings.public_https_port or settings.https_port,
            settings.public_host,
            sock=http,
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
                if on_ready is not None:
                    on_ready()
    finally:
        if redirect is not None:
            redirect.close()
            await redirect.wait_closed()


def _start_admin(settings: Settings, metrics_dir: str) -> WSGIServer:
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    try:
        server, _thread = start_http_server(settings.admin_port, addr=settings.admin_host, registry=registry)
    except OSError as exc:
        where = f"{settings.admin_host}:{settings.admin_port}"
        raise ConfigError("admin_port", f"cannot listen on {where} ({exc.strerror})") from None
    return server
