"""`scan content`: http:// subresources in campaign pages and templates (W3C Mixed Content).

Each URL a page loads is classified as the Mixed Content spec (Level 2, §4.1 "upgrade a mixed
content request") does. A request is *upgradable* (the browser retries it over https) only when
its destination is image, audio or video, its host is not an IP address, and it is not an image
chosen from an image set (``srcset``, or any ``<img>`` that has one or sits in ``<picture>``: the
HTML standard gives those the initiator "imageset"). Every other subresource is *blockable*
(refused on an HTTPS page). `_FETCHES` gives each element attribute's destination and `_verdict`
applies the spec's conditions; nothing else decides.

Loopback hosts (``localhost``, ``*.localhost``, 127.0.0.0/8, ``[::1]``) are potentially
trustworthy to browsers, so requests to them are not mixed content. Links (``<a href>``) are
navigation, not mixed content; ``<script>`` blocks that are not
JavaScript (JSON-LD, templates) load nothing; standards URLs in scripts (``www.w3.org`` namespaces)
are names, not requests. An attribute counts only when its URL starts with http:// (after
whitespace and template syntax), so an https URL carrying http:// in its query string is fine.
Template syntax (AMPscript ``%%=...=%%`` and ``%%[ ]%%``, Liquid and Handlebars ``{{ }}`` and
``{% %}``) is hidden from the HTML parser, so its quotes cannot end an attribute, and an http://
URL it builds, directly or through an AMPscript ``SET`` or Liquid ``assign`` variable that an
attribute then uses, is reported.
"""

from __future__ import annotations

import html.parser
import ipaddress
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .code import STANDARDS_HOSTS, strip_comments
from .findings import CheckResult

__all__ = ["scan_content", "scan_text"]

_PAGE_SUFFIXES = {".html", ".htm", ".xhtml", ".tpl", ".liquid", ".hbs", ".handlebars", ".amp", ".css"}

# (tag, attribute) -> (fetch destination, initiator), from the HTML, SVG and Fetch standards.
# Form submissions are navigations, but browsers warn before sending a form in clear from an
# HTTPS page and some refuse to, so they are blockable like every non-media destination.
_FETCHES: dict[tuple[str, str], tuple[str, str]] = {
    ("script", "src"): ("script", ""),
    ("script", "href"): ("script", ""),  # SVG <script>
    ("script", "xlink:href"): ("script", ""),
    ("iframe", "src"): ("iframe", ""),
    ("frame", "src"): ("frame", ""),
    ("object", "data"): ("object", ""),
    ("embed", "src"): ("embed", ""),
    ("applet", "code"): ("object", ""),
    ("form", "action"): ("form", ""),
    ("button", "formaction"): ("form", ""),
    ("input", "formaction"): ("form", ""),
    ("track", "src"): ("track", ""),
    ("img", "src"): ("image", ""),  # "imageset" when the <img> has a srcset or is in <picture>
    ("img", "srcset"): ("image", "imageset"),
    ("source", "srcset"): ("image", "imageset"),
    # The HTML standard gives a preload's imagesrcset no "imageset" initiator (nor does Chromium).
    ("link", "imagesrcset"): ("image", ""),
    ("source", "src"): ("video", ""),  # "audio" inside <audio>
    ("audio", "src"): ("audio", ""),
    ("video", "src"): ("video", ""),
    ("video", "poster"): ("image", ""),
    ("input", "src"): ("image", ""),
    ("image", "href"): ("image", ""),  # SVG <image>
    ("image", "xlink:href"): ("image", ""),
    ("feimage", "href"): ("image", ""),
    ("feimage", "xlink:href"): ("image", ""),
    # The legacy background= attribute (common in email HTML) is a CSS background image.
    **{(tag, "background"): ("image", "") for tag in ("body", "table", "thead", "tbody", "tr", "td", "th")},
}
_SRCSET_ATTRIBUTES = {"srcset", "imagesrcset"}
# <link rel=...> -> destination of the href; rel=preload takes its destination from as=.
_LINK_RELS: dict[str, str] = {
    "stylesheet": "style",
    "icon": "image",
    "apple-touch-icon": "image",
    "modulepreload": "script",
    "manifest": "manifest",
    "prefetch": "",
    "import": "document",
    "preload": "",
}
_UPGRADABLE_DESTINATIONS = {"image", "audio", "video"}
# <script type> values that are JavaScript (an import map lists scripts too); others are data.
_SCRIPT_TYPES = {
    "", "module", "importmap", "text/javascript", "application/javascript", "application/ecmascript",
    "application/x-ecmascript", "application/x-javascript", "text/ecmascript", "text/jscript",
    "text/livescript", "text/x-ecmascript", "text/x-javascript",
}  # fmt: skip

