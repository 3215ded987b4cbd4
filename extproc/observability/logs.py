"""Log setup: text, JSON or logfmt lines, with the trace id on lines that belong to a trace.

zerohop logs state changes and cold starts, never a warm request.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
    }
    for key in ("trace_id", "span_id"):
        value = getattr(record, key, None)
        if value:
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, trace_id/span_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json.dumps(fields)


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtFormatter(logging.Formatter):
    """key=value pairs per record (time, level, logger, msg, trace_id/span_id, exception)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        fields["msg"] = fields.pop("message")
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", None)
        return f"{line} trace_id={trace_id}" if trace_id else line


def configure(level: str = "info", fmt: str = "text") -> None:
    from extproc.observability.telemetry import TraceIds

    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = {"json": JsonFormatter, "logfmt": LogfmtFormatter}.get(fmt, TextFormatter)()
    handler.setFormatter(formatter)
    handler.addFilter(TraceIds())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc and aiohttp are chatty at debug; keep them at warning unless zerohop itself is at debug.
    for noisy in ("grpc", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.INFO)
