"""One structured line per event, in logfmt, for every CLAUD process.

``log_event(logger, "job.placed", job="j1", node="s2")`` writes
``ts=2026-11-25T18:00:00.123Z level=info proc=master node=1 event=job.placed job=j1 node=s2``
to stderr: greppable by eye, parseable by Loki/Vector without a schema.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def __init__(self, process: str, node_id: str) -> None:
        super().__init__()
        self._prefix = f"proc={process} self={_quote(node_id)}"

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts += f".{int(record.msecs):03d}Z"
        fields: dict[str, Any] = getattr(record, "claud_fields", {})
        event = getattr(record, "claud_event", None)
        parts = [f"ts={ts}", f"level={record.levelname.lower()}", self._prefix]
        if event:
            parts.append(f"event={event}")
        else:
            parts.append(f"logger={record.name}")
            parts.append(f"msg={_quote(record.getMessage())}")
        parts.extend(f"{k}={_quote(v)}" for k, v in fields.items() if v is not None)
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def configure_logging(process: str, node_id: str, level: str = "info") -> None:
    """Route every logger (ours, uvicorn's, docker's) through one logfmt handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter(process, node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # One line per HTTP request would drown the events (heartbeats every second).
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with key=value fields; None-valued fields are left out."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"claud_event": event, "claud_fields": fields})
