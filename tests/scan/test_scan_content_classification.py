"""`scan content` classifies each http:// request as the W3C Mixed Content spec (Level 2) does.

§4.1 upgrades a request only when its destination is image, audio or video, its host is not an
IP address, and it is not an image whose initiator is "imageset" (the HTML standard gives that
initiator to srcset and to any <img> that has a srcset or sits in <picture>). Everything else a
page loads is blockable.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sendvault.scan.content import scan_content

BLOCKABLE, UPGRADABLE = "content.mixed-blockable", "content.mixed-upgradable"


def _rules(tmp_path: Path, html: str, name: str = "page.html") -> list[str]:
    page = tmp_path / name
    page.write_text(html)
    return [f.rule for f in scan_content(str(page)).findings]


@pytest.mark.parametrize(
    ("html", "rule"),
    [
        pytest.param('<img src="http://i.acme.io/a.png">', UPGRADABLE, id="img-src"),
        pytest.param('<img srcset="http://i.acme.io/a.png 2x">', BLOCKABLE, id="img-srcset"),
        pytest.param(
            '<img src="http://i.acme.io/a.png" srcset="https://i.acme.io/b.png 2x">',
            BLOCKABLE,
            id="img-src-of-an-img-with-srcset",
        ),
        pytest.param(
            '<picture><source srcset="http://i.acme.io/a.webp"></picture>', BLOCKABLE, id="picture-source"
        ),
        pytest.param(
            '<picture><img src="http://i.acme.io/a.png"></picture>', BLOCKABLE, id="img-src-in-picture"
        ),
        pytest.param(
            '<picture></picture><img src="http://i.acme.io/a.png">', UPGRADABLE, id="img-src-after-picture"
        ),
        pytest.param('<img src="http://192.0.2.10/a.png">', BLOCKABLE, id="ipv4-host"),
        pytest.param('<img src="http://[2001:db8::1]/a.png">', BLOCKABLE, id="ipv6-host"),
        pytest.param('<video src="http://198.51.100.7/v.mp4">', BLOCKABLE, id="ip-host-video"),
        pytest.param('<img src="http://1.2.3.4.nip.io/a.png">', UPGRADABLE, id="name-with-digits"),
        pytest.param('<link rel="icon" href="http://i.acme.io/f.ico">', UPGRADABLE, id="link-icon"),
        pytest.param(
            '<link rel="shortcut icon" href="http://i.acme.io/f.ico">', UPGRADABLE, id="shortcut-icon"
        ),
        pytest.param(
            '<link rel="preload" as="image" href="http://i.acme.io/h.png">', UPGRADABLE, id="preload-image"
        ),
        pytest.param(
            '<link rel="preload" as="style" href="http://c.acme.io/s.css">', BLOCKABLE, id="preload-style"
        ),
        pytest.param(
            '<link rel="preload" as="image" imagesrcset="http://i.acme.io/h.png 2x">',
            UPGRADABLE,
            id="preload-imagesrcset",  # a preload, not an <img>: no "imageset" initiator
        ),
        pytest.param('<link rel="stylesheet" href="http://c.acme.io/s.css">', BLOCKABLE, id="stylesheet"),
        pytest.param('<audio><source src="http://m.acme.io/a.mp3"></audio>', UPGRADABLE, id="audio-source"),
        pytest.param('<video><track src="http://m.acme.io/t.vtt"></video>', BLOCKABLE, id="track"),
        pytest.param('<body background="http://i.acme.io/bg.png">', UPGRADABLE, id="body-background"),
        pytest.param(
            '<table background="http://i.acme.io/t.png"><tr><td background="http://i.acme.io/d.png">',
            UPGRADABLE,
            id="table-and-td-background",
        ),
        pytest.param('<svg><image href="http://i.acme.io/s.png"/></svg>', UPGRADABLE, id="svg-image-href"),
        pytest.param(
            '<svg><image xlink:href="http://i.acme.io/s.png"/></svg>', UPGRADABLE, id="svg-image-xlink-href"
        ),
        pytest.param('<svg><script href="http://c.acme.io/s.js"/></svg>', BLOCKABLE, id="svg-script"),
        pytest.param(
            "<div style=\"background: image-set('http://i.acme.io/a.png' 1x,"
            ' url(http://i.acme.io/b.png) 2x)">',
            UPGRADABLE,
            id="css-image-set",  # a CSS image, not an HTML image set
        ),
        pytest.param(
            '<style>@font-face { src: url("http://f.acme.io/x.woff2") }</style>', BLOCKABLE, id="css-font"
        ),
    ],
)
def test_each_request_gets_the_verdict_of_the_mixed_content_spec(
    tmp_path: Path, html: str, rule: str
) -> None:
    rules = _rules(tmp_path, html)
    assert rules, "nothing reported"
    assert set(rules) == {rule}


def test_a_finding_says_why_an_image_is_not_upgraded(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text('<img srcset="http://i.acme.io/a.png 2x">\n<img src="http://192.0.2.10/b.png">')
    details = [f.detail for f in scan_content(str(page)).findings]
    assert "image set" in details[0]
    assert "IP address" in details[1]


def test_every_candidate_of_a_srcset_is_judged(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(
        '<img srcset="http://i.acme.io/a.png 1x, https://i.acme.io/b.png 2x, http://i.acme.io/c.png 3x">'
    )
    details = [f.detail for f in scan_content(str(page)).findings]
    assert len(details) == 2
    assert "a.png" in details[0]
    assert "c.png" in details[1]


def test_css_namespaces_and_comments_load_nothing(tmp_path: Path) -> None:
    css = "@namespace svg url(http://www.w3.org/2000/svg);\n/* was url(http://old.acme.io/a.png) */\n"
    assert _rules(tmp_path, css, "site.css") == []


def test_every_candidate_of_a_css_image_set_is_judged(tmp_path: Path) -> None:
    css = ".a { background: image-set('http://i.acme.io/a.png' 1x, url(http://i.acme.io/b.png) 2x) }"
    assert _rules(tmp_path, css, "site.css") == [UPGRADABLE, UPGRADABLE]


@pytest.mark.parametrize(
    "url",
    ["http://localhost:8080/a.js", "http://LOCALHOST./a.js", "http://app.localhost/a.js",
     "http://127.0.0.1/a.js", "http://127.8.9.10:3000/a.js", "http://[::1]:8080/a.js"],
)  # fmt: skip
def test_loopback_hosts_are_not_mixed_content(tmp_path: Path, url: str) -> None:
    # Browsers treat loopback as potentially trustworthy (Secure Contexts §3.2): a page served over
    # HTTPS may load from it, so a developer's local script is not reported.
    page = (
        f'<script src="{url}"></script><img src="{url}"><style>@import "{url}";</style>'
        f'<script>fetch("{url}")</script>'
    )
    assert _rules(tmp_path, page) == []


@pytest.mark.parametrize(
    "url",
    ["http://localhost.acme.io/a.js", "http://128.0.0.1/a.js", "http://[::2]/a.js", "http://10.0.0.1/a.js"],
)
def test_hosts_that_only_look_like_loopback_are_still_mixed_content(tmp_path: Path, url: str) -> None:
    assert _rules(tmp_path, f'<script src="{url}"></script>') == [BLOCKABLE]
