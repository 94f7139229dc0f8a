"""`scan content` on campaign pages and stylesheets, `scan code` on source trees."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sendvault.scan.code import scan_code
from sendvault.scan.content import scan_content

PAGE = """<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
  <script src="http://cdn.example.org/app.js"></script>
  <link rel="stylesheet" href="http://cdn.example.org/site.css">
  <link rel="canonical" href="http://www.example.org/page">
  <style>
    @import url("http://fonts.example.org/base.css");
    @font-face { font-family: X; src: url(http://fonts.example.org/x.woff2); }
    .hero { background: url('http://img.example.org/hero.png'); }
  </style>
</head>
<body>
  <a href="http://www.example.org/terms">terms are a link, not mixed content</a>
  <img src="http://img.example.org/logo.png">
  <img srcset="https://ok.example.org/a.png 1x, http://img.example.org/b.png 2x">
  <img src="https://img.example.org/fine.png">
  <iframe src="http://video.example.org/embed"></iframe>
  <form action="http://forms.example.org/submit"></form>
  <video src="http://media.example.org/v.mp4" poster="http://media.example.org/p.jpg"></video>
  <div style="background-image: url(http://img.example.org/bg.jpg)"></div>
  <img src="http://{{ cdn_host }}/promo.png">
  <img src="%%=Concat('http://', @host, '/x.gif')=%%">
  <script>var pixel = "http://track.example.org/p.gif";</script>
</body>
</html>
"""


def _details(result: object, rule: str) -> list[str]:
    return [f.detail for f in result.findings if f.rule == rule]  # type: ignore[attr-defined]


def test_page_classifies_blockable_and_upgradable(tmp_path: Path) -> None:
    page = tmp_path / "campaign.html"
    page.write_text(PAGE)
    result = scan_content(str(page))
    blockable = " ".join(_details(result, "content.mixed-blockable"))
    upgradable = " ".join(_details(result, "content.mixed-upgradable"))
    for url in (
        "app.js",
        "site.css",
        "base.css",
        "x.woff2",
        "video.example.org/embed",
        "forms.example.org",
        "track.example.org",
        "b.png",  # chosen from a srcset: the initiator is "imageset", which is never upgraded
    ):
        assert url in blockable, url
    for url in ("hero.png", "logo.png", "v.mp4", "p.jpg", "bg.jpg", "promo.png"):
        assert url in upgradable, url
    everything = blockable + upgradable
    assert "terms" not in everything
    assert "canonical" not in everything
    assert "fine.png" not in everything
    assert "w3.org" not in everything
    assert "(built by template syntax)" in upgradable
    assert "campaign.html:4 <script src>" in blockable


def test_stylesheet_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.css").write_text(
        '@import "http://cdn.example.org/x.css";\nbody{background:url(http://i.example.org/b.png)}'
    )
    (tmp_path / "site" / "ok.html").write_text('<img src="https://i.example.org/a.png">')
    (tmp_path / "site" / "notes.txt").write_text("http://ignored.example.org/")
    result = scan_content(str(tmp_path / "site"))
    assert [f.rule for f in result.findings] == ["content.mixed-blockable", "content.mixed-upgradable"]
    assert result.passed == 1


def test_clean_page_passes(tmp_path: Path) -> None:
    page = tmp_path / "ok.html"
    page.write_text('<script src="https://cdn.example.org/a.js"></script><img src="/local.png">')
    result = scan_content(str(page))
    assert result.findings == []
    assert result.passed == 1


def test_code_tree(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "webhook_url: http://hooks.acme-corp.com/mc\nsafe: https://api.acme-corp.com\nlocal: http://localhost:8080\n"
    )
    (tmp_path / "settings.py").write_text(
        '# see http://docs.acme-corp.com/old\nPOST_URL = "http://crm.acme-corp.com/post"\nDOCS = "http://www.w3.org/ns"\n'
    )
    (tmp_path / "app.xml").write_text(
        '<beans xmlns="http://www.springframework.org/schema/beans" '
        'xsi:schemaLocation="http://x.acme-corp.com/a.xsd"><endpoint>http://soap.acme-corp.com/svc</endpoint></beans>\n'
        "<url>http://db.acme-corp.com:8080/</url>\n"
    )
    (tmp_path / ".env").write_text("API_BASE=http://api.acme-corp.com\nTEST_URL=http://svc.test/\n")
    (tmp_path / "README.md").write_text("http://readme.acme-corp.com")
    result = scan_code(str(tmp_path))
    found = sorted(f.detail for f in result.findings)
    assert found == [
        ".env:1 http://api.acme-corp.com",
        "app.xml:1 http://soap.acme-corp.com/svc",  # only the namespace and schema values are skipped
        "app.xml:2 http://db.acme-corp.com:8080/",
        "config.yaml:1 http://hooks.acme-corp.com/mc",
        "settings.py:2 http://crm.acme-corp.com/post",
    ]


def test_code_respects_gitignore(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("generated/\n")
    (tmp_path / "generated").mkdir()
    (tmp_path / "generated" / "out.json").write_text('{"u": "http://gen.acme-corp.com"}')
    (tmp_path / "app.json").write_text('{"u": "http://real.acme-corp.com"}')
    result = scan_code(str(tmp_path))
    assert [f.detail for f in result.findings] == ["app.json:1 http://real.acme-corp.com"]
