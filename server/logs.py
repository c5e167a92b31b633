"""Structured JSON logging that never carries secrets.

:func:`configure_logging` installs one JSON-lines handler on the root logger and routes
uvicorn's loggers through it. Log calls pass extra fields with ``extra={"fields": {...}}``;
only these fields and the message are written. The relay never logs request bodies,
``Authorization`` headers, tokens, keys or ciphertext; :class:`JsonFormatter` also blanks
anything that looks like a bearer token as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import IO, Any

__all__ = ["JsonFormatter", "configure_logging", "log_event"]

_BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9_\-]{16,}")
logger = logging.getLogger("vox")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and extra ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _BEARER.sub("Bearer [redacted]", record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
        return json.dumps(out, default=str, separators=(",", ":"))


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        msg = _BEARER.sub("Bearer [redacted]", record.getMessage())
        fields = getattr(record, "fields", None)
        extra = " ".join(f"{k}={v}" for k, v in fields.items()) if isinstance(fields, dict) else ""
        return f"{ts} {record.levelname:<7} {record.name}: {msg} {extra}".rstrip()


def configure_logging(
    level: str = "info", *, json_lines: bool = True, stream: IO[str] | None = None
) -> None:
    """Send every log record (vox, uvicorn, alembic) as JSON lines to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else _PlainFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("alembic").setLevel("WARNING")
    # The websockets library logs whole frames (ciphertext, the auth token) at DEBUG through
    # the logger uvicorn gives it: never let those loggers go below INFO, whatever the level.
    for name in ("uvicorn.error", "websockets"):
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    # Libraries that log request URLs (a push endpoint's path is a capability) or SQL with
    # its parameters (token hashes, endpoints): warnings only, whatever the level.
    for name in ("httpx", "httpcore", "aiosqlite", "sqlalchemy", "asyncpg"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` on the ``vox`` logger with structured ``fields`` (never pass secrets)."""
    logger.log(level, event, extra={"fields": {"event": event, **fields}})
