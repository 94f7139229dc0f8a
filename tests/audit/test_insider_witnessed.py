"""The issue's "done when": an insider with write access to the data folder against the production
setup (heads signed in OpenBao transit, checkpoints witnessed in a file elsewhere, the verifier's
own trusted key and witness) cannot make `audit verify` pass on a log they changed, dropped or
rolled back. And with the local key (readable by the insider) the witnessed part still holds.

Every attack is made by hand on the real files (tests/audit/tamper.py), then the real CLI verifies.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.audit.conftest import fill
from tests.audit.tamper import append_keyless, connect, cut_tail, head_row, rechain, sign_head
from tests.helpers import run_cli
from tests.openbao_server import OpenBaoServer

from sendvault.audit import open_audit
from sendvault.audit.keys import TransitSigner, public_pem, transit_client
from sendvault.config import load_settings

SOURCE = b'"source":"192.0.2.1"'
FORGED = b'"source":"203.0.113.66"'
FILES = ("audit.db", "audit.db-wal", "audit.db-shm")


def _own_key_pair(home: Path) -> Ed25519PrivateKey:
    mine = Ed25519PrivateKey.generate()
    keys = home / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "audit-signing.key").write_bytes(
        mine.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (keys / "audit-signing.pub").write_text(public_pem(mine.public_key()))
    return mine


def _rechain(home: Path, backup: Path) -> None:
    rechain(home / "audit.db", 3, SOURCE, FORGED)


def _rechain_and_sign_with_own_key(home: Path, backup: Path) -> None:
    mine = _own_key_pair(home)
    rechain(home / "audit.db", 3, SOURCE, FORGED)
    with connect(home / "audit.db") as db:
        db.execute("DELETE FROM audit_checkpoints")
    sign_head(home / "audit.db", mine)


def _rollback(home: Path, backup: Path) -> None:
    for name in FILES:
        (home / name).unlink(missing_ok=True)
        if (backup / name).exists():
            shutil.copy(backup / name, home / name)


def _cut_tail_with_older_head(home: Path, backup: Path) -> None:
    db = sqlite3.connect(backup / "audit.db")
    older = db.execute("SELECT seq, hash, sig, ts_us FROM audit_marks WHERE kind = 'head'").fetchone()
    db.close()
    cut_tail(home / "audit.db", older[0], (older[0], bytes(older[1]), bytes(older[2]), older[3]))


def _drop_log(home: Path, backup: Path) -> None:
    for name in FILES:
        (home / name).unlink(missing_ok=True)


def _empty_tables(home: Path, backup: Path) -> None:
    with connect(home / "audit.db") as db:
        for table in ("audit_records", "audit_fingerprints", "audit_checkpoints", "audit_marks"):
            db.execute(f"DELETE FROM {table}")


def _drop_records_table(home: Path, backup: Path) -> None:
    with connect(home / "audit.db") as db:
        db.execute("DROP TABLE audit_records")


def _append_unsigned(home: Path, backup: Path) -> None:
    append_keyless(home / "audit.db", 3)


def _delete_records_and_sign_own_anchor(home: Path, backup: Path) -> None:
    mine = _own_key_pair(home)
    with connect(home / "audit.db") as db:
        db.execute("DELETE FROM audit_records WHERE seq <= 4")
        db.execute("DELETE FROM audit_fingerprints WHERE seq <= 4")
        db.execute("DELETE FROM audit_checkpoints")
    sign_head(home / "audit.db", mine)


ATTACKS: dict[str, tuple[Callable[[Path, Path], None], int]] = {
    "change-and-rechain": (_rechain, 1),
    "change-rechain-own-key": (_rechain_and_sign_with_own_key, 1),
    "rollback-to-older-copy": (_rollback, 1),
    "cut-tail-older-head": (_cut_tail_with_older_head, 1),
    "drop-log": (_drop_log, 2),
    "empty-tables": (_empty_tables, 1),
    "drop-records-table": (_drop_records_table, 1),
    "append-unsigned": (_append_unsigned, 1),
    "delete-oldest-own-key": (_delete_records_and_sign_own_anchor, 1),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_insider_cannot_make_verify_pass_with_transit_signing_and_a_witness(
    attack: str, openbao: OpenBaoServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    witness = tmp_path / "elsewhere" / "heads.jsonl"
    witness.parent.mkdir()
    env = {
        "SENDVAULT_HOME": str(home),
        "SENDVAULT_AUDIT_SIGNER": "transit",
        "SENDVAULT_AUDIT_TRANSIT_URL": openbao.url,
        "SENDVAULT_AUDIT_TRANSIT_KEY": openbao.new_key("ed25519", prefix="insider"),
        "SENDVAULT_AUDIT_TRANSIT_TOKEN": openbao.root_token,
        "SENDVAULT_AUDIT_TRANSIT_CA_FILE": str(openbao.ca_file),
        "SENDVAULT_AUDIT_WITNESS": f"file://{witness}",
        "SENDVAULT_AUDIT_CHECKPOINT_RECORDS": "2",
    }
    settings = load_settings(env=env)
    trusted = tmp_path / "trusted.pub"  # the verifier's own copy, off the host
    signer = TransitSigner(transit_client(settings), settings.audit_transit_key or "")
    trusted.write_text(public_pem(signer.public_key()))
    log = open_audit(settings)
    fill(log, 4)
    log.close()
    backup = tmp_path / "backup"
    backup.mkdir()
    for name in FILES:
        if (home / name).exists():
            shutil.copy(home / name, backup / name)
    log = open_audit(settings)
    fill(log, 4, start=4)
    log.close()
    verify = ["audit", "verify", "--public-key", str(trusted), "--witness", f"file://{witness}"]
    ok = run_cli(home, *verify)
    assert ok.returncode == 0, ok.stderr
    run, code = ATTACKS[attack]
    run(home, backup)
    # The verifier runs with no sendvault settings from the host: only its key and its witness.
    out = run_cli(home, *verify, env={"SENDVAULT_AUDIT_SIGNER": "local"})
    assert out.returncode == code, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr


def test_with_the_local_key_the_insider_still_cannot_rewrite_witnessed_records(tmp_path: Path) -> None:
    """The local key sits in the folder, so the insider re-signs; the witness still holds."""
    home = tmp_path / "home"
    witness = tmp_path / "elsewhere" / "heads.jsonl"
    witness.parent.mkdir()
    settings = load_settings(
        env={"SENDVAULT_HOME": str(home), "SENDVAULT_AUDIT_WITNESS": f"file://{witness}"}
    )
    log = open_audit(settings)
    fill(log, 5)
    log.close()
    trusted = tmp_path / "trusted.pub"
    shutil.copy(home / "keys" / "audit-signing.pub", trusted)
    key = serialization.load_pem_private_key((home / "keys" / "audit-signing.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    rechain(home / "audit.db", 2, SOURCE, FORGED)
    with connect(home / "audit.db") as db:
        db.execute("DELETE FROM audit_checkpoints")
    sign_head(home / "audit.db", key, ts_us=head_row(home / "audit.db")[3])
    plain = run_cli(
        home, "audit", "verify", "--public-key", str(trusted), env={"SENDVAULT_AUDIT_WITNESS": ""}
    )
    assert plain.returncode == 0  # the real key signs the forgery: nothing in the folder can tell
    out = run_cli(home, "audit", "verify", "--public-key", str(trusted), "--witness", f"file://{witness}")
    assert out.returncode == 1, out.stdout
    assert "differs from the known head" in out.stderr
