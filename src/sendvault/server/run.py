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
from wsgiref.simple_server import WSGIServer

from ..config import Settings
from ..errors import ConfigError

__all__ = ["bind", "preflight", "serve"]

log = logging.getLogger("sendvault.server")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            "https_port" if port else "host", f"cannot listen on {host}:{port} ({exc.strerror})"
        ) from None
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
    if not dev:
        from ..vault import open_store  # noqa: PLC0415

        store = open_store(settings)
        try:
            if not store.list_clients():
                raise ConfigError(
                    "clients", "no API clients are configured; add one with: sendvault clients add NAME"
                )
        finally:
            store.close()


def _worker(settings: Settings, sock: socket.socket, metrics_dir: str) -> None:
    # Runs in a spawned process: the metrics directory must be set before prometheus-client loads.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from .worker import run_worker  # noqa: PLC0415

    run_worker(settings, sock)


def serve(settings: Settings, *, dev: bool = False, on_ready: Callable[[], None] | None = None) -> None:
    """Run the server until SIGINT or SIGTERM."""
    preflight(settings, dev=dev)
    https = bind(settings.host, settings.https_port)
    http = bind(settings.host, settings.http_port) if settings.http_port else None
    metrics_dir = tempfile.mkdtemp(prefix="sendvault-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(
            target=_worker, args=(settings, https, metrics_dir), name=f"sendvault-worker-{i}", daemon=False
        )
        for i in range(settings.workers)
    ]
    for proc in workers:
        proc.start()
    try:
        asyncio.run(_main_loop(settings, http, workers, metrics_dir, on_ready))
    finally:
        for proc in workers:
            if proc.is_alive():
                proc.terminate()
        for proc in workers:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
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
    metrics_dir: str,
    on_ready: Callable[[], None] | None,
) -> None:
    from .redirect import start_redirect_server  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    redirect = (
        await start_redirect_server(
            settings.host, settings.http_port, settings.https_port, settings.public_host, sock=http
        )
        if http is not None
        else None
    )
    admin = _start_admin(settings, metrics_dir) if settings.admin_port else None
    if on_ready is not None:
        on_ready()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        dead = [p for p in workers if not p.is_alive()]
        if dead:
            log.error("a worker exited (code %s); stopping", dead[0].exitcode)
            break
    if redirect is not None:
        redirect.close()
        await redirect.wait_closed()
    if admin is not None:
        admin.shutdown()


def _start_admin(settings: Settings, metrics_dir: str) -> WSGIServer:
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    server, _thread = start_http_server(settings.admin_port, addr=settings.admin_host, registry=registry)
    return server
