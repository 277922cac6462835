"""The worker's and the commands' log formats: one JSON object per line (UTC ISO 8601
``ts``, ``level``, ``logger``, ``message``, extra fields) or plain text with UTC timestamps,
both through :class:`alerting.redact.RedactingFilter`, producer strings escaped.

:func:`configure_logging` / :func:`logging_config` set them up.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from datetime import UTC, datetime
from typing import Any, Final

from alerting.redact import STANDARD_RECORD_ATTRS, RedactingFilter, escape_control
from streams.runtime.log_limit import RepeatFilter

_CORE_KEYS: Final = frozenset({"ts", "level", "logger", "message", "exc_info", "stack_info"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC ISO 8601), ``level``, ``logger``,
    ``message``, the record's extra fields, and ``exc_info``/``stack_info`` when present.
    Non-ASCII is escaped, so a line never contains a line separator of any kind."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:
            message = f"{record.msg!s} (unformattable log arguments)"
        ts = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for key, value in vars(record).items():
            if key in STANDARD_RECORD_ATTRS or key.startswith("_"):
                continue
            out[f"extra_{key}" if key in _CORE_KEYS else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=True, separators=(",", ":"))


class UtcTextFormatter(logging.Formatter):
    """Plain text with UTC ISO 8601 timestamps, one line per record.

    The message is escaped (:func:`alerting.redact.escape_control`): a producer's string
    with a newline, NUL or terminal escape cannot forge a second entry or reach the log
    raw. Tracebacks and stacks keep their lines, each indented by two spaces, so no line of
    theirs reads as a record of its own.
    """

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
        self.converter = _gmtime

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        raw = record.message
        record.message = escape_control(raw)
        try:
            return super().formatMessage(record)
        finally:
            record.message = raw

    def format(self, record: logging.LogRecord) -> str:
        # The redacting filter may have rendered exc_text already; indent it either way,
        # and leave the record as it was for other handlers.
        saved = record.exc_text, record.stack_info
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _indented(record.exc_text)
        if record.stack_info:
            record.stack_info = _indented(record.stack_info)
        try:
            return super().format(record)
        finally:
            record.exc_text, record.stack_info = saved


def _indented(text: str) -> str:
    """Multi-line text as continuation lines of a record: escaped, every line indented."""
    return "  " + escape_control(text, keep_newlines=True).replace("\n", "\n  ")


def _gmtime(secs: float | None) -> time.struct_time:
    return time.gmtime(secs)


def logging_config(level: str | int, json_logs: bool) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` mapping: one stderr handler, redacted, the
    libraries' repeated lines limited below debug
    (:class:`streams.runtime.log_limit.RepeatFilter`).

    Pass it to ``faust.Worker(..., logging_config=...)`` so that faust's own logging
    set-up uses it, or apply it with :func:`configure_logging`.
    """
    lvl = level.upper() if isinstance(level, str) else logging.getLevelName(level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactingFilter}, "repeats": {"()": RepeatFilter}},
        "formatters": {"json": {"()": JsonFormatter}, "text": {"()": UtcTextFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json" if json_logs else "text",
                # at debug, every line: that is what the level is asked for
                "filters": ["redact"] if lvl == "DEBUG" else ["repeats", "redact"],
            }
        },
        "root": {"level": lvl, "handlers": ["default"]},
    }


def configure_logging(level: str | int, json_logs: bool) -> None:
    """Configure the root logger (see :func:`logging_config`)."""
    logging.config.dictConfig(logging_config(level, json_logs))
