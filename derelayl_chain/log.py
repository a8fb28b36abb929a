"""Structured logs: one event name plus key-value fields, rendered for people or for machines.

The node logs through structlog everywhere. ``console`` renders aligned, coloured lines when
stderr is a terminal; ``json`` writes one JSON object per line for log collectors. Records
from the standard library (aiohttp's server errors, for instance) go through the same renderer,
so a log stream never mixes two formats.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import FilteringBoundLogger, Processor

Logger = FilteringBoundLogger
"""The logger type the node passes around; ``bind()`` returns a new one."""

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _renderer(fmt: str, stream: TextIO) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer(sort_keys=False)
    if fmt != "console":
        raise ValueError(f"log format must be console or json, got {fmt!r}")
    return structlog.dev.ConsoleRenderer(colors=stream.isatty())


def configure_logging(
    fmt: str = "console", level: str = "info", stream: TextIO | None = None
) -> None:
    """Send every log event, structlog's and the standard library's, to ``stream`` (stderr)."""
    out = stream if stream is not None else sys.stderr
    threshold = _LEVELS.get(level, logging.INFO)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Processor] = [structlog.processors.format_exc_info] if fmt == "json" else []
    structlog.configure(
        processors=[*shared, *tail, _renderer(fmt, out)],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tail,
                _renderer(fmt, out),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(threshold, logging.WARNING))


def get_logger(**context: Any) -> Logger:
    """A logger carrying ``context`` on every event."""
    logger: Logger = structlog.get_logger(**context)
    return logger
