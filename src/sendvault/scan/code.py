"""`scan code`: http:// endpoints in source and configuration files.

Webhook targets, "Post URL" settings, API base URLs and database links written with http://
keep working only until the platform turns HTTP off. XML namespaces, schema and documentation
URLs, loopback and reserved example hosts, and comments are ignored; ``.gitignore`` is respected
(through ``git ls-files`` when the path is in a git work tree).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from .findings import CheckResult

__all__ = ["scan_code"]

_SUFFIXES = {
    ".yaml", ".yml", ".json", ".toml", ".ini", ".cfg", ".conf", ".env", ".properties", ".xml", ".config",
    ".py", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".php", ".java", ".kt", ".cs", ".go", ".rb", ".sh",
}  # fmt: skip
_NAMES = {".env", "Dockerfile", "docker-compose.yml", "Procfile"}
_SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".tox", "dist", "build", "vendor"}
_URL = re.compile(r"""http://[^\s"'<>()`\\,;]+""", re.IGNORECASE)
_COMMENT = re.compile(r"^\s*(#|//|/\*|\*|<!--|;|--|rem\s)", re.IGNORECASE)
_NAMESPACE = re.compile(r"""(xmlns(:\w+)?\s*=|schemaLocation|\$schema|DOCTYPE)""", re.IGNORECASE)
_IGNORED_HOSTS = (
    "localhost", "127.0.0.1", "[::1]", "www.w3.org", "w3.org", "schemas.xmlsoap.org",
    "schemas.microsoft.com", "schemas.android.com", "json-schema.org", "xmlns.com", "purl.org",
    "java.sun.com", "xmlns.jcp.org", "www.springframework.org", "maven.apache.org", "www.apache.org",
    "opensource.org", "www.opensource.org", "ns.adobe.com", "schema.org",
)  # fmt: skip
_ANY_ADDRESS = "0.0.0.0"  # noqa: S104 - a host to ignore in URLs, not a bind address
_RESERVED_SUFFIXES = (".local", ".localhost", ".test", ".example", ".invalid", ".internal")
_EXAMPLE_HOSTS = ("example.com", "example.org", "example.net")


def _ignored(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if not host or host in _IGNORED_HOSTS or host.startswith("127.") or host == _ANY_ADDRESS:
        return True
    if (
        host.endswith(_RESERVED_SUFFIXES)
        or host in _EXAMPLE_HOSTS
        or host.endswith(tuple("." + h for h in _EXAMPLE_HOSTS))
    ):
        return True
    return "{{" in url or "${" in url  # a template placeholder, not an endpoint


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    git = shutil.which("git")
    if git is not None:
        listing = subprocess.run(  # noqa: S603 - git with fixed arguments on the user's own path
            [git, "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        if listing.returncode == 0:
            return [root / p for p in listing.stdout.decode().split("\0") if p and (root / p).is_file()]
    return [p for p in root.rglob("*") if p.is_file() and not (set(p.relative_to(root).parts) & _SKIP_DIRS)]


def scan_code(path: str) -> CheckResult:
    """Report http:// endpoints in the source and configuration files under ``path``."""
    root = Path(path)
    result = CheckResult("code", path)
    if not root.exists():
        result.cannot(f"{path} does not exist")
        return result
    clean = 0
    for file in _files(root):
        if (
            file.suffix.lower() not in _SUFFIXES
            and file.name not in _NAMES
            and not file.name.startswith(".env")
        ):
            continue
        try:
            lines = file.read_text(errors="replace").splitlines()
        except OSError:
            result.cannot(f"{file}: unreadable")
            continue
        hits = 0
        for number, line in enumerate(lines, start=1):
            if _COMMENT.match(line) or _NAMESPACE.search(line):
                continue
            for url in _URL.findall(line):
                if not _ignored(url):
                    hits += 1
                    result.fail(
                        "code.insecure-url",
                        f"{file.relative_to(root) if root.is_dir() else file}:{number} {url}",
                    )
        clean += hits == 0
    result.ok(clean)
    return result
