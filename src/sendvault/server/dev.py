"""`serve --dev`: a data directory, a local CA, a server certificate and a `dev` client.

Everything a first run needs on a fresh machine, nothing else installed. The dev client's secret
is kept across restarts (read back from `dev-client.json`, mode 0600) rather than rotated.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
from pathlib import Path
from typing import Any

from .._fs import check_replaceable, write_atomic
from ..api.auth import register_client, verify_secret
from ..audit import Event, open_audit
from ..config import Settings
from ..errors import AuthError
from ..vault import open_store
from .certs import CertAuthority

__all__ = ["DEV_CLIENT", "curl_example", "prepare_dev", "write_dev_client"]

DEV_CLIENT = "dev"
_PREVIOUS = "dev-client.previous.json"  # dev-client.json of the last start, until this one serves
_DEV_NAMES = ["localhost", "127.0.0.1", "::1"]


def _dev_host(settings: Settings) -> str:
    return "127.0.0.1" if settings.host in ("0.0.0.0", "127.0.0.1", "localhost", "::", "") else settings.host  # noqa: S104


def prepare_dev(settings: Settings) -> dict[str, Any]:
    """Create what dev mode needs; returns the content of dev-client.json (written once serving)."""
    home = settings.home_path
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    dev_file, aside = home / "dev-client.json", home / _PREVIOUS
    previous: dict[str, Any] = {}
    # The secret lives only in this file (the store keeps its hash): read it back, from the file
    # set aside by an earlier start that then failed if need be, so it is never rotated by one.
    for source in (dev_file, aside):
        if not source.is_file():  # a FIFO would hold the start for ever, a device feed it
            continue
        try:
            previous = json.loads(source.read_text())
            break
        except (OSError, ValueError):
            continue
    if os.path.lexists(dev_file):
        check_replaceable(dev_file, aside)  # a device there is refused, not renamed and removed
        dev_file.replace(aside)  # a stale file must not look like a ready server
    ca = CertAuthority.load_or_create(home / "certs")
    if settings.tls_cert_file is None and not (settings.cert_path.exists() and settings.key_path.exists()):
        ca.issue(settings.cert_path, settings.key_path, _DEV_NAMES)

    store = open_store(settings, upgrade=True)  # dev mode migrates an older schema itself
    try:
        secret = previous.get("password") if isinstance(previous.get("password"), str) else None
        record = store.get_client(DEV_CLIENT)
        keep = False
        if record is not None and secret:
            try:
                verify_secret(secret, record.secret_hash)
                keep = True
            except AuthError:
                keep = False
        if not keep:
            secret = register_client(store, DEV_CLIENT, scopes="resolve tokenize")
    finally:
        store.close()
    if not keep:
        _record_dev_client(settings, replaced=record is not None)
    assert secret is not None
    url = f"https://{_dev_host(settings)}:{settings.https_port}"
    return {
        "url": url,
        "username": DEV_CLIENT,
        "password": secret,
        "ca_file": str(ca.cert_path.absolute()),
        "token_url": url + "/oauth/token",
    }


def _record_dev_client(settings: Settings, *, replaced: bool) -> None:
    """Record the dev client's creation (or new secret) like `clients add`, before serving."""
    meta = {
        "client": DEV_CLIENT,
        "scopes": "resolve tokenize",
        "allow": "",
        "tokenize_rate": 0.0,
        "dev": True,
    }
    if replaced:
        meta["replaced"] = True  # its secret was lost with dev-client.json: a new one was made
    log = open_audit(settings)
    try:
        log.record_sync(Event.CLIENT_ADD, actor=f"cli:{getpass.getuser()}", meta=meta)
    finally:
        log.close()


def write_dev_client(settings: Settings, content: dict[str, Any]) -> Path:
    """Write dev-client.json (0600, atomically) and return its path."""
    path = settings.home_path / "dev-client.json"
    write_atomic(path, (json.dumps(content, indent=2) + "\n").encode())
    (settings.home_path / _PREVIOUS).unlink(missing_ok=True)
    return path


def curl_example(content: dict[str, Any]) -> str:
    """A ready curl command that gets a token for an address through the dev client."""
    body = '{"tokenValues":[{"tokenRequestId":"1","tokenValue":"someone@example.com","tokenType":"Email"}]}'
    return " ".join(
        [
            "curl",
            "--cacert",
            shlex.quote(content["ca_file"]),
            "-u",
            shlex.quote(f"{content['username']}:{content['password']}"),
            "-H",
            shlex.quote("Content-Type: application/json"),
            "-d",
            shlex.quote(body),
            shlex.quote(content["url"] + "/v1/mc/tokens"),
        ]
    )
