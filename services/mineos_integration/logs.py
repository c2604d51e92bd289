"""JSON logs on stdout for Cloud Logging, carrying the MineOS trace id of the operation at hand.

Log lines never carry personal data or secrets: callers log ids, counts, states and error classes,
never a request body, an email, a name or a key.
"""

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_operation: ContextVar[dict[str, str]] = ContextVar("mineos_operation", default={})  # noqa: B039 - read-only


class JsonFormatter(logging.Formatter):
    """One JSON object per line with `severity`, which Cloud Logging reads as the level."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            **_operation.get(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            # The exception's type and message only; tracebacks can hold local values (personal data).
            error = record.exc_info[1]
            entry["error"] = f"{type(error).__name__}: {error}"
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log request URLs at DEBUG, and a URL can hold a person's id or email.
    for library in ("urllib3", "google", "grpc", "requests", "werkzeug"):
        logging.getLogger(library).setLevel(
            max(logging.getLogger(library).getEffectiveLevel(), logging.WARNING)
        )


@contextlib.contextmanager
def operation_context(**ids: str) -> Iterator[None]:
    """Tag every log line written inside the block with these ids (traceId, integrationId, action)."""
    token = _operation.set({**_operation.get(), **ids})
    try:
        yield
    finally:
        _operation.reset(token)


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log `message` with structured `fields` (ids, counts, states: never personal data)."""
    logger.log(level, message, extra={"fields": fields})
