"""Structured logging: one line per event, with the call id on every call-related line.

The call id lives in a context variable, so every log line emitted while a call is handled
(in any module) carries it without passing it around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

call_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("call_id", default="-")

_RESERVED = set(vars(logging.LogRecord("x", 0, "", 0, "", None, None))) | {"message", "asctime", "call_id"}


class _CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.call_id = call_id_var.get()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


def _value(v: Any) -> str:
    """One key=value value: plain when it is a printable word, else quoted and escaped (repr)."""
    text = str(v)
    return text if text.isprintable() and " " not in text and text else repr(text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        extra = " ".join(f"{k}={_value(v)}" for k, v in _fields(record).items())
        message = record.getMessage()
        if not message.isprintable():  # a value from outside must not forge a second log line
            message = message.encode("unicode_escape").decode("ascii")
        line = f"{ts}.{int(record.msecs):03d}Z {record.levelname} {record.name} call={record.call_id} {message}"
        if extra:
            line += " " + extra
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
            "call": record.call_id, "msg": record.getMessage(),
        }
        doc.update({k: v if isinstance(v, (int, float, bool, type(None))) else str(v)
                    for k, v in _fields(record).items()})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once for the process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_CallIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # panoramisk logs every reconnect attempt at ERROR; our adapter reports connection state itself.
    logging.getLogger("panoramisk").setLevel(logging.CRITICAL)
