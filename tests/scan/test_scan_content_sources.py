"""`scan content`: what counts as a request (and what does not), templates, and where it is."""

from __future__ import annotations

from pathlib import Path

from sendvault.scan.content import scan_content
from sendvault.scan.findings import CheckResult


def _scan(tmp_path: Path, text: str, name: str = "page.html") -> CheckResult:
    page = tmp_path / name
    page.write_text(text)
    return scan_content(str(page))


def _details(result: CheckResult) -> list[str]:
    return [f.detail for f in result.findings]


def test_json_ld_and_other_data_scripts_are_not_requests(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        '<script type="application/ld+json">{"@context": "http://schema.org", "url": "http://acme.io/"}</script>'
        '<script type="text/x-handlebars-template"><img src="http://i.acme.io/{{x}}.png"></script>',
    )
    assert result.findings == []


def test_javascript_scripts_are_still_scanned(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        '<script type="module">load("http://a.acme.io/m.js")</script>'
        '<script type="text/javascript; charset=utf-8">load("http://b.acme.io/t.js")</script>',
    )
    assert len(result.findings) == 2
    assert {f.rule for f in result.findings} == {"content.mixed-blockable"}


def test_standards_urls_and_comments_in_scripts_are_not_requests(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        '<script>\nvar svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");\n'
        "// the old endpoint was http://old.acme.io/\n/* http://older.acme.io/ */\n</script>",
    )
    assert result.findings == []


def test_a_scheme_test_in_a_script_is_not_a_request_but_a_joined_host_is(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        '<script>\nif (u.startsWith("http://")) {}\nvar p = "http://" + host + "/p.gif";\n</script>',
    )
    assert [f.line for f in result.findings] == [3]


def test_an_https_url_carrying_http_in_its_query_string_is_fine(tmp_path: Path) -> None:
    result = _scan(tmp_path, '<img src="https://cdn.acme.io/x.png?ref=http://tracker.acme.io/t">')
    assert result.findings == []


def test_an_attribute_url_may_start_after_whitespace(tmp_path: Path) -> None:
    result = _scan(tmp_path, '<img src="  http://i.acme.io/a.png ">')
    assert _details(result) == [f"{tmp_path / 'page.html'}:1 <img src> http://i.acme.io/a.png"]


def test_a_url_built_by_an_ampscript_variable_is_reported_where_it_is_used(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        '%%[ SET @img = "http://i.acme.io/promo.png" ]%%\n'
        '<a href="%%=v(@img)=%%">link</a>\n'
        '<img src="%%=v(@img)=%%">',
    )
    [finding] = result.findings
    assert finding.rule == "content.mixed-upgradable"
    assert finding.line == 3
    assert "@img = http://i.acme.io/promo.png on line 1" in finding.detail


def test_a_url_built_by_a_liquid_variable_is_reported_where_it_is_used(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        '{% assign lib = "http://cdn.acme.io/lib.js" %}\n<script src="{{ lib }}"></script>',
    )
    [finding] = result.findings
    assert finding.rule == "content.mixed-blockable"
    assert "lib = http://cdn.acme.io/lib.js" in finding.detail


def test_ampscript_with_double_quotes_inside_a_double_quoted_attribute(tmp_path: Path) -> None:
    result = _scan(tmp_path, '<img src="%%=Concat("http://", @host, "/q.gif")=%%" alt="x">')
    [detail] = _details(result)
    assert detail.endswith(':1 <img src> %%=Concat("http://", @host, "/q.gif")=%% (built by template syntax)')


def test_https_template_urls_are_fine(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        '%%[ SET @img = "https://i.acme.io/a.png" ]%%<img src="%%=v(@img)=%%">'
        '<img src="%%=Concat(\'https://\', @host)=%%"><img src="{{ cdn }}/a.png">',
    )
    assert result.findings == []


def test_findings_carry_the_file_relative_to_the_scanned_directory_and_the_line(tmp_path: Path) -> None:
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "a.html").write_text('<p>\n<script src="http://c.acme.io/a.js"></script>')
    result = scan_content(str(tmp_path))
    [finding] = result.findings
    assert (finding.file, finding.line) == ("mail/a.html", 2)
    assert finding.detail.startswith("mail/a.html:2 <script src>")


def test_stylesheet_findings_carry_line_numbers(tmp_path: Path) -> None:
    result = _scan(tmp_path, "a {}\n\nb { background: url(http://i.acme.io/b.png) }\n", "site.css")
    [finding] = result.findings
    assert finding.line == 3
    assert ":3 " in finding.detail


def test_style_element_findings_count_lines_inside_the_element(tmp_path: Path) -> None:
    result = _scan(tmp_path, "<style>\na {}\nb { background: url(http://i.acme.io/b.png) }\n</style>")
    assert [f.line for f in result.findings] == [3]


def test_a_directory_without_pages_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("http://i.acme.io/a.png")
    result = scan_content(str(tmp_path))
    assert result.unknown
    assert result.passed == 0
    assert [f.rule for f in result.findings] == ["content.unknown"]


def test_line_numbers_stay_true_after_a_multi_line_template_block(tmp_path: Path) -> None:
    result = _scan(tmp_path, '%%[\n  VAR @a\n  SET @a = 1\n]%%\n<img src="http://i.acme.io/a.png">')
    assert [f.line for f in result.findings] == [5]


def test_personalisation_in_the_query_is_not_called_template_built(tmp_path: Path) -> None:
    result = _scan(tmp_path, '<img src="http://view.acme.io/open.gif?id=%%_subscriberkey%%">')
    [detail] = _details(result)
    assert detail.endswith("<img src> http://view.acme.io/open.gif?id=%%_subscriberkey%%")
