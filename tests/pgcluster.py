"""PostgreSQL clusters a test starts itself, with Debian's ``initdb`` and ``pg_ctl``.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) every server command
runs as the ``postgres`` system user (``runuser``), and the cluster lives in a directory of its
own under the system temporary directory, owned by that user (pytest's own temporary folders are
private to root). Each cluster listens on 127.0.0.1 on a free port and on a Unix socket in its
folder, where the ``postgres`` superuser logs in with ``trust`` for set-up; TCP rules are the
test's own. :meth:`Cluster.destroy` stops the server and removes the folder, also after a
failure.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.helpers import free_port  # shared: never the same port twice

PG_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").exists() and (p / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def require_pg_bin() -> Path:
    """The bin folder; skip when PostgreSQL's server binaries are missing (fail when CI needs them)."""
    found = pg_bin()
    if found is None:
        if os.environ.get("SENDVAULT_TEST_REQUIRE_PG"):
            pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) are required but not under {PG_ROOT}")
        pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl) not under {PG_ROOT}")
    return found


def _as_server(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *cmd] if os.geteuid() == 0 else cmd


class Cluster:
    """One PostgreSQL server: ``root/data``, ``root/log``, socket in ``root``."""

    def __init__(self, root: Path, port: int, bindir: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.bin = bindir
        self.log = root / "log"

    # -- making one ------------------------------------------------------------------------

    @classmethod
    def new_root(cls) -> Path:
        """A folder the server user owns (and the test can read and remove)."""
        root = Path(tempfile.mkdtemp(prefix="sendvault-pg-"))
        root.chmod(0o755)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        return root

    @classmethod
    def init(cls, bindir: Path, settings: dict[str, str], hba: list[str]) -> Cluster:
        """``initdb`` a new cluster with ``settings`` (postgresql.conf) and ``hba`` (pg_hba.conf
        rules after ``local all all trust``); not started."""
        root = cls.new_root()
        cluster = cls(root, free_port(), bindir)
        try:
            cluster.run("initdb", "-D", str(cluster.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                        "--locale=C", "--no-sync", "--no-instructions")  # fmt: skip
            cluster.configure(settings, hba)
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def standby(self) -> Cluster:
        """A streaming standby of this (running) cluster: ``pg_basebackup -R``, then started."""
        root = self.new_root()
        standby = Cluster(root, free_port(), self.bin)
        try:
            standby.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast", "--no-sync")  # fmt: skip
            standby.configure({"hot_standby": "on"}, _hba(self.data))
            standby.start()
        except BaseException:
            standby.destroy()
            raise
        return standby

    def configure(self, settings: dict[str, str], hba: list[str]) -> None:
        base = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "40",
        }
        lines = [f"{k} = {v}" for k, v in {**base, **settings}.items()]
        # Appended: a standby's file already holds what `pg_basebackup -R` wrote (later lines win).
        auto = self.data / "postgresql.auto.conf"
        before = auto.read_text() if auto.exists() else ""
        self.write(auto, before + "\n".join(lines) + "\n")
        self.write(self.data / "pg_hba.conf", "\n".join(["local all all trust", *hba]) + "\n")

    def write(self, path: Path, text: str, mode: int = 0o600) -> None:
        """Write a file the server user owns."""
        path.write_text(text)
        path.chmod(mode)
        self.own(path)

    def own(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- running it ------------------------------------------------------------------------

    def run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            _as_server([str(self.bin / tool), *args]),
            capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root,
        )  # fmt: skip
        if done.returncode != 0:
            log = self.log.read_text()[-1500:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-1500:]}\n{log}")
        return done

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart``: every session is cut, the server is back when this returns. The log
        file is named so the new server does not hold the pipe this call reads to its end."""
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", mode, "-w", "-t", "60", "restart")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        """Stop the server (if it runs) and remove everything."""
        if self.running():
            subprocess.run(
                _as_server([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    # -- talking to it ---------------------------------------------------------------------

    def admin_url(self, dbname: str = "postgres") -> str:
        """The superuser over the Unix socket (trust)."""
        return f"postgresql://postgres@/{dbname}?host={self.root}&port={self.port}"

    def sql(self, *statements: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        """Run statements as the superuser; the last one's rows."""
        import psycopg

        rows: list[tuple[object, ...]] = []
        with psycopg.connect(self.admin_url(dbname), autocommit=True, connect_timeout=10) as conn:
            for statement in statements:
                cur = conn.execute(statement)  # type: ignore[call-overload]
                rows = cur.fetchall() if cur.description else []
        return rows

    def wait_until(self, query: str, *, timeout: float = 30, dbname: str = "postgres") -> None:
        """Poll ``query`` until its first value is true."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                rows = self.sql(query, dbname=dbname)
                if rows and rows[0][0]:
                    return
            except Exception:  # noqa: BLE001 - still starting: poll again
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{query!r} did not become true within {timeout} s")
            time.sleep(0.1)


def _hba(data: Path) -> list[str]:
    """The TCP rules of a cluster's pg_hba.conf (a standby keeps its primary's)."""
    lines = (data / "pg_hba.conf").read_text().splitlines()
    return [ln for ln in lines if ln and not ln.startswith("local ")]


@contextmanager
def clusters() -> Iterator[list[Cluster]]:
    """A list the test adds clusters to; every one is destroyed at the end, whatever happens."""
    made: list[Cluster] = []
    try:
        yield made
    finally:
        for cluster in reversed(made):
            cluster.destroy()