# An http:// URL, including template expressions inside it ({{ host }}, %%=v(@host)=%%).
_HTTP = re.compile(r"""http://(?:\{\{[^}]*\}\}|%%[^%]*%%|[^\s"'<>()`\\])*""", re.IGNORECASE)
_TEMPLATE = re.compile(r"%%\[.*?\]%%|%%=.*?=%%|\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_PLACEHOLDER = re.compile("\ue000(\\d+)\n*\ue001")
# What may precede the URL inside an attribute: whitespace, whole control tags ({% if %}), then
# an output tag with the calls and quotes before its first argument (%%=Concat('http://…).
_LEAD = re.compile(
    r"""(?:\s+|\{%.*?%\}|%%\[.*?\]%%)*(?:(?:%%=|\{\{\{?-?)(?:\s|[A-Za-z_][\w.]*\s*\(|["'])*)?""",
    re.DOTALL,
)
_JOINED = re.compile(r"""["'`]\s*\+""")  # "http://" + host
_VARIABLE = re.compile(r"@\w+|[A-Za-z_]\w*")
_AMPSCRIPT_BLOCK = re.compile(r"%%\[(.*?)\]%%", re.DOTALL)
_AMPSCRIPT_SET = re.compile(r"""\bSET\s+(@\w+)\s*=\s*(?:\w+\(\s*)*["'](http://[^"']*)""", re.IGNORECASE)
_LIQUID_ASSIGN = re.compile(r"""\{%-?\s*assign\s+(\w+)\s*=\s*(?:\w+\(\s*)*["'](http://[^"']*)""")
_CSS = re.compile(
    r"""(?P<comment>/\*.*?(?:\*/|\Z))"""
    r"""|(?P<namespace>@namespace\b[^;]*)"""
    r"""|@import\s+(?:url\(\s*)?(?P<style>"[^"]*"|'[^']*'|[^\s;)]+)"""
    r"""|(?P<font>@font-face\s*\{[^}]*\})"""
    r"""|(?:-webkit-)?image-set\((?P<set>(?:[^()]|\([^()]*\))*)\)"""
    r"""|url\(\s*(?P<image>"[^"]*"|'[^']*'|[^\s)]*)""",
    re.IGNORECASE | re.DOTALL,
)
# CSS construct (a group of _CSS) -> (destination, label). CSS image-set() candidates are plain
# CSS images: only HTML's srcset and <picture> give a request the initiator "imageset".
_CSS_LOADS = {
    "style": ("style", "@import"),
    "font": ("font", "@font-face"),
    "set": ("image", "image-set()"),
    "image": ("image", "url()"),
}
_CSS_ARGUMENT = re.compile(r"""url\(\s*("[^"]*"|'[^']*'|[^\s)]*)|("[^"]*"|'[^']*')""", re.IGNORECASE)


def _verdict(destination: str, initiator: str, url: str) -> tuple[bool, str]:
    """(blockable, why) for an http:// request, as Mixed Content §4.1 decides."""
    if destination not in _UPGRADABLE_DESTINATIONS:
        return True, ""
    if destination == "image" and initiator == "imageset":
        return True, " (from an image set: never upgraded)"
    if _ip_host(url):
        return True, " (IP address host: never upgraded)"
    return False, ""


def _authority(url: str) -> str:
    """The host and port of an http:// URL, as written."""
    return re.split(r"[/?#\\]", url[len("http://") :], maxsplit=1)[0].rpartition("@")[2]


def _ip_host(url: str) -> bool:
    """Whether the URL's host is an IP address, by the URL standard ("ends in a number")."""
    authority = _authority(url)
    if authority.startswith("["):
        return True
    last = authority.partition(":")[0].removesuffix(".").rpartition(".")[2]
    return re.fullmatch(r"\d+|0[xX][0-9a-fA-F]*", last) is not None


def _loopback(url: str) -> bool:
    """Whether an http:// URL's host is loopback, which browsers treat as potentially
    trustworthy (Secure Contexts §3.2): ``localhost``, ``*.localhost``, 127.0.0.0/8 and ``[::1]``.
    Such requests are never blocked or upgraded as mixed content."""
    authority = _authority(url).lower()
    host = authority[1:].partition("]")[0] if authority.startswith("[") else authority.partition(":")[0]
    host = host.rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Templates:
    """A page with its template syntax replaced by placeholders, and the variables it sets."""

    def __init__(self, text: str) -> None:
        self.blocks: list[str] = []
        self.text = _TEMPLATE.sub(self._hide, text)
        self.variables: dict[str, tuple[str, int]] = {}  # name -> (http:// URL, line)
        assignments = [
            (m.start(1) + s.start(), s.group(1).lower(), s.group(2))
            for m in _AMPSCRIPT_BLOCK.finditer(text)
            for s in _AMPSCRIPT_SET.finditer(m.group(1))
        ] + [(m.start(), m.group(1), m.group(2)) for m in _LIQUID_ASSIGN.finditer(text)]
        for offset, name, url in assignments:
            self.variables.setdefault(name, (url, text.count("\n", 0, offset) + 1))

    def _hide(self, match: re.Match[str]) -> str:
        # No quotes or angle brackets, and the same newlines: the parser's line numbers stay true.
        self.blocks.append(match.group(0))
        return f"\ue000{len(self.blocks) - 1}" + "\n" * match.group(0).count("\n") + "\ue001"

    def restore(self, text: str) -> str:
        """``text`` with its placeholders turned back into the template syntax."""
        return _PLACEHOLDER.sub(lambda m: self.blocks[int(m.group(1))], text)

    def url_at(self, raw: str) -> tuple[str, str, str] | None:
        """(url, shown, note) when the value loads an http:// URL from a host that is not
        loopback; None otherwise."""
        found = self._url_at(raw)
        return None if found is None or _loopback(found[0]) else found

    def _url_at(self, raw: str) -> tuple[str, str, str] | None:
        value = self.restore(raw).strip()
        lead = _LEAD.match(value)
        start = lead.end() if lead else 0
        if value[start : start + 7].lower() == "http://":
            if start == 0:
                whole = _HTTP.match(value)
                shown = whole.group(0) if whole else value
                # Personalisation in the path or query (?id=%%_subscriberkey%%) builds no URL.
                host = _authority(shown)
                templated = "{{" in host or "%%" in host
                return shown, shown, " (built by template syntax)" if templated else ""
            return value[start:], value, " (built by template syntax)"
        name = _VARIABLE.match(value, start) if start else None
        if name is not None:
            key = name.group(0).lower() if name.group(0).startswith("@") else name.group(0)
            if key in self.variables:
                url, line = self.variables[key]
                return url, value, f" (built by template syntax: {name.group(0)} = {url} on line {line})"
        return None


# (blockable, line, element, shown url + notes)
_Found = tuple[bool, int, str, str]


def _srcset(value: str) -> Iterator[str]:
    """The URLs of a srcset (placeholders count as URL characters, their commas are hidden)."""
    for candidate in re.finditer(r"[\s,]*((?:\ue000\d+\n*\ue001|\S)+)[^,]*", value):
        yield candidate.group(1).rstrip(",")


def _css_urls(css: str, templates: _Templates, line: int = 1) -> Iterator[_Found]:
    """(blockable, line, construct, url) for each http:// URL a stylesheet loads from line ``line`` on."""
    for match in _CSS.finditer(css):
        construct = match.lastgroup
        if construct not in _CSS_LOADS:
            continue  # a comment or an @namespace: names, not requests
        destination, label = _CSS_LOADS[construct]
        if construct in ("style", "image"):
            arguments = [match.group(construct)]
        else:  # the url()s and strings of an @font-face rule or an image-set()
            arguments = [a.group(1) or a.group(2) for a in _CSS_ARGUMENT.finditer(match.group(construct))]
        for argument in arguments:
            found = templates.url_at(argument.strip("\"'"))
            if found is not None:
                url, shown, note = found
                blockable, why = _verdict(destination, "", url)
                yield blockable, line + css.count("\n", 0, match.start()), label, shown + note + why


class _Page(html.parser.HTMLParser):
    def __init__(self, templates: _Templates) -> None:
        super().__init__(convert_charrefs=True)
        self.templates = templates
        self.found: list[_Found] = []
        self._in: str | None = None  # "style", "script", or "data" for a non-JavaScript script
        self._picture = 0
        self._media = "video"

    def _add(self, line: int, element: str, destination: str, initiator: str, raw: str) -> None:
        found = self.templates.url_at(raw)
        if found is not None:
            url, shown, note = found
            blockable, why = _verdict(destination, initiator, url)
            self.found.append((blockable, line, element, shown + note + why))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        values = {k.lower(): v or "" for k, v in attrs}
        if tag == "picture":
            self._picture += 1
        elif tag in ("audio", "video"):
            self._media = tag
        elif tag == "link":
            self._link(line, values)
        # The HTML standard: an <img> that uses srcset or <picture> fetches with initiator "imageset".
        imageset = tag == "img" and ("srcset" in values or self._picture > 0)
        for attr, value in values.items():
            destination, initiator = _FETCHES.get((tag, attr), (None, ""))
            if destination is None:
                continue
            if (tag, attr) == ("source", "src"):
                destination = self._media
            initiator = "imageset" if imageset else initiator
            urls = _srcset(value) if attr in _SRCSET_ATTRIBUTES else [value]
            for url in urls:
                self._add(line, f"<{tag} {attr}>", destination, initiator, url)
        if values.get("style"):
            self.found.extend(
                (b, at, f"<{tag} style> {kind}", url)
                for b, at, kind, url in _css_urls(values["style"], self.templates, line)
            )
        if tag == "style":
            self._in = "style"
        elif tag == "script":
            kind = values.get("type", "").partition(";")[0].strip().lower()
            self._in = "script" if kind in _SCRIPT_TYPES else "data"

    def _link(self, line: int, values: dict[str, str]) -> None:
        rels = values.get("rel", "").lower().split()
        rel = next((r for r in rels if r in _LINK_RELS), None)
        if rel is None:
            return
        destination = _LINK_RELS[rel]
        if rel == "preload":
            kind = values.get("as", "").strip().lower()
            destination = "" if kind == "fetch" else kind
        shown = f"<link rel={rel} as={destination or 'fetch'}>" if rel == "preload" else f"<link rel={rel}>"
        self._add(line, shown, destination, "", values.get("href", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "picture":
            self._picture = max(0, self._picture - 1)
        elif tag in ("script", "style") and self._in is not None:
            self._in = None

    def handle_data(self, data: str) -> None:
        line = self.getpos()[0]
        if self._in == "style":
            self.found.extend(
                (b, at, f"<style> {kind}", url) for b, at, kind, url in _css_urls(data, self.templates, line)
            )
        elif self._in == "script":
            self._script(line, strip_comments(self.templates.restore(data), ".js"))

    def _script(self, line: int, code: str) -> None:
        for match in _HTTP.finditer(code):
            host = _authority(match.group(0)).partition(":")[0].lower()
            # A bare "http://" counts only where a host is joined to it ("http://" + host), not in
            # a scheme test such as url.startsWith("http://").
            joined = _JOINED.match(code, match.end()) is not None
            if (host or joined) and host not in STANDARDS_HOSTS and not _loopback(match.group(0)):
                at = line + code.count("\n", 0, match.start())
                self.found.append((True, at, "inline <script>", match.group(0)))


def scan_text(
    text: str, where: str, result: CheckResult, *, css: bool = False, file: str | None = None
) -> list[str]:
    """Add the mixed content of one page or stylesheet to ``result``; returns its links.

    ``where`` names the page in each finding's detail; ``file`` is the finding's file location.
    """
    templates = _Templates(text)
    links: list[str] = []
    if css:
        found = [
            (b, at, f"stylesheet {kind}", url) for b, at, kind, url in _css_urls(templates.text, templates)
        ]
    else:
        page = _Page(templates)
        page.feed(templates.text)
        page.close()
        found = page.found
        links = re.findall(r"""<a\s[^>]*href=["']([^"'#]+)""", text, re.IGNORECASE)
    for blockable, line, element, url in found:
        rule = "content.mixed-blockable" if blockable else "content.mixed-upgradable"
        result.fail(rule, f"{where}:{line} {element} {url}", file=file, line=line)
    if not found:
        result.ok()
    return links


def _read_url(url: str, timeout: float, context: ssl.SSLContext | None = None) -> str:
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(url, headers={"User-Agent": "sendvault-scan"})  # noqa: S310 - http(s) only
    with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310
        return str(resp.read(5_000_000).decode("utf-8", "replace"))


def _scan_url(
    target: str, crawl: int, timeout: float, result: CheckResult, context: ssl.SSLContext | None = None
) -> None:
    host = urlsplit(target).hostname
    queue, seen = [(target, 0)], set()
    while queue:
        url, depth = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        try:
            text = _read_url(url, timeout, context)
        except (OSError, ValueError) as exc:
            result.cannot(f"{url}: {type(exc).__name__}")
            result.fail("content.unknown", f"{url} could not be read ({type(exc).__name__})")
            continue
        for link in scan_text(text, url, result, css=url.endswith(".css")):
            absolute = urljoin(url, link)
            if depth < crawl and urlsplit(absolute).hostname == host:
                queue.append((absolute, depth + 1))


def scan_content(
    target: str, *, crawl: int = 0, timeout: float = 10.0, ca_file: str | None = None
) -> CheckResult:
    """Scan a URL (following same-host links ``crawl`` levels deep), a file or a directory.

    ``ca_file`` is the CA bundle an https:// page is verified with (else the system's).
    """
    result = CheckResult("content", target)
    if target.startswith(("http://", "https://")):
        context = None
        if ca_file is not None:
            from .tls import load_ca  # noqa: PLC0415

            context = load_ca(ca_file)
        _scan_url(target, crawl, timeout, result, context)
        return result
    root = Path(target)
    if root.is_dir():
        pages = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _PAGE_SUFFIXES)
        files = [(p, p.relative_to(root).as_posix()) for p in pages]
        if not files:
            result.cannot(f"{target}: no pages, templates or stylesheets to scan")
            result.fail("content.unknown", f"{target} has no pages, templates or stylesheets to scan")
    else:
        files = [(root, target)]
    for file, shown in files:
        try:
            text = file.read_text(errors="replace")
        except OSError as exc:
            result.cannot(f"{shown}: {type(exc).__name__}")
            result.fail("content.unknown", f"{shown} could not be read", file=shown)
            continue
        scan_text(text, shown, result, css=file.suffix.lower() == ".css", file=shown)
    return result
