"""`scan code`: comments per language, namespace values, loopback and templated hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sendvault.scan.code import scan_code


def _found(tmp_path: Path, name: str, text: str) -> list[str]:
    (tmp_path / name).write_text(text)
    return [f.detail for f in scan_code(str(tmp_path)).findings]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param(
            "a.py", 'URL = "https://ok.acme-corp.io"  # was http://old.acme-corp.io\n', id="python-trailing"
        ),
        pytest.param("a.py", '"""Docs at http://docs.acme-corp.io/x."""\n', id="python-module-docstring"),
        pytest.param(
            "a.py",
            'def f():\n    """See\n    http://docs.acme-corp.io/x\n    """\n',
            id="python-function-docstring",
        ),
        pytest.param("a.js", "const a = 1; // http://old.acme-corp.io\n", id="js-trailing"),
        pytest.param("a.js", "/* block\n   http://block.acme-corp.io\n*/\n", id="js-block"),
        pytest.param("A.java", " * @see http://docs.acme-corp.io/\n", id="javadoc-line"),
        pytest.param("a.go", "x := 1 // http://old.acme-corp.io\n", id="go-trailing"),
        pytest.param("a.php", "<?php # http://old.acme-corp.io\n", id="php-hash"),
        pytest.param(
            "a.yaml", "url: https://ok.acme-corp.io # was http://old.acme-corp.io\n", id="yaml-trailing"
        ),
        pytest.param(
            "a.toml", 'url = "https://ok.acme-corp.io" # http://old.acme-corp.io\n', id="toml-trailing"
        ),
        pytest.param("a.ini", "; http://old.acme-corp.io\n", id="ini-semicolon"),
        pytest.param(".env", "A=1 # http://old.acme-corp.io\n", id="env-trailing"),
        pytest.param(
            "a.sh", "curl https://ok.acme-corp.io  # http://old.acme-corp.io\n", id="shell-trailing"
        ),
        pytest.param(
            "a.xml", "<!-- old\n<url>http://commented.acme-corp.io</url>\n-->\n", id="xml-multiline"
        ),
        pytest.param("a.json", '{\n  // http://old.acme-corp.io\n  "a": 1\n}\n', id="jsonc-line"),
    ],
)
def test_urls_in_comments_are_not_reported(tmp_path: Path, name: str, text: str) -> None:
    assert _found(tmp_path, name, text) == []


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param(
            "a.js",
            'const u = "http://api.acme-corp.io/x"; // note\n',
            "a.js:1 http://api.acme-corp.io/x",
            id="js",
        ),
        pytest.param(
            "a.py",
            'SQL = """\nhttp://api.acme-corp.io/x\n"""\n',
            "a.py:2 http://api.acme-corp.io/x",
            id="py-triple",
        ),
        pytest.param(
            "a.yaml",
            "url: http://api.acme-corp.io/#/x\n",
            "a.yaml:1 http://api.acme-corp.io/#/x",
            id="yaml-fragment",
        ),
        pytest.param(
            "A.java",
            'String s = """\n  http://api.acme-corp.io/x\n  """;\n',
            "A.java:2 http://api.acme-corp.io/x",
            id="java-text-block",
        ),
    ],
)
def test_urls_in_strings_that_look_like_comments_are_reported(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    assert _found(tmp_path, name, text) == [expected]


def test_an_endpoint_on_a_line_with_an_xml_namespace_is_reported(tmp_path: Path) -> None:
    found = _found(
        tmp_path,
        "svc.xml",
        '<endpoint xmlns:x="http://ns.acme-corp.io/x" address="http://soap.acme-corp.io/svc"/>\n',
    )
    assert found == ["svc.xml:1 http://soap.acme-corp.io/svc"]


def test_an_endpoint_on_a_line_with_a_json_schema_is_reported(tmp_path: Path) -> None:
    found = _found(
        tmp_path,
        "c.json",
        '{"$schema": "http://schemas.acme-corp.io/c", "webhook": "http://hook.acme-corp.io/p"}\n',
    )
    assert found == ["c.json:1 http://hook.acme-corp.io/p"]


def test_schema_locations_and_target_namespaces_are_not_endpoints(tmp_path: Path) -> None:
    found = _found(
        tmp_path,
        "a.xsd.xml",
        '<xs:schema targetNamespace="http://ns.acme-corp.io/a"\n'
        '  xsi:schemaLocation="http://ns.acme-corp.io/a\n   http://ns.acme-corp.io/a.xsd">\n',
    )
    assert found == []


def test_ipv6_loopback_is_ignored_with_or_without_brackets(tmp_path: Path) -> None:
    found = _found(
        tmp_path, "a.yaml", "a: http://[::1]:8080/\nb: http://[0:0:0:0:0:0:0:1]/\nc: http://[2001:db8::5]/\n"
    )
    assert found == ["a.yaml:3 http://[2001:db8::5]/"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("a.js", 'const h = "http://${HOOK_HOST}/post";\n', id="js-dollar-brace"),
        pytest.param("a.js", "const u = `http://${host}/x`;\n", id="js-template-literal"),
        pytest.param("a.py", 'HOOK = f"http://{host}/hook"\n', id="python-f-string"),
        pytest.param("a.py", 'HOOK = "http://%(host)s/hook"\n', id="python-percent"),
        pytest.param("a.yaml", "hook: http://{{ .Values.host }}/post\n", id="helm"),
    ],
)
def test_a_templated_host_behind_a_literal_http_scheme_is_reported(
    tmp_path: Path, name: str, text: str
) -> None:
    found = _found(tmp_path, name, text)
    assert len(found) == 1
    assert found[0].startswith(f"{name}:1 http://")


def test_a_bare_scheme_prefix_is_not_an_endpoint(tmp_path: Path) -> None:
    assert _found(tmp_path, "a.py", 'if url.startswith("http://"):\n    pass\n') == []


def test_findings_carry_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "hooks.yaml").write_text("# hooks\npost_url: http://hooks.acme-corp.io/mc\n")
    [finding] = scan_code(str(tmp_path)).findings
    assert (finding.file, finding.line) == ("conf/hooks.yaml", 2)


def test_a_php_variable_named_schema_is_not_a_json_schema(tmp_path: Path) -> None:
    found = _found(tmp_path, "a.php", '<?php $schema = "http://api.acme-corp.io/schema";\n')
    assert found == ["a.php:1 http://api.acme-corp.io/schema"]


def test_a_yaml_schema_key_is_not_an_endpoint(tmp_path: Path) -> None:
    assert _found(tmp_path, "a.yaml", "$schema: http://schemas.acme-corp.io/c\n") == []
