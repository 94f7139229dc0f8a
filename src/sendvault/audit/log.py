"""The audit log: one entry point, a bounded queue, one writer thread, grouped transactions.

``record`` never blocks: it queues and returns, or raises :class:`AuditUnavailable` when the
queue is full or writes are failing; the API then answers 503. From a failed write until a write
succeeds every record is refused. A queued record whose write fails is kept and retried until it
is written (and the reason logged, without payloads): that retry is the probe that ends the
refusal; with nothing to retry, the writer signs the head again as its probe. A caller that waits
(``record_sync``, ``record_async``) is told of the failure instead. Each try is bounded by the
store's busy timeout, so a write stuck behind a lock fails in time rather than holding the log.
Nothing is dropped silently: only a process that dies with records still queued loses them, and
the signed head then shows exactly where the log ends.

Each new checkpoint goes to the witnesses (:mod:`.witness`) after its commit; a witness that
cannot be written stops the log like a failed write (503), and giving it the head is the probe.

A write refused because the log does not match its signed head (:class:`AuditTampered`, see
:mod:`.store`) is an integrity alarm: logged at CRITICAL with ``ALERT``, counted in
``sendvault_audit_integrity_failures_total``, and the log stays stopped (the API answers 503)
until the stored log matches its head again. While records wait for a checkpoint the writer
wakes in time to make one (``checkpoint_seconds``), even with nothing new to write.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

import msgspec

from ..errors import AuditTampered, AuditUnavailable
from ._metrics import INTEGRITY_FAILURES
from .events import Event
from .record import Sealer, canonical, redact
from .store import AuditStore, Mark, Pending
from .witness import Witnesses

__all__ = ["AuditLog"]

log = logging.getLogger("sendvault.audit")
_any = msgspec.json.Decoder(Any)
_MAX_GROUP = 500


class _Entry:
    __slots__ = ("done", "fields", "pending")

    def __init__(self, fields: dict[str, Any], done: Callable[[BaseException | None], None] | None) -> None:
        self.fields = fields
        self.done = done
        self.pending: Pending | None = None


class AuditLog:
    """Writes audit records for this process."""

    def __init__(
        self,
        store: AuditStore,
        sealer: Sealer,
        *,
        max_queue: int = 10_000,
        retry_seconds: float = 1.0,
        linger_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
        witness: Witnesses | None = None,
        refuse_tampered: bool = False,
    ) -> None:
        self.store = store
        self.witness = witness if witness else None
        # The newest checkpoint not yet given to the witnesses (set by the store after a commit).
        self._owed: Mark | None = None
        store.on_checkpoint = self._checkpointed
        self._linger = linger_seconds
        self.sealer = sealer
        self._clock = clock
        self._queue: queue.Queue[_Entry | None] = queue.Queue(maxsize=max_queue)
        self._failure: str | None = None
        # Set while the failure is an integrity alarm: the log is stopped until it checks again.
        self._tampered = False
        self._retry_seconds = retry_seconds
        try:
            # Checked before the first call is taken, not at the first append: a server must
            # answer 503 from its first call on a tampered log, never 200 for a call whose
            # record would be chained onto the forgery.
            self._check_at_start()
        except AuditTampered as exc:
            if refuse_tampered:
                store.close()
                raise
            self._fail(exc)
        self._thread = threading.Thread(target=self._run, name="sendvault-audit-writer", daemon=True)
        self._thread.start()

    # -- entry points ----------------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`AuditUnavailable` if records cannot be written right now.

        From a failed write until the writer's next successful one (it retries every
        ``retry_seconds``), every record is refused.
        """
        if self._failure is not None:
            raise AuditUnavailable(f"audit log unavailable: {self._failure}")

    def _check_at_start(self) -> None:
        """The log against its witnesses and its signed head (:meth:`AuditStore.check_log`)."""
        if self.witness is not None:
            # A rollback made while no writer ran shows against the newest witnessed head; a log
            # deleted and started again, or a shared witness, against another log's heads.
            self.store.trust_witnessed(self.witness.newest())
        self.store.check_log()

    @property
    def stopped(self) -> bool:
        """Whether the log is stopped by an integrity alarm (not an outage): see docs/audit.md."""
        return self._tampered

    def purge(self, before_us: int, **fields: Any) -> tuple[int, int]:
        """Remove records older than ``before_us`` with :meth:`AuditStore.purge`, which chains
        this purge's ``audit:purge`` record (``fields``, e.g. ``actor``) with the anchor in one
        transaction. Returns (records removed, last record removed)."""
        self.check()

        def record(count: int, last: int) -> Pending:
            meta = {"removed": count, "through_seq": last}
            event = Event.AUDIT_PURGE.value
            return self._pending({**fields, "event": event, "ts": self._clock(), "meta": meta})

        result = self.store.purge(before_us, record)
        self._witnessed()
        return result

    def record(
        self, event: Event, *, done: Callable[[BaseException | None], None] | None = None, **fields: Any
    ) -> None:
        """Queue one record (see :meth:`_body` for the fields); never blocks."""
        self.check()
        fields["event"] = Event(event).value
        fields.setdefault("ts", self._clock())
        try:
            self._queue.put_nowait(_Entry(fields, done))
        except queue.Full:
            raise AuditUnavailable("audit log unavailable: queue full") from None

    def record_sync(self, event: Event, timeout: float = 10.0, **fields: Any) -> None:
        """Record and wait for the commit (CLI commands that change state)."""
        future: Future[None] = Future()

        def done(error: BaseException | None) -> None:
            future.set_exception(error) if error else future.set_result(None)

        self.record(event, done=done, **fields)
        try:
            future.result(timeout=timeout)
        except TimeoutError:
            raise AuditUnavailable("audit log unavailable: write timed out") from None

    async def record_async(self, event: Event, **fields: Any) -> None:
        """Record and wait, without blocking the event loop, for the commit that holds it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def done(error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, future, error)

        self.record(event, done=done, **fields)
        await future

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is written (or failed)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        """Write what is queued, stop the writer, close the store."""
        self._queue.put(None)
        self._thread.join(timeout=30)
        self.store.close()
        if self.witness is not None:
            self.witness.close()

    # -- writer ----------------------------------------------------------------------------

    def _run(self) -> None:
        # Records whose callers did not wait (the API's) are kept and retried after a failed
        # write until they are written; callers that wait are told of the failure instead.
        retry: list[_Entry] = []
        stopping = False
        while not (stopping and not retry):
            group, stopping = self._collect(retry, stopping)
            if not group:
                if self._failure is not None and not stopping:
                    self._probe()
                elif self.store.checkpoint_due_in() == 0.0:
                    self._checkpoint()
                continue
            group = self._encoded(group)
            if not group:
                continue
            try:
                self.store.append([e.pending for e in group if e.pending is not None])
            except Exception as exc:  # noqa: BLE001 - reported to callers, retried for the rest
                retry = self._failed(group, exc, stopping)
            else:
                retry = []
                for entry in group:
                    if entry.done is not None:
                        entry.done(None)
                self._witnessed()
            for entry in group:
                if entry not in retry:
                    self._queue.task_done()
        if self.store.checkpoint_due_in() is not None and self._failure is None:
            # A short-lived writer (a CLI command) leaves its records under a checkpoint, and so
            # with the witnesses, rather than waiting for another writer's next one.
            self._checkpoint()

    def _failed(self, group: list[_Entry], exc: Exception, stopping: bool) -> list[_Entry]:
        """Tell waiting callers; return the records to retry after a pause."""
        self._fail(exc)  # logs the reason only: no payload, no traceback
        retry = [e for e in group if e.done is None]
        for entry in group:
            if entry.done is not None:
                entry.done(AuditUnavailable(f"audit log unavailable: {self._failure}"))
        if stopping and retry:
            log.error("audit: %d record(s) could not be written before shutdown", len(retry))
            return []
        if retry:
            time.sleep(self._retry_seconds)  # with nothing to retry, _collect's wait is the pause
        return retry

    def _collect(self, retry: list[_Entry], stopping: bool) -> tuple[list[_Entry], bool]:
        """The failed records still to write, then whatever is queued, up to the group limit.

        While writes fail with nothing to retry, the wait for a record ends after
        ``retry_seconds`` with an empty group: time to probe.
        """
        group = list(retry)
        if not group and not stopping:
            wait = self._retry_seconds if self._failure is not None else self.store.checkpoint_due_in()
            try:
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                return [], False
            if first is None:
                self._queue.task_done()
                return [], True
            group.append(first)
            if self._linger and first.done is None:
                # Let the records of the next moments join this group: one wakeup and one
                # transaction for many answers instead of one each, so the writer seldom takes
                # the GIL from the event loop. Nobody waits on these records (a caller who does,
                # like a CLI command, is written at once).
                time.sleep(self._linger)
        while len(group) < _MAX_GROUP:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._queue.task_done()
                return group, True
            group.append(more)
        return group, stopping

    def _encoded(self, group: list[_Entry]) -> list[_Entry]:
        """The group with each record encoded once (a retry reuses the encoding).

        A record that cannot be encoded is a bug in its caller; it must not hold the log (it
        would be retried, and every answer refused, forever). A caller that waits is told and
        its record left out; for the others a record of the failure, with the event and the
        time, is written in its place.
        """
        kept = []
        for entry in group:
            if entry.pending is None:
                try:
                    entry.pending = self._pending(entry.fields)
                except Exception as exc:  # noqa: BLE001 - any encoding failure is handled alike
                    if not self._unencodable(entry, type(exc).__name__):
                        continue
            kept.append(entry)
        return kept

    def _unencodable(self, entry: _Entry, error: str) -> bool:
        """Handle a record that failed to encode; whether a record of the failure stands in."""
        # The error's class only: its text or a traceback could show the payload.
        log.error("audit: a %s record could not be encoded (%s)", entry.fields["event"], error)
        if entry.done is not None:
            entry.done(AuditUnavailable(f"audit record could not be encoded ({error})"))
            self._queue.task_done()
            return False
        entry.pending = self._pending(
            {"event": entry.fields["event"], "ts": self._clock(), "meta": {"unencodable": error}}
        )
        return True

    def _probe(self) -> None:
        if self.witness is not None and self.witness.pending:
            self._witnessed()  # what failed was a witness: giving it its head is the probe
            return
        try:
            if self._tampered:
                self._check_at_start()  # the whole start-up check: the log must verify again
            self.store.probe()
        except Exception as exc:  # noqa: BLE001 - the failure goes on; logged once per reason
            self._fail(exc)
        else:
            self._witnessed()

    def _checkpoint(self) -> None:
        try:
            self.store.checkpoint()
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint stops the log like a failed write
            self._fail(exc)
        else:
            self._witnessed()

    def _checkpointed(self, head: Mark) -> None:
        self._owed = head

    def _witnessed(self) -> None:
        """After a successful write: give the witnesses any new checkpoint; the log runs again
        only when every witness has what it is owed."""
        if self.witness is not None:
            owed, self._owed = self._owed, None
            try:
                if owed is not None:
                    self.witness.deliver(owed)
                elif self.witness.pending:
                    self.witness.retry()
            except AuditUnavailable as exc:
                self._fail(exc)
                return
        self._owed = None
        self._recovered()

    def _fail(self, exc: Exception) -> None:
        failure = f"{type(exc).__name__}: {exc}"
        if failure != self._failure:
            # The reason only: no payload, and no traceback for an operational failure. Logged
            # when it starts or changes, not at every retry.
            if isinstance(exc, AuditTampered):
                self._tampered = True
                INTEGRITY_FAILURES.inc()
                log.critical(
                    "ALERT audit log integrity: %s; the log is stopped, nothing is signed over it, and"
                    " requests are refused until it verifies again (sendvault audit verify)",
                    exc,
                )
            else:
                log.error("audit write failed (%s); requests are refused until a write succeeds", failure)
        self._failure = failure

    def _recovered(self) -> None:
        if self._failure is not None:
            log.warning("audit writes succeed again; requests are accepted")
        self._failure = None
        self._tampered = False

    def _pending(self, fields: dict[str, Any]) -> Pending:
        values: list[str] = []
        request, _ = redact(_builtins(fields.get("request")), values)
        response, _ = redact(_builtins(fields.get("response")), values)
        extra = fields.get("fingerprint_values") or []
        fingerprints = tuple(self.sealer.fingerprint(v) for v in dict.fromkeys([*values, *extra]))
        body = {
            "v": 1,
            "ts_us": int(fields["ts"] * 1_000_000),
            "event": fields["event"],
            "actor": fields.get("actor"),
            "source": fields.get("source"),
            "route": fields.get("route"),
            "status": fields.get("status"),
            "latency_ms": fields.get("latency_ms"),
            "tls": fields.get("tls"),
            "counts": fields.get("counts"),
            "meta": _builtins(fields.get("meta")),
            "request": request,
            "response": response,
            "sealed": self.sealer.seal(values) if values else None,
            "fingerprints": list(fingerprints),
        }
        # Marketing Cloud payloads arrive as the exact bytes exchanged and are kept in their own
        # columns (covered by the chain hash): a side named by `sealed_side` ("request",
        # "response" or "both") sealed whole with one AES-GCM call, any other as the JSON sent.
        blobs = {}
        for side in ("request", "response"):
            raw = fields.get(f"{side}_raw")
            if raw is not None:
                sealed = fields.get("sealed_side") in (side, "both")
                blobs[side] = self.sealer.seal_blob(bytes(raw)) if sealed else bytes(raw)
                body[f"{side}_form"] = "sealed" if sealed else "json"
        return Pending(
            body["ts_us"],
            body["event"],
            body["actor"],
            body["route"],
            body["status"],
            canonical(body),
            fingerprints,
            blobs.get("request", b""),
            blobs.get("response", b""),
        )


def _builtins(value: object) -> Any:
    """JSON-like form of a payload: raw JSON bytes are decoded, structs turned into dicts."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return _any.decode(bytes(value))
        except msgspec.DecodeError:
            return {"$unparsed_bytes": len(value)}  # never stored raw: it could hold anything
    if isinstance(value, Mapping):
        return msgspec.to_builtins(dict(value))
    return msgspec.to_builtins(value)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
