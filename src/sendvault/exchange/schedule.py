"""Scheduled pull, sweep and status for ``sendvault serve``, from the config file's [exchange].

One thread in the server's main process runs the jobs of ``exchange.schedule``: each first right
after start-up, then every ``every_minutes``. A failing job is logged (without contact data) and
tried again at its next turn; it never stops the server. Transfers and deletions are audited as
from the command line, with the actor ``scheduler``; a status warning is logged and audited.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ExchangeJob, Settings
from ..errors import SendvaultError
from ._state import TransferState
from .sftp import remote_from_settings
from .transfer import Exchange

__all__ = ["Scheduler", "audit_recorder"]

log = logging.getLogger("sendvault.exchange")
Record = Callable[[str, dict[str, Any], dict[str, Any] | None], None]


def audit_recorder(settings: Settings) -> Record:
    """A ``record`` that writes the scheduler's events to the audit log (actor ``scheduler``)."""
    if settings.audit != "on":
        return lambda event, meta, counts: None
    from ..audit import Event, open_audit  # noqa: PLC0415 - the audit log opens only with jobs

    audit = open_audit(settings)

    def record(event: str, meta: dict[str, Any], counts: dict[str, Any] | None) -> None:
        audit.record_sync(Event(event), actor="scheduler", meta=meta, counts=counts)

    return record


class Scheduler:
    """Runs the configured exchange jobs on a thread until :meth:`stop`."""

    def __init__(self, settings: Settings, record: Record, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._exchange = Exchange(
            TransferState(settings.home_path / "exchange" / "state.json"),
            record,
            clock=clock,
            retention_days=settings.exchange.retention_days,
            warn_days=settings.exchange.warn_days,
        )
        self._record = record
        self._stop = threading.Event()
        self.runs: list[tuple[str, str]] = []  # (job, outcome), for tests and status
        self._thread = threading.Thread(target=self._run, name="sendvault-exchange-scheduler", daemon=True)

    def start(self) -> Scheduler:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the job in progress."""
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        jobs = list(self._settings.exchange.schedule)
        due = [time.monotonic()] * len(jobs)
        while not self._stop.is_set():
            now = time.monotonic()
            for index, job in enumerate(jobs):
                if due[index] <= now and not self._stop.is_set():
                    self.runs.append((job.job, self.run_job(job)))
                    due[index] = time.monotonic() + job.every_minutes * 60
            wait = max(0.05, min(due) - time.monotonic()) if due else 3600.0
            self._stop.wait(min(wait, 5.0))

    def run_job(self, job: ExchangeJob) -> str:
        """Run one job now; its outcome (``ok``, ``warnings``, ``failed``)."""
        try:
            return asyncio.run(self._job(job))
        except SendvaultError as exc:
            # Our errors name files and hosts, never contact data; no traceback for them.
            log.error("exchange %s job failed: %s", job.job, exc)  # noqa: TRY400
            return "failed"
        except Exception as exc:  # noqa: BLE001 - a scheduled job never takes the server down
            # The class only: another library's message could quote anything.
            log.error("exchange %s job failed: %s", job.job, type(exc).__name__)  # noqa: TRY400
            return "failed"

    async def _job(self, job: ExchangeJob) -> str:
        settings = self._settings.exchange
        remotes = [settings.remotes[job.remote]] if job.remote else list(settings.remotes.values())
        if job.job == "pull":
            assert job.local_dir is not None  # checked when the settings were loaded
            for remote in remotes:
                await self._exchange.pull(remote_from_settings(remote), Path(job.local_dir))
            return "ok"
        if job.job == "sweep":
            self._exchange.sweep_local([Path(d) for d in settings.local_dirs])
            for remote in remotes:
                await self._exchange.sweep_remote(remote_from_settings(remote))
            return "ok"
        warned = 0
        for remote in remotes:
            report = await self._exchange.status(remote_from_settings(remote))
            for item in report.warnings:
                warned += 1
                log.warning("exchange: %s%s: %s", report.remote, item.path, item.warning)
            if report.warnings:
                self._record(
                    "exchange:status",
                    {"remote": report.remote, "warnings": [f.as_dict() for f in report.warnings]},
                    {"files": len(report.files), "warnings": len(report.warnings)},
                )
        return "warnings" if warned else "ok"
