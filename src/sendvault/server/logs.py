"""Log lines an operator can use: text or JSON on stderr, one line per event.

``log_format = "json"`` writes one object per line (``ts``, ``level``, ``logger``, ``msg`` and the
record's structured fields) for journald, Loki, Elastic or CloudWatch; ``text`` writes
``TIME LEVEL LOGGER: message key=value ...`` for people. Structured fields ride on a record's
``fields`` attribute (``log.info("...", extra={"fields": {...}})``). No caller's payload is ever
given to a logger: the access log (:mod:`sendvault.api.access`) names routes, statuses, counts
and client ids only.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import msgspec

from ..config import Settings

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]

_encoder = msgspec.json.Encoder()


def _timestamp(record: logging.LogRecord) -> str:
    return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as ``{"ts", "level", "logger", "msg", ...fields}``."""
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(doc).decode()


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record on one line (a traceback, for a bug, follows on the next lines)."""
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            said = getattr(record, "in_message", ())
            line += " " + " ".join(
                f"{k}={_text(v)}" for k, v in fields.items() if v is not None and k not in said
            )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: object) -> str:
    text = str(value)
    return text if text and not any(c in text for c in ' "=\n') else _encoder.encode(text).decode()


def configure_logging(settings: Settings) -> None:
    """Send every log line of this process to stderr in ``log_format`` from ``log_level`` up.

    Called once in the main process and once in each worker (spawned processes start afresh).
    uvicorn's own loggers go through the same handler rather than their own.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # uvicorn's access logger is off (ours has the route, client and item count); its error
    # logger speaks at warning and up, so a client that drops a connection is not an error line.
    logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.access").setLevel(logging.CRITICAL + 1)
