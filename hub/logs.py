"""Structured JSON logs. Log messages name stages, topics and offsets, never
customer values; this formatter adds nothing from records either."""

from __future__ import annotations

import logging

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def json_logging_config(level: str) -> dict:
    """A logging.config.dictConfig for Faust's worker: every logger, one JSON object per line on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr", "level": level.upper()}},
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
