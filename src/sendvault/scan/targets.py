"""`scan all --targets FILE.toml`: many targets of every kind, one report.

```toml
[[tls]]
target = "api.example.com:443"     # sni, starttls (mysql|postgres), ca optional
[[http]]
url = "http://api.example.com/v1/mc"   # ca optional
[[content]]
target = "templates/"              # a URL, file or directory; crawl optional
[[code]]
path = "."
[[db]]
kind = "mysql"                     # mysql or postgres
target = "db.example.com:3306"     # ca, cert, key, user optional; password_env optional
[[ssh]]
target = "sftp.example.com"        # port 22 unless given; fingerprints = true optional
[client]                           # include to check this host's clients
```

Relative paths are taken from the targets file's folder. A database password is never written
in the file: it comes from the environment variable named by ``password_env`` (default
``SENDVAULT_SCAN_DB_PASSWORD``). The whole file is checked before any scan starts; then each
target gets its own result, and one that cannot be scanned is ``*.unknown`` while the rest run.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without the typing import
if TYPE_CHECKING:  # only annotations: `scan ssh` loads no more than it needs
    from pathlib import Path
    from typing import Any

    from .findings import CheckResult

__all__ = ["DB_PASSWORD_ENV", "host_port", "scan_targets"]

DB_PASSWORD_ENV = "SENDVAULT_SCAN_DB_PASSWORD"

# section: (required fields, optional fields, fields that are paths)
_FIELDS: dict[str, tuple[set[str], set[str], set[str]]] = {
    "tls": ({"target"}, {"sni", "starttls", "ca"}, {"ca"}),
    "http": ({"url"}, {"ca"}, {"ca"}),
    "content": ({"target"}, {"crawl"}, {"target"}),
    "code": ({"path"}, set(), {"path"}),
    "db": ({"kind", "target"}, {"ca", "cert", "key", "user", "password_env"}, {"ca", "cert", "key"}),
    "ssh": ({"target"}, {"fingerprints"}, set()),
}
_CHOICES = {"kind": ("mysql", "postgres"), "starttls": ("mysql", "postgres")}
_DB_PORTS = {"mysql": 3306, "postgres": 5432}


def host_port(target: str, default: int) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]`` or ``[IPv6]:PORT`` (a bare IPv6 address takes ``default``).

    Raises ValueError when the port is not a number from 1 to 65535.
    """
    if target.startswith("["):
        host, sep, port = target[1:].partition("]:")
        host = host.rstrip("]")
    else:
        host, sep, port = target.rpartition(":") if target.count(":") == 1 else (target, "", "")
    if not sep:
        return target.strip("[]"), default
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{target!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def plain_host(host: str) -> bool:
    """Whether ``host`` can be a host name or address: not blank, and printable: no terminal
    escapes, and no undecodable bytes from the command line (lone surrogates are not printable)."""
    return bool(host.strip()) and host.isprintable()


def scan_targets(path: Path) -> list[CheckResult]:
    """Run every check the targets file names; raises ValueError for a malformed file."""
    import tomllib  # noqa: PLC0415 - only `scan all` reads TOML; `scan tls` starts without it

    try:
        doc: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    try:
        plan = _plan(doc, path.parent)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return _run(plan, client="client" in doc)


def _plan(doc: dict[str, Any], base: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every target of the file, checked and with its paths made absolute."""
    unknown = set(doc) - {*_FIELDS, "client"}
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}")
    _shape(isinstance(doc.get("client", {}), dict), "write [client], a table")
    plan = []
    for section in _FIELDS:
        entries = doc.get(section, [])
        _shape(
            isinstance(entries, list) and all(isinstance(e, dict) for e in entries),
            f"write [[{section}]], an array of tables",
        )
        plan += [
            (section, _entry(section, e, base, f"[[{section}]] number {n}")) for n, e in enumerate(entries, 1)
        ]
    return plan


def _shape(ok: bool, message: str) -> None:
    # A wrong TOML type is one more way for the file to be malformed: the CLI's usage error.
    if not ok:
        raise ValueError(message)


def _entry(section: str, raw: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    required, optional, paths = _FIELDS[section]
    if missing := required - set(raw):
        raise ValueError(f"{where} lacks {', '.join(sorted(missing))}")
    if extra := set(raw) - required - optional:
        raise ValueError(f"{where}: unknown fields {sorted(extra)}")
    entry = dict(raw)
    for field, value in raw.items():
        if field == "fingerprints":
            _shape(isinstance(value, bool), f"{where}: {field} must be true or false")
            continue
        number = field == "crawl"
        _shape(
            isinstance(value, int if number else str) and not isinstance(value, bool),
            f"{where}: {field} must be {'a number' if number else 'text'}",
        )
        if field in _CHOICES and value not in _CHOICES[field]:
            raise ValueError(f"{where}: {field} must be one of {', '.join(_CHOICES[field])}")
        if field in paths and not value.startswith(("http://", "https://")):
            entry[field] = str(base / value)  # an absolute value stays as it is
    if section in ("tls", "db", "ssh"):
        default = (
            22 if section == "ssh" else _DB_PORTS.get(entry.get("kind") or entry.get("starttls") or "", 443)
        )
        try:
            entry["host"], entry["port"] = host_port(entry["target"], default)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not plain_host(entry["host"]):
            raise ValueError(f"{where}: {entry['target']!r} is not a host name or address")
    if section == "db":
        entry["password"] = _password(entry, where)
    return entry


def _password(entry: dict[str, Any], where: str) -> str | None:
    name = entry.get("password_env")
    if name is not None and name not in os.environ:
        raise ValueError(f"{where}: the environment variable {name} is not set")
    return os.environ.get(name or DB_PASSWORD_ENV) if entry.get("user") else None


def _run(plan: list[tuple[str, dict[str, Any]]], *, client: bool) -> list[CheckResult]:
    from .client import scan_client  # noqa: PLC0415 - load only the checks the file names
    from .code import scan_code  # noqa: PLC0415
    from .content import scan_content  # noqa: PLC0415
    from .db import scan_db  # noqa: PLC0415
    from .http import scan_http  # noqa: PLC0415
    from .ssh import scan_ssh  # noqa: PLC0415
    from .tls import scan_tls  # noqa: PLC0415

    out: list[CheckResult] = []
    for section, t in plan:
        if section == "tls":
            out.append(scan_tls(t["host"], t["port"], sni=t.get("sni"), starttls=t.get("starttls"),
                                ca_file=t.get("ca")))  # fmt: skip
        elif section == "http":
            out.append(scan_http(t["url"], ca_file=t.get("ca")))
        elif section == "content":
            out.append(scan_content(t["target"], crawl=t.get("crawl", 0)))
        elif section == "code":
            out.append(scan_code(t["path"]))
        elif section == "ssh":
            out.append(scan_ssh(t["host"], t["port"], fingerprints=t.get("fingerprints", False)))
        else:
            out.append(
                scan_db(
                    t["kind"], t["host"], t["port"], ca_file=t.get("ca"), cert_file=t.get("cert"),
                    key_file=t.get("key"), user=t.get("user"), password=t["password"],
                )
            )  # fmt: skip
    if client:
        out.append(scan_client())
    return out
