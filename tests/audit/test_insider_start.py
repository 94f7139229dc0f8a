"""A writer checks the log when it starts, and a purge anchor needs the purge's own record.

Found by the red-team round against a running server: a server started on a tampered log
answered 200 to its first call (the check ran only at the first append, after the answer); a
CLI command changed the vault and only then found it could not record the change; and an anchor
signed by someone who can get signatures, with no purge behind it, verified. Each attack here is
made by hand on the real files of a real `sendvault serve --dev` or CLI.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.audit.tamper import append_keyless, connect, cut_tail, head_row, rechain, sign_head
from tests.helpers import run_cli
from tests.server.conftest import start_dev_server, stop_dev_server
from tests.server.helpers import auth_header, https_request

from sendvault.audit import Event, open_audit
from sendvault.audit.store import head_message
from sendvault.config import load_settings


def _pub(home: Path) -> str:
    return str(home / "keys" / "audit-signing.pub")


def _key(home: Path) -> Ed25519PrivateKey:
    """The local signing key: an insider on the host can read it (or ask transit to sign)."""
    key = serialization.load_pem_private_key((home / "keys" / "audit-signing.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def _forge_anchor(home: Path, through: int) -> None:
    """Drop records 1..through and sign an anchor at ``through``: a purge with no purge record."""
    db = connect(home / "audit.db")
    (digest,) = db.execute("SELECT hash FROM audit_records WHERE seq = ?", (through,)).fetchone()
    sig = _key(home).sign(head_message("anchor", through, bytes(digest)))
    db.execute("DELETE FROM audit_records WHERE seq <= ?", (through,))
    db.execute("DELETE FROM audit_fingerprints WHERE seq <= ?", (through,))
    db.execute("DELETE FROM audit_checkpoints WHERE seq <= ?", (through,))
    db.execute(
        "INSERT OR REPLACE INTO audit_marks (kind, seq, hash, sig) VALUES ('anchor', ?, ?, ?)",
        (through, bytes(digest), sig),
    )
    db.close()


def _clients(home: Path, *names: str) -> None:
    for name in names:
        assert run_cli(home, "clients", "add", name).returncode == 0


def _verify(home: Path, *extra: str) -> tuple[int, str]:
    out = run_cli(home, "audit", "verify", "--public-key", _pub(home), *extra)
    assert "Traceback" not in out.stderr
    return out.returncode, out.stderr


# -- a purge anchor needs its purge record ---------------------------------------------------


def test_an_anchor_signed_without_a_purge_fails_verify_of_the_log_and_its_export(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _clients(home, "a", "b", "c", "d")
    assert _verify(home)[0] == 0
    _forge_anchor(home, 2)
    code, err = _verify(home)
    assert code == 1
    assert err.strip() == (
        "BROKEN at record 2: the purge anchor (record 2) has no audit:purge record naming it: records"
        " were dropped without a purge, or the purge's record was deleted"
    )
    export = tmp_path / "export.jsonl"
    assert run_cli(home, "audit", "export", "--output", str(export)).returncode == 0
    code, err = _verify(home, "--file", str(export))
    assert code == 1
    assert "has no audit:purge record" in err


def test_deleting_the_purge_record_and_resigning_the_head_fails_verify(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _clients(home, "a", "b", "c")
    purged = run_cli(home, "audit", "purge", "--before", "2099-01-01")
    assert purged.returncode == 0, purged.stderr
    assert "2 record(s) removed through record 2" in purged.stderr
    assert _verify(home)[0] == 0  # a real purge: anchor at 2, its record at 4
    db = connect(home / "audit.db")
    body = db.execute("SELECT body FROM audit_records WHERE seq = 4").fetchone()[0]
    assert json.loads(body)["meta"] == {"removed": 2, "through_seq": 2}
    db.execute("DELETE FROM audit_records WHERE seq = 4")
    db.execute("DELETE FROM audit_checkpoints WHERE seq = 4")
    db.close()
    sign_head(home / "audit.db", _key(home), ts_us=head_row(home / "audit.db")[3])
    code, err = _verify(home)
    assert code == 1
    assert "the purge anchor (record 2) has no audit:purge record" in err


def test_a_purge_recorded_after_its_anchor_as_earlier_versions_did_still_verifies(tmp_path: Path) -> None:
    """Earlier versions committed the anchor, then appended the purge record on its own."""
    home = tmp_path / "home"
    _clients(home, "a", "b", "c")
    log = open_audit(load_settings(env={"SENDVAULT_HOME": str(home)}))
    _forge_anchor(home, 2)  # what the old purge's first transaction left
    log.record_sync(Event.AUDIT_PURGE, actor="cli:old", meta={"removed": 2, "through_seq": 2})
    log.close()
    assert _verify(home)[0] == 0
    assert run_cli(home, "clients", "add", "e").returncode == 0  # a writer starts on it


def test_a_purge_record_naming_another_anchor_does_not_vouch_for_this_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _clients(home, "a", "b", "c", "d")
    assert run_cli(home, "audit", "purge", "--before", "2099-01-01").returncode == 0  # anchor 3, record 5
    _clients(home, "e")
    _forge_anchor(home, 5)  # drops the real purge's record too, signs a new anchor
    code, err = _verify(home)
    assert code == 1
    assert "the purge anchor (record 5) has no audit:purge record" in err


# -- a server started on a tampered log refuses from its first call ---------------------------

SOURCE = b'"client":"b"'
FORGED = b'"client":"x"'


def _rechain_keyless(home: Path) -> None:
    rechain(home / "audit.db", 2, SOURCE, FORGED)


def _cut_tail(home: Path) -> None:
    cut_tail(home / "audit.db", 2)


def _appended_without_key(home: Path) -> None:
    append_keyless(home / "audit.db", 2)


def _head_replaced(home: Path) -> None:
    db = connect(home / "audit.db")
    db.execute("UPDATE audit_marks SET hash = zeroblob(32) WHERE kind = 'head'")
    db.close()


def _edited_after_the_checkpoint(home: Path) -> None:
    """A record after the newest checkpoint changed, links not redone: the head still matches."""
    db = connect(home / "audit.db")
    (top,) = db.execute("SELECT max(seq) FROM audit_records").fetchone()
    db.execute("DELETE FROM audit_checkpoints WHERE seq >= ?", (top - 1,))
    db.execute("UPDATE audit_records SET body = CAST(body || ' ' AS BLOB) WHERE seq = ?", (top - 1,))
    db.close()


def _anchor_without_purge(home: Path) -> None:
    _forge_anchor(home, 2)


TAMPERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "rechain-without-key": (_rechain_keyless, "does not match the signed head"),
    "cut-tail": (_cut_tail, "missing (deleted)"),
    "appended-without-key": (_appended_without_key, "after the signed head"),
    "head-replaced": (_head_replaced, "does not verify"),
    "edited-after-checkpoint": (_edited_after_the_checkpoint, "links do not hold"),
    "anchor-without-purge": (_anchor_without_purge, "has no audit:purge record"),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_serve_on_a_tampered_log_answers_503_from_its_first_call(tamper: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _clients(home, "a", "b", "c")
    server = start_dev_server(home)  # makes the dev client, recorded as record 4
    stop_dev_server(server)
    assert _verify(home)[0] == 0
    run, alert = TAMPERS[tamper]
    run(home)
    before = head_row(home / "audit.db")
    records = connect(home / "audit.db").execute("SELECT count(*) FROM audit_records").fetchone()
    server = start_dev_server(home, wait_healthy=False)
    try:
        auth = {"authorization": auth_header(server), "content-type": "application/json"}
        first = https_request(server, "POST", "/v1/mc/resolve", {"tokens": []}, auth)
        assert first[0] == 503, first
        assert json.loads(first[2])["reason"] == "audit log unavailable"
        status, _, body = https_request(server, "GET", "/healthz")
        assert (status, json.loads(body)) == (
            503,
            {"status": "unavailable", "store": "up", "audit": "stopped"},
        )
        stranger = https_request(server, "POST", "/v1/mc/resolve", {"tokens": []})
        assert stranger[0] == 503
    finally:
        output = stop_dev_server(server)
    assert "ALERT audit log integrity" in output
    assert alert in output
    assert head_row(home / "audit.db") == before  # nothing was signed over the forgery
    assert connect(home / "audit.db").execute("SELECT count(*) FROM audit_records").fetchone() == records


# -- CLI commands refuse before changing anything ----------------------------------------------


def _vault_state(home: Path) -> list[object]:
    """What the commands below would change: clients and their secrets, erasures, data keys."""
    db = sqlite3.connect(home / "sendvault.db")
    try:
        return [
            db.execute("SELECT client_id, secret_hash FROM api_clients ORDER BY client_id").fetchall(),
            db.execute("SELECT token, erased_at FROM contacts ORDER BY token").fetchall(),
            db.execute("SELECT id FROM data_keys ORDER BY id").fetchall(),
        ]
    finally:
        db.close()


def _refused(home: Path, *args: str) -> None:
    out = run_cli(home, *args)
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith("error: the audit log does not verify (")
    assert lines[0].endswith("): nothing was changed")
    assert lines[1].startswith("hint: run `sendvault audit verify`")
    assert out.stdout == ""


@pytest.mark.parametrize("tamper", ["rechain-without-key", "cut-tail", "anchor-without-purge"])
def test_state_changing_commands_refuse_a_tampered_log_without_changing_anything(
    tamper: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    _clients(home, "a", "b", "c")
    token = run_cli(home, "token", "get", "--type", "email", "ann@example.com").stdout.strip()
    assert token
    TAMPERS[tamper][0](home)
    before, state = head_row(home / "audit.db"), _vault_state(home)
    _refused(home, "clients", "add", "mallory")
    _refused(home, "clients", "remove", "b")
    _refused(home, "clients", "rotate-secret", "c")
    _refused(home, "erase", "--token", token)
    _refused(home, "keys", "rotate", "dek")
    _refused(home, "audit", "purge", "--before", "2099-01-01")
    assert _vault_state(home) == state
    assert head_row(home / "audit.db") == before
