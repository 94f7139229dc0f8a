"""`scan code`: http:// endpoints in source and configuration files.

Webhook targets, "Post URL" settings, API base URLs and database links written with http://
keep working only until the platform turns HTTP off. Comments are blanked per language (line,
trailing and block comments, Python docstrings) before URLs are searched, so line numbers stay
true. XML namespaces, schema locations and ``$schema`` values are blanked too, but only the value
itself: an endpoint on the same line is still reported. Standards and documentation hosts,
loopback addresses and reserved example names are ignored. A URL whose scheme is written http but
whose host is a placeholder (``http://${HOST}/post``, ``http://{host}/x``) is reported: whatever
the host turns out to be, the request goes out in clear. ``.gitignore`` is respected, through
``git ls-files`` in a git work tree and by its own matcher elsewhere.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import shutil
import subprocess
import tokenize
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .findings import CheckResult

__all__ = ["STANDARDS_HOSTS", "scan_code", "strip_comments"]

# Never the user's own code; skipped where git cannot list the files.
_SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".tox", "dist", "build", "vendor"}

# Strings are matched before comments, so that the // of "http://x" never starts a comment.
_QUOTED = r""""(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'"""
_C_STRINGS = r'"""[\s\S]*?"""|' + _QUOTED + r"|`(?:\\.|[^`\\])*`"
_BLOCK = r"/\*[\s\S]*?(?:\*/|\Z)"
_XML_COMMENT = r"<!--[\s\S]*?(?:-->|\Z)"
# Comment syntax -> (strings, comments).
_SYNTAX: dict[str, tuple[str, str]] = {
    "c": (_C_STRINGS, r"//[^\n]*|" + _BLOCK),
    "php": (_C_STRINGS, r"//[^\n]*|#(?!\[)[^\n]*|" + _BLOCK + "|" + _XML_COMMENT),
    "hash": (_QUOTED, r"#[^\n]*"),  # anywhere outside strings (TOML, Ruby)
    "spaced": (_QUOTED, r"(?:^|(?<=\s))#[^\n]*"),  # at a word start (YAML, shell, .env)
    "ini": (_QUOTED, r"(?:^|(?<=\s))[#;][^\n]*"),
    "line": ("(?!)", r"^[ \t]*[#!][^\n]*"),  # whole lines only (.properties, Dockerfile)
    "xml": ("(?!)", _XML_COMMENT),
}
# File suffix (or name) -> comment syntax; Python is tokenized instead.
_LANGUAGES: dict[str, str] = {
    **dict.fromkeys((".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".cs", ".go"), "c"),
    ".json": "c",  # JSON has no comments, but JSONC (tsconfig, editor settings) has // and /* */
    ".php": "php",
    **dict.fromkeys((".toml", ".rb"), "hash"),
    **dict.fromkeys((".yaml", ".yml", ".sh", ".env", ".conf", "Procfile"), "spaced"),
    **dict.fromkeys((".ini", ".cfg"), "ini"),
    **dict.fromkeys((".properties", "Dockerfile"), "line"),
    **dict.fromkeys((".xml", ".config"), "xml"),
    ".py": "python",
}
_MASTER = {
    name: re.compile(f"(?P<s>{strings})|(?P<c>{comments})", re.MULTILINE)
    for name, (strings, comments) in _SYNTAX.items()
}

# Identifiers that look like URLs but are never fetched: namespaces, schema locations, DTDs.
_NOT_ENDPOINTS = re.compile(
    r"""\b(?:xmlns(?::[\w.-]+)?|(?:target)?namespace|(?:noNamespace)?schemaLocation)\s*=\s*("|')[\s\S]*?\1"""
    r"""|<!DOCTYPE\b[^>]*>"""
    r"""|(?:["']\$(?:schema|id)["']|^[ \t]*\$(?:schema|id))\s*:\s*["']?[^\s"',}]*""",  # JSON, YAML keys
    re.IGNORECASE | re.MULTILINE,
)
# An http:// URL, including placeholders in it: {{ host }}, ${HOST}, {host}, %(host)s.
_URL = re.compile(
    r"""http://(?:\{\{[^{}\n]*\}\}|\$\{[^{}\n]*\}|\{[^{}\s]*\}|%\(\w+\)[sdr]|[^\s"'<>()`\\,;{}])+""",
    re.IGNORECASE,
)
# Hosts of namespaces, schemas and licences: names, never endpoints (scan content uses them too).
STANDARDS_HOSTS = frozenset({
    "www.w3.org", "w3.org", "schemas.xmlsoap.org", "schemas.microsoft.com", "schemas.android.com",
    "json-schema.org", "xmlns.com", "purl.org", "java.sun.com", "xmlns.jcp.org",
    "www.springframework.org", "maven.apache.org", "www.apache.org", "opensource.org",
    "www.opensource.org", "ns.adobe.com", "schema.org", "ogp.me", "docs.oasis-open.org",
})  # fmt: skip
_RESERVED_SUFFIXES = (".local", ".localhost", ".test", ".example", ".invalid", ".internal")
_EXAMPLE_HOSTS = ("example.com", "example.org", "example.net")


def _spaces(text: str) -> str:
    """``text`` blanked, keeping its newlines so that line numbers stay true."""
    return re.sub(r"[^\n]", " ", text)


def _python_spans(text: str) -> list[tuple[int, int]] | None:
    """Offsets of comments and bare string statements (docstrings); None if it does not tokenize."""
    starts = [0]
    for line in text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    try:
        with warnings.catch_warnings():  # newer tokenizers warn about invalid escapes: not ours to judge
            warnings.simplefilter("ignore")
            tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    statement_edge = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    code = [t for t in tokens if t.type not in {tokenize.NL, tokenize.COMMENT}]
    blank = [t for t in tokens if t.type == tokenize.COMMENT]
    blank += [
        t
        for i, t in enumerate(code)
        if t.type == tokenize.STRING
        and (i == 0 or code[i - 1].type in statement_edge)
        and (i + 1 == len(code) or code[i + 1].type in statement_edge)
    ]
    return [(starts[t.start[0] - 1] + t.start[1], starts[t.end[0] - 1] + t.end[1]) for t in blank]


def strip_comments(text: str, language: str) -> str:
    """``text`` with the comments of ``language`` (a suffix such as ".js", or a file name) blanked."""
    syntax = _LANGUAGES.get(language, "spaced")
    if syntax == "python":
        spans = _python_spans(text)
        if spans is not None:
            out, last = [], 0
            for start, end in sorted(spans):
                out += [text[last:start], _spaces(text[start:end])]
                last = end
            return "".join([*out, text[last:]])
        syntax = "hash"
    return _MASTER[syntax].sub(lambda m: m.group(0) if m.lastgroup == "s" else _spaces(m.group(0)), text)


def _host(url: str) -> str:
    """The URL's host, lower-case and without IPv6 brackets ("" for a bare ``http://``)."""
    authority = re.split(r"[/?#]", url[len("http://") :], maxsplit=1)[0].rpartition("@")[2]
    if authority.startswith("["):
        return authority[1:].partition("]")[0].lower()
    return authority.partition(":")[0].lower()


def _ignored(host: str) -> bool:
    # A bare "http://" is a scheme check or a prefix joined at run time, not an endpoint.
    if not host or host == "localhost" or host in STANDARDS_HOSTS or host.endswith(_RESERVED_SUFFIXES):
        return True
    if host in _EXAMPLE_HOSTS or host.endswith(tuple("." + h for h in _EXAMPLE_HOSTS)):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _insecure_urls(text: str, language: str) -> Iterator[tuple[int, str]]:
    """(line, url) for each http:// endpoint outside comments and namespace declarations."""
    code = _NOT_ENDPOINTS.sub(lambda m: _spaces(m.group(0)), strip_comments(text, language))
    for number, line in enumerate(code.split("\n"), start=1):
        for match in _URL.finditer(line):
            url = match.group(0).rstrip(".")
            if not _ignored(_host(url)):
                yield number, url


@dataclass(frozen=True, slots=True)
class _Ignore:
    """One .gitignore pattern, matched against paths relative to the file's directory."""

    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    anchored: bool  # matched against the relative path; otherwise against the last component
    base: str  # the .gitignore's directory relative to the scanned root, "" or ending in "/"


def _glob(pattern: str) -> str:
    """A gitignore glob as a regex: * and ? stop at /, **/ spans directories, [...] is a set."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        bounded = i == 0 or pattern[i - 1] == "/"
        if pattern.startswith("**", i) and bounded and i + 2 == n:
            out.append(".*")  # "dir/**": everything inside
            i = n
        elif pattern.startswith("**/", i) and bounded:
            out.append("(?:.*/)?")  # "**/x", "a/**/b": zero or more directories
            i += 3
        elif c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "[" and (close := _set_end(pattern, i)) > 0:
            body = pattern[i + 1 : close]
            negate = body[0] in "!^"
            body = "".join(ch if ch == "-" else re.escape(ch) for ch in body[negate:])
            out.append(f"[^/{body}]" if negate else f"(?!/)[{body}]")
            i = close + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append("[^/]" if c == "?" else re.escape(c))
            i += 1
    return "".join(out)


def _set_end(pattern: str, i: int) -> int:
    """Index of the "]" closing the set that opens at ``i`` (a "]" right after "[" or "[!" is literal)."""
    first = i + 1 + (pattern[i + 1 : i + 2] in ("!", "^"))
    return pattern.find("]", first + 1)


def _ignore_rules(path: Path, base: str) -> list[_Ignore]:
    try:
        lines = path.read_text(errors="replace").split("\n")
    except OSError:
        return []
    rules = []
    for raw in lines:
        line = raw
        while line.endswith(" ") and not line.endswith("\\ "):
            line = line[:-1]
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[negate:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        rules.append(_Ignore(re.compile(_glob(line.lstrip("/"))), negate, dir_only, anchored, base))
    return rules


def _is_ignored(rules: list[_Ignore], rel: str, is_dir: bool) -> bool:
    """Whether ``rel`` is ignored: the last matching pattern decides, deeper files come last."""
    ignored = False
    for rule in rules:
        if rule.dir_only and not is_dir:
            continue
        inside = rel[len(rule.base) :]
        if rule.regex.fullmatch(inside if rule.anchored else inside.rpartition("/")[2]):
            ignored = not rule.negate
    return ignored


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root`` not ignored by its .gitignore files (nor .git/info/exclude)."""
    stack = [(root, "", _ignore_rules(root / ".git" / "info" / "exclude", ""))]
    while stack:
        directory, rel, inherited = stack.pop()
        rules = inherited + _ignore_rules(directory / ".gitignore", rel)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        for entry in entries:
            path = rel + entry.name
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in _SKIP_DIRS and not _is_ignored(rules, path, is_dir=True):
                    stack.append((Path(entry.path), path + "/", rules))
            elif entry.is_file() and not _is_ignored(rules, path, is_dir=False):
                yield Path(entry.path)


def _files(root: Path) -> list[Path]:
    git = shutil.which("git")
    if git is not None:
        listing = subprocess.run(  # noqa: S603 - git with fixed arguments on the user's own path
            [git, "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        if listing.returncode == 0:
            return [root / p for p in listing.stdout.decode().split("\0") if p and (root / p).is_file()]
    return sorted(_walk(root))


def _language(file: Path) -> str | None:
    """The key into ``_LANGUAGES`` of a file to scan; None for files that are not source or config."""
    if file.name in _LANGUAGES:
        return file.name  # Dockerfile, Procfile
    if file.name.startswith(".env"):
        return ".env"
    suffix = file.suffix.lower()
    return suffix if suffix in _LANGUAGES else None


def scan_code(path: str) -> CheckResult:
    """Report http:// endpoints in the source and configuration files under ``path``."""
    root = Path(path)
    result = CheckResult("code", path)
    if not root.exists():
        result.cannot(f"{path} does not exist")
        return result
    if root.is_dir():
        files = [(f, f.relative_to(root).as_posix(), lang) for f in _files(root) if (lang := _language(f))]
    else:  # A file named on the command line is scanned whatever its name.
        files = [(root, path, _language(root) or root.suffix.lower())]
    if not files:
        result.cannot(f"{path}: no source or configuration files to scan")
        return result
    for file, shown, language in files:
        try:
            text = file.read_text(errors="replace")
        except OSError as exc:
            result.cannot(f"{shown}: {type(exc).__name__}")
            continue
        hits = list(_insecure_urls(text, language))
        for line, url in hits:
            result.fail("code.insecure-url", f"{shown}:{line} {url}", file=shown, line=line)
        if not hits:
            result.ok()
    return result
