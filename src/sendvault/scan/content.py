"""`scan content`: http:// subresources in campaign pages and templates (W3C Mixed Content).

Blockable content (scripts, stylesheets and CSS ``@import``, fonts, iframes, objects, embeds,
form actions, URLs built in inline scripts) is refused by browsers on an HTTPS page; upgradable
content (images, ``srcset``, audio, video, CSS ``url()`` images) is upgraded or warned about.
Template syntax (AMPscript ``%%=...=%%``, Liquid/Handlebars ``{{ }}``) is tolerated, and an
http:// URL it builds is reported. Links (``<a href>``) are navigation, not mixed content.
"""

from __future__ import annotations

import html.parser
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .findings import CheckResult

__all__ = ["scan_content", "scan_text"]

_PAGE_SUFFIXES = {".html", ".htm", ".xhtml", ".tpl", ".liquid", ".hbs", ".handlebars", ".amp", ".css"}
# An http:// URL, including template expressions inside it ({{ host }}, %%=v(@host)=%%).
_HTTP = re.compile(r"""http://(?:\{\{[^}]*\}\}|%%[^%]*%%|[^\s"'<>()\\])*""", re.IGNORECASE)
_CSS_IMPORT = re.compile(r"""@import\s+(?:url\()?\s*["']?(http://[^"')\s;]+)""", re.IGNORECASE)
_CSS_URL = re.compile(r"""url\(\s*["']?(http://[^"')\s]+)""", re.IGNORECASE)
_FONT_FACE = re.compile(r"@font-face\s*{[^}]*}", re.IGNORECASE | re.DOTALL)

# (tag, attribute) -> blockable?
_ATTRS: dict[tuple[str, str], bool] = {
    ("script", "src"): True,
    ("iframe", "src"): True,
    ("frame", "src"): True,
    ("object", "data"): True,
    ("embed", "src"): True,
    ("form", "action"): True,
    ("button", "formaction"): True,
    ("input", "formaction"): True,
    ("applet", "code"): True,
    ("img", "src"): False,
    ("img", "srcset"): False,
    ("source", "srcset"): False,
    ("source", "src"): False,
    ("audio", "src"): False,
    ("video", "src"): False,
    ("video", "poster"): False,
    ("track", "src"): True,
    ("input", "src"): False,
}
_BLOCKABLE_LINKS = {"stylesheet", "import", "preload", "modulepreload", "prefetch", "manifest", "icon"}


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[bool, int, str, str]] = []  # (blockable, line, where, url)
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        values = {k.lower(): v or "" for k, v in attrs}
        if tag == "link":
            rel = set(values.get("rel", "").lower().split())
            href = values.get("href", "")
            if rel & _BLOCKABLE_LINKS and _HTTP.search(href):
                self.found.append((True, line, f"<link rel={'/'.join(sorted(rel))}>", _first(href)))
        for (wanted_tag, attr), blockable in _ATTRS.items():
            if tag == wanted_tag and attr in values:
                value = values[attr]
                for url in _HTTP.findall(value):
                    # A template that assembles the URL: report the whole expression.
                    shown = (
                        value if ("%%" in value or "{{" in value) and len(url) <= len("http://") + 1 else url
                    )
                    self.found.append((blockable, line, f"<{tag} {attr}>", shown))
        style = values.get("style")
        if style:
            self.found.extend((b, line, f"<{tag} style>", u) for b, u in css_urls(style))
        if tag in ("script", "style"):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        line = self.getpos()[0]
        if self._in == "style":
            self.found.extend((b, line, "<style>", u) for b, u in css_urls(data))
        elif self._in == "script":
            self.found.extend((True, line, "inline <script>", u) for u in _HTTP.findall(data))


def _first(text: str) -> str:
    match = _HTTP.search(text)
    return match.group(0) if match else text


def css_urls(css: str) -> Iterator[tuple[bool, str]]:
    """(blockable, url) for every http:// URL a stylesheet loads."""
    fonts = {m for block in _FONT_FACE.findall(css) for m in _CSS_URL.findall(block)}
    imports = set(_CSS_IMPORT.findall(css))
    for url in imports:
        yield True, url
    for url in _CSS_URL.findall(css):
        if url not in imports:
            yield url in fonts, url


def scan_text(text: str, where: str, result: CheckResult, *, css: bool = False) -> list[str]:
    """Add the mixed content of one page or stylesheet to ``result``; returns its https links."""
    found: list[tuple[bool, int, str, str]]
    links: list[str] = []
    if css:
        found = [(b, 0, "stylesheet", u) for b, u in css_urls(text)]
    else:
        page = _Page()
        page.feed(text)
        page.close()
        found = page.found
        links = re.findall(r"""<a\s[^>]*href=["']([^"'#]+)""", text, re.IGNORECASE)
    for blockable, line, element, url in found:
        template = " (built by template syntax)" if ("{{" in url or "%%" in url) else ""
        rule = "content.mixed-blockable" if blockable else "content.mixed-upgradable"
        at = f"{where}:{line}" if line else where
        result.fail(rule, f"{at} {element} {url}{template}")
    if not found:
        result.ok()
    return links


def _read_url(url: str, timeout: float) -> str:
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(url, headers={"User-Agent": "sendvault-scan"})  # noqa: S310 - http(s) only
    with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
        return str(resp.read(5_000_000).decode("utf-8", "replace"))


def scan_content(target: str, *, crawl: int = 0, timeout: float = 10.0) -> CheckResult:
    """Scan a URL (following same-host links ``crawl`` levels deep), a file or a directory."""
    result = CheckResult("content", target)
    if target.startswith(("http://", "https://")):
        host = urlsplit(target).hostname
        queue, seen = [(target, 0)], set()
        while queue:
            url, depth = queue.pop(0)
            if url in seen:
                continue
            seen.add(url)
            try:
                text = _read_url(url, timeout)
            except (OSError, ValueError) as exc:
                result.cannot(f"{url}: {type(exc).__name__}")
                result.fail("content.unknown", f"{url} could not be read ({type(exc).__name__})")
                continue
            for link in scan_text(text, url, result, css=url.endswith(".css")):
                absolute = urljoin(url, link)
                if depth < crawl and urlsplit(absolute).hostname == host:
                    queue.append((absolute, depth + 1))
        return result
    path = Path(target)
    files = (
        sorted(p for p in path.rglob("*") if p.suffix.lower() in _PAGE_SUFFIXES) if path.is_dir() else [path]
    )
    for file in files:
        try:
            text = file.read_text(errors="replace")
        except OSError as exc:
            result.cannot(f"{file}: {type(exc).__name__}")
            result.fail("content.unknown", f"{file} could not be read")
            continue
        scan_text(text, str(file), result, css=file.suffix.lower() == ".css")
    return result
