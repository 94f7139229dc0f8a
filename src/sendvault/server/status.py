"""What an operator watches: `sendvault status` and the same facts as Prometheus gauges.

One function gathers the facts (version, schema, token counts, keys and their ages, the key
provider, the served certificate, the audit log's head and last verification) and says what
needs attention: a certificate expiring within ``cert_warn_days``, an audit log that does not
verify, a key provider that does not open the vault's keys, a database that does not answer.
It only reads, so it runs beside a serving process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import __version__
from .._fs import write_atomic
from ..config import Settings
from ..errors import SendvaultError

__all__ = ["StatusCollector", "collect_status", "note_verify", "read_verify_note"]

# Records checked at the end of the chain by every status (and every scrape): enough to notice
# tampering with recent records quickly, bounded so a status stays fast on a big log. The whole
# chain is `sendvault audit verify`'s job (schedule it; its result is noted for status).
_TAIL_RECORDS = 1000
_VERIFY_NOTE = "audit-verified.json"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def note_verify(
    settings: Settings, *, intact: bool, detail: dict[str, Any], clock: Callable[[], float] = time.time
) -> None:
    """Remember the outcome of a whole-chain `audit verify` of the database, for status."""
    doc = {"time": _iso(clock()), "ts": int(clock()), "intact": intact, **detail}
    with contextlib.suppress(OSError):
        write_atomic(settings.home_path / _VERIFY_NOTE, (json.dumps(doc) + "\n").encode(), mode=0o600)


def read_verify_note(settings: Settings) -> dict[str, Any] | None:
    """The last noted `audit verify`, or None."""
    try:
        doc = json.loads((settings.home_path / _VERIFY_NOTE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _certificate(settings: Settings, now: float) -> tuple[dict[str, Any], list[str]]:
    from .certfile import read_certificate  # noqa: PLC0415

    try:
        facts = read_certificate(settings.cert_path)
    except SendvaultError as exc:
        return {"path": str(settings.cert_path), "error": str(exc)}, [f"certificate: {exc}"]
    left = facts.not_after.timestamp() - now
    doc = {
        "path": str(facts.path),
        "subject": facts.subject,
        "issuer": facts.issuer,
        "names": list(facts.names),
        "not_before": facts.not_before.isoformat(),
        "not_after": facts.not_after.isoformat(),
        "days_left": round(left / 86400, 1),
        "self_issued": facts.self_issued,
    }
    attention = []
    if left < 0:
        attention.append(f"certificate expired on {facts.not_after:%Y-%m-%d}: install a renewed one")
    elif facts.not_before.timestamp() > now:
        attention.append(
            f"certificate is not valid until {facts.not_before:%Y-%m-%d %H:%M}Z: callers refuse it "
            "until then; install one valid today"
        )
    elif left < settings.cert_warn_days * 86400:
        attention.append(
            f"certificate expires in {left / 86400:.1f} days ({facts.not_after:%Y-%m-%d}), within "
            f"cert_warn_days ({settings.cert_warn_days}): renew it"
        )
    return doc, attention


def _vault(settings: Settings, now: float, counts: bool) -> tuple[dict[str, Any], list[str]]:
    from .preflight import database_label, open_keys, open_store_for_reading, read_kek  # noqa: PLC0415

    doc: dict[str, Any] = {
        "database": database_label(settings),
        "key_provider": {"name": settings.key_provider},
    }
    try:
        store = open_store_for_reading(settings)
    except SendvaultError as exc:
        doc["error"] = str(exc)
        return doc, [f"database: {exc}"]
    if store is None:
        doc["error"] = "not created yet (the first start creates it)"
        return doc, []
    try:
        facts = store.describe(counts=counts)
    except SendvaultError as exc:
        doc["error"] = str(exc)
        return doc, [f"database: {exc}"]
    finally:
        store.close()
    doc.update(
        schema=facts.schema,
        latest_schema=facts.latest_schema,
        tokens={"live": facts.live, "erased": facts.erased} if counts else None,
        keys=[
            {
                "id": k.id,
                "purpose": k.purpose,
                "provider": k.provider,
                "created": _iso(k.created_at),
                "age_days": round((now - k.created_at) / 86400, 1),
            }
            for k in facts.keys
        ],
    )
    attention = []
    try:
        opened = open_keys(facts, read_kek(settings), settings)
    except SendvaultError as exc:
        doc["key_provider"].update(ok=False, error=str(exc))
        attention.append(f"key provider: {exc}")
    else:
        doc["key_provider"].update(ok=True, keys_opened=opened)
    return doc, attention


def _audit(settings: Settings, now: float) -> tuple[dict[str, Any], list[str]]:
    doc: dict[str, Any] = {"enabled": settings.audit == "on", "last_verify": read_verify_note(settings)}
    if settings.audit == "off":
        return doc, []
    from ..audit import (  # noqa: PLC0415
        ChainBroken,
        open_audit_reader,
        signed_head,
        verify_store,
        writer_public_key,
    )

    path = settings.home_path / "audit.db"
    if not path.exists():
        return doc, []
    attention = []
    try:
        # The key the writers sign with (audit_public_key when set): status is this host's own
        # view; proof against an insider is `audit verify` with a key kept elsewhere.
        key = writer_public_key(settings)
    except SendvaultError as exc:
        doc["verified"] = False
        return doc, [f"audit log: {exc}"]
    if key is None:
        doc["verified"] = False
        return doc, ["audit log: the audit signing key is missing, so the log cannot be verified"]
    try:
        store = open_audit_reader(settings, key)  # read-only: status never writes the log
    except SendvaultError as exc:
        doc["verified"] = False
        return doc, [f"audit log: {exc}"]
    try:
        head = signed_head(store)
        doc["head"] = {
            "seq": head.seq,
            "time": _iso(head.ts_us / 1e6),
            "age_seconds": round(now - head.ts_us / 1e6),
        }
        first = head.seq - _TAIL_RECORDS + 1
        verified = verify_store(store, first=first if first > 1 else None)
        doc["verified"] = True
        doc["tail_checked"] = verified.records
    except ChainBroken as broken:
        doc["verified"] = False
        attention.append(
            f"audit log does not verify at record {broken.seq} ({broken.reason}): run sendvault audit verify"
        )
    except ValueError as exc:
        # A range the log no longer holds (purged past it) is no fault: check from its start.
        doc["verified"] = False
        attention.append(f"audit log: {exc}")
    except Exception as exc:  # noqa: BLE001 - an unreadable log needs attention, not a traceback
        doc["verified"] = False
        attention.append(f"audit log cannot be read ({type(exc).__name__})")
    finally:
        store.close()
    note = doc["last_verify"]
    if note is not None and note.get("intact") is False:
        attention.append(f"the last audit verify ({note.get('time')}) found the chain broken: investigate")
    return doc, attention


def _exchange(settings: Settings, now: float) -> tuple[dict[str, Any], list[str]]:
    """Local exchange folders against the retention period: what `exchange sweep` still owes.

    Remote folders need a network round trip each; `sendvault exchange status` reports them.
    """
    import os  # noqa: PLC0415

    exchange = settings.exchange
    doc: dict[str, Any] = {"retention_days": exchange.retention_days, "local_dirs": [],
                           "remotes": sorted(exchange.remotes)}  # fmt: skip
    attention = []
    for folder in exchange.local_dirs:
        files = overdue = 0
        soonest: float | None = None
        for root, _, names in os.walk(folder, followlinks=False):
            for name in names:
                try:
                    info = (Path(root) / name).lstat()
                except OSError:
                    continue
                files += 1
                left = exchange.retention_days - (now - info.st_mtime) / 86400
                overdue += left <= 0
                soonest = left if soonest is None else min(soonest, left)
        doc["local_dirs"].append(
            {"dir": folder, "files": files, "past_retention": overdue,
             "next_deadline_days": None if soonest is None else round(soonest, 1)}
        )  # fmt: skip
        if overdue:
            attention.append(
                f"exchange: {overdue} file(s) in {folder} are past the {exchange.retention_days:g}-day "
                "retention period: run sendvault exchange sweep (or schedule it)"
            )
    return doc, attention


def collect_status(
    settings: Settings, *, counts: bool = True, clock: Callable[[], float] = time.time
) -> dict[str, Any]:
    """Every fact `sendvault status` shows, and ``attention``: what needs an operator."""
    now = clock()
    attention: list[str] = []
    vault, more = _vault(settings, now, counts)
    attention += more
    certificate, more = _certificate(settings, now)
    attention += more
    audit, more = _audit(settings, now)
    attention += more
    exchange, more = _exchange(settings, now)
    attention += more
    return {
        "version": __version__,
        "time": _iso(now),
        "home": str(settings.home_path),
        **vault,
        "certificate": certificate,
        "audit": audit,
        "exchange": exchange,
        "attention": attention,
    }


class StatusCollector:
    """The status as Prometheus gauges, computed on scrape (at most every ``every`` seconds).

    ``served`` gives the facts of the certificate being served (after a failed reload it can
    differ from the file on disk); without it the file is read.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        served: Callable[[], Any] | None = None,
        reloads: Callable[[], dict[str, int]] | None = None,
        every: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._served = served
        self._reloads = reloads
        self._every = every
        self._clock = clock
        self._cached: tuple[float, dict[str, Any]] | None = None

    def _status(self) -> dict[str, Any]:
        now = self._clock()
        if self._cached is None or now - self._cached[0] >= self._every:
            self._cached = (now, collect_status(self._settings, clock=self._clock))
        return self._cached[1]

    def describe(self) -> list[Any]:
        """No fixed description: registering must not run a status."""
        return []

    def collect(self) -> Iterator[Any]:
        """The gauges."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        status = self._status()
        now = self._clock()
        info = GaugeMetricFamily("sendvault_info", "sendvault version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        not_after = self._not_after(status)
        if not_after is not None:
            yield GaugeMetricFamily(
                "sendvault_certificate_expiry_seconds",
                "Seconds until the served HTTPS certificate expires (negative once expired).",
                value=not_after - now,
            )
            yield GaugeMetricFamily(
                "sendvault_certificate_not_after_timestamp_seconds",
                "When the served HTTPS certificate expires (Unix time).",
                value=not_after,
            )
        if self._reloads is not None:
            reloads = CounterMetricFamily(
                "sendvault_certificate_reloads", "Certificate reloads by result.", labels=["result"]
            )
            for result, count in self._reloads().items():
                reloads.add_metric([result], count)
            yield reloads
        audit = status["audit"]
        if audit["enabled"] and "verified" in audit:
            yield GaugeMetricFamily(
                "sendvault_audit_verified",
                "1 when the audit log's signed head and its last records verify, else 0.",
                value=1 if audit["verified"] else 0,
            )
        if audit.get("head"):
            yield GaugeMetricFamily(
                "sendvault_audit_head_record", "Number of the last audit record.", value=audit["head"]["seq"]
            )
            yield GaugeMetricFamily(
                "sendvault_audit_head_age_seconds",
                "Seconds since the audit log's signed head was last written.",
                value=audit["head"]["age_seconds"],
            )
        note = audit.get("last_verify")
        if note and isinstance(note.get("ts"), int):
            yield GaugeMetricFamily(
                "sendvault_audit_last_verify_timestamp_seconds",
                "When `sendvault audit verify` last checked the whole chain (Unix time).",
                value=note["ts"],
            )
            yield GaugeMetricFamily(
                "sendvault_audit_last_verify_intact",
                "1 when that verify found the chain intact.",
                value=1 if note.get("intact") else 0,
            )
        provider = status.get("key_provider", {})
        if "ok" in provider:
            up = GaugeMetricFamily(
                "sendvault_key_provider_up",
                "1 when the key provider opens the vault's keys.",
                labels=["provider"],
            )
            up.add_metric([str(provider["name"])], 1 if provider["ok"] else 0)
            yield up
        tokens = status.get("tokens")
        if tokens and tokens.get("live") is not None:
            family = GaugeMetricFamily(
                "sendvault_stored_tokens", "Tokens in the vault by state.", labels=["state"]
            )
            family.add_metric(["live"], tokens["live"])
            family.add_metric(["erased"], tokens["erased"])
            yield family
        data_keys = [k for k in status.get("keys", []) if k["purpose"] == "data"]
        if data_keys:
            newest = max(data_keys, key=lambda k: k["id"])
            yield GaugeMetricFamily(
                "sendvault_data_key_age_seconds",
                "Age of the newest data key (new values are sealed with it).",
                value=newest["age_days"] * 86400,
            )
        yield GaugeMetricFamily(
            "sendvault_attention",
            "Number of things `sendvault status` says need attention.",
            value=len(status["attention"]),
        )

    def _not_after(self, status: dict[str, Any]) -> float | None:
        if self._served is not None:
            facts = self._served()
            if facts is not None:
                return float(facts.not_after.timestamp())
        cert = status.get("certificate", {})
        if "not_after" in cert:
            return dt.datetime.fromisoformat(cert["not_after"]).timestamp()
        return None
