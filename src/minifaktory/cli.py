"""The ``minifaktory`` command: flags, environment and ``conf.d`` in, a running server out."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TextIO, cast

from minifaktory import tools
from minifaktory.config import (
    FAKTORY_VERSION,
    USAGE,
    Config,
    UsageError,
    config_from_flags,
    parse_flags,
)
from minifaktory.errors import ConfigError, MinifaktoryError

#: Starts the server and blocks until SIGINT/SIGTERM; ``minifaktory.app.run_forever``.
Runner = Callable[[Config], None]

NAME = "minifaktory"

LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}
_LETTERS = {
    logging.DEBUG: "D",
    logging.INFO: "I",
    logging.WARNING: "W",
    logging.ERROR: "E",
    logging.CRITICAL: "F",
}

logger = logging.getLogger(NAME)


class FaktoryFormatter(logging.Formatter):
    """Faktory's log line: ``I 2026-11-23T06:00:00.000Z message`` (UTC, milliseconds)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 in UTC with milliseconds and a ``Z``."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """Level letter, timestamp, message, then any traceback."""
        letter = _LETTERS.get(record.levelno, record.levelname[:1])
        line = f"{letter} {self.formatTime(record)} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def version() -> str:
    """The package version (``pyproject.toml`` and ``minifaktory.__version__`` agree)."""
    from minifaktory import __version__

    return __version__


def version_text() -> str:
    """What ``-v`` prints, after Faktory's name/version/licence preamble."""
    return (
        f"{NAME} {version()}\n"
        f"A Faktory {FAKTORY_VERSION} compatible job server on SQLite\n"
        "Licensed under the MIT License"
    )


#: What every LogRecord has; anything else on a record came from ``extra=`` and is data.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_LEVEL_NAMES = {logging.WARNING: "warn", logging.CRITICAL: "fatal"}


class JSONFormatter(FaktoryFormatter):
    """One JSON object per line: time, level, logger, message, and the record's data
    (``wid``, ``jid``, ``jids``, ``reason``, …) for log pipelines to filter on."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": self.formatTime(record),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


@contextlib.contextmanager
def logging_to(stream: TextIO, level: str, style: str = "plain") -> Iterator[logging.Handler]:
    """Send every log record at ``level`` or above to ``stream``, in Faktory's plain
    lines or as JSON; undone on exit."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter() if style == "json" else FaktoryFormatter())
    previous = root.level
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def _default_runner() -> Runner:
    """``minifaktory.app.run_forever``, imported only when a server is actually started."""
    module = importlib.import_module("minifaktory.app")
    return cast(Runner, module.run_forever)


def serve(config: Config, runner: Runner | None = None) -> int:
    """Log where things are, run the server, and turn failures into an exit status."""
    logger.info("%s %s (Faktory %s compatible)", NAME, version(), FAKTORY_VERSION)
    logger.info("Environment: %s, durability: %s", config.environment, config.durability)
    logger.info("Database: %s", config.resolved_db_path())
    logger.debug("Config directory: %s", config.config_dir)
    run = runner if runner is not None else _default_runner()
    try:
        run(config)
    except KeyboardInterrupt:
        return 130
    except (MinifaktoryError, OSError) as exc:
        logger.error("Unable to run %s: %s", NAME, exc)
        logger.debug("Failure details", exc_info=True)
        return 1
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    runner: Runner | None = None,
) -> int:
    """Entry point of the ``minifaktory`` command; returns the process exit status."""
    args = sys.argv[1:] if argv is None else argv
    env = os.environ if environ is None else environ
    if args and args[0] in tools.TOOLS:
        return tools.load(args[0])(args[1:], env)
    try:
        flags = parse_flags(args)
    except UsageError as exc:
        print(f"{NAME}: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    if flags.help:
        print(f"{USAGE}\nTools (minifaktory <tool> --help):\n{tools.summary()}")
        return 0
    if flags.version:
        print(version_text())
        return 0
    try:
        config = config_from_flags(flags, env)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    with logging_to(sys.stderr, config.log_level, config.log_format):
        return serve(config, runner)
