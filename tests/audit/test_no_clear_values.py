"""After real traffic against `sendvault serve --dev`, no known clear value is anywhere: not in a
file under SENDVAULT_HOME, not in the server's own output, not on the stdout of a command that
does not reveal."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.helpers import run_cli
from tests.server.conftest import start_dev_server, stop_dev_server
from tests.server.helpers import auth_header, https_request

EMAIL = "grep.target@example.org"
PHONE = "13125550147"  # as Marketing Cloud sends it; the national digits are checked too
ATTRIBUTE = "Quetzalcoatlus"
CLEAR = [EMAIL.encode(), b"grep.target", PHONE.encode(), PHONE[1:].encode(), ATTRIBUTE.encode()]


def _traffic(home: Path) -> str:
    """Get Token for an email and a phone, resolve both with an attribute, and refused calls
    carrying the values; returns the server's own output."""
    server = start_dev_server(home)
    try:
        auth = {"authorization": auth_header(server), "content-type": "application/json"}
        items = [
            {"tokenRequestId": "e", "tokenValue": EMAIL, "tokenType": "Email"},
            {"tokenRequestId": "m", "tokenValue": PHONE, "tokenType": "MobileNumber"},
        ]
        status, _, body = https_request(server, "POST", "/v1/mc/tokens", {"tokenValues": items}, auth)
        assert status == 200
        tokens = [t["token"] for t in json.loads(body)["tokens"]]
        assert run_cli(home, "contact", "attrs", "set", tokens[0], f"FirstName={ATTRIBUTE}").returncode == 0
        resolve = {"tokens": [{"tokenRequestId": str(i), "token": t} for i, t in enumerate(tokens)]}
        status, _, body = https_request(server, "POST", "/v1/mc/resolve", resolve, auth)
        assert status == 200
        assert ATTRIBUTE in body.decode()
        # Refused calls whose bodies hold the values (a malformed one, an unauthenticated one),
        # and logins whose secret is one.
        broken = f'{{"tokenValues": [{{"tokenValue": "{EMAIL}", "x": "{PHONE}"'
        assert https_request(server, "POST", "/v1/mc/tokens", broken, auth)[0] == 400
        json_only = {"content-type": "application/json"}
        assert https_request(server, "POST", "/v1/mc/tokens", {"tokenValues": items}, json_only)[0] == 401
        login = {"authorization": "Basic " + base64.b64encode(f"mallory:{ATTRIBUTE}".encode()).decode()}
        assert https_request(server, "POST", "/v1/mc/resolve", resolve, login)[0] == 401
        form = f"grant_type=client_credentials&client_id=x&client_secret={ATTRIBUTE}&extra={EMAIL}"
        headers = {"content-type": "application/x-www-form-urlencoded"}
        assert https_request(server, "POST", "/oauth/token", form, headers)[0] == 401
    finally:
        output = stop_dev_server(server)
    return output


def test_no_clear_value_in_files_server_output_or_plain_stdout(tmp_path: Path) -> None:
    home = tmp_path / "home"
    output = _traffic(home).encode()
    commands = [
        ["audit", "show", "--json"],
        ["audit", "show"],
        ["audit", "search", "--value", EMAIL, "--type", "email", "--json"],
        ["audit", "search", "--value", PHONE, "--type", "mobile", "--json"],
        ["audit", "export"],
        ["audit", "verify"],
        ["audit", "head", "--json"],
    ]
    trust = {"SENDVAULT_AUDIT_PUBLIC_KEY": str(home / "keys" / "audit-signing.pub")}
    stdout = {" ".join(c): run_cli(home, *c, env=trust).stdout.encode() for c in commands}
    assert stdout["audit verify"].startswith(b"intact")
    found = json.loads(stdout[f"audit search --value {PHONE} --type mobile --json"])
    assert {r["event"] for r in found} >= {"mc:get-token", "mc:resolve"}
    files = {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}
    for value in CLEAR:
        assert value not in output, value
        for command, text in stdout.items():
            assert value not in text, (value, command)
        for name, data in files.items():
            assert value not in data, (value, name)
