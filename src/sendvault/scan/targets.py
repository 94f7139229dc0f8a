"""`scan all --targets FILE.toml`: many targets of every kind, one report.

```toml
[[tls]]
target = "api.example.com:443"     # sni, starttls, ca optional
[[http]]
url = "http://api.example.com/v1/mc"
[[content]]
target = "templates/"              # a URL, file or directory; crawl optional
[[code]]
path = "."
[[db]]
kind = "mysql"
target = "db.example.com:3306"     # ca, cert, key, user optional; password from the environment
[client]                           # include to check this host's clients
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .findings import CheckResult

__all__ = ["scan_targets"]


def _host_port(target: str, default: int) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else (target, default)


def scan_targets(path: Path) -> list[CheckResult]:
    """Run every check the targets file names; raises ValueError for a malformed file."""
    try:
        doc: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    unknown = set(doc) - {"tls", "http", "content", "code", "db", "client"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}")
    results: list[CheckResult] = []
    try:
        results += _run(doc)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: a target lacks a field ({exc})") from None
    return results


def _run(doc: dict[str, Any]) -> list[CheckResult]:
    from .client import scan_client  # noqa: PLC0415 - load only the checks the file names
    from .code import scan_code  # noqa: PLC0415
    from .content import scan_content  # noqa: PLC0415
    from .db import scan_db  # noqa: PLC0415
    from .http import scan_http  # noqa: PLC0415
    from .tls import scan_tls  # noqa: PLC0415

    out: list[CheckResult] = []
    for t in doc.get("tls", []):
        host, port = _host_port(t["target"], 443)
        out.append(scan_tls(host, port, sni=t.get("sni"), starttls=t.get("starttls"), ca_file=t.get("ca")))
    out += [scan_http(t["url"], ca_file=t.get("ca")) for t in doc.get("http", [])]
    out += [scan_content(t["target"], crawl=int(t.get("crawl", 0))) for t in doc.get("content", [])]
    out += [scan_code(t["path"]) for t in doc.get("code", [])]
    for t in doc.get("db", []):
        host, port = _host_port(t["target"], 3306 if t["kind"] == "mysql" else 5432)
        out.append(
            scan_db(
                t["kind"], host, port, ca_file=t.get("ca"), cert_file=t.get("cert"), key_file=t.get("key"),
                user=t.get("user"),
            )
        )  # fmt: skip
    if "client" in doc:
        out.append(scan_client())
    return out
