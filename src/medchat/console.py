"""The single console through which medchat talks to people (stderr, so stdout stays parseable),
and the switch that keeps library chatter off it.

`quiet_libraries()` (the CLI's default; `--verbose` skips it) routes transformers' and
bitsandbytes' log records and Python warnings into `library_log` instead of the terminal, and
turns off the libraries' own progress bars: people see medchat's progress and results. While a
run is training, `library_log.to(path)` keeps those records in the run folder (train.log), so
nothing is lost, only moved.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console(stderr=True, highlight=False)


def progress_bar(*extra: Any, enabled: bool = True) -> Any:
    """medchat's one progress-bar shape: description, bar, n/total, then `extra` columns (speed,
    losses), elapsed and ETA, on the console. Callers add their task and start or enter it."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


class _LibraryLog(logging.Handler):
    """Library records go to a file while one is set (a run's train.log), else nowhere."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._file: logging.FileHandler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is not None:
            self._file.emit(record)

    @contextlib.contextmanager
    def to(self, path: str | Path) -> Iterator[None]:
        previous = self._file
        self._file = logging.FileHandler(path, encoding="utf-8")
        self._file.setFormatter(self.formatter)
        try:
            yield
        finally:
            self._file.close()
            self._file = previous


library_log = _LibraryLog()
# Loggers whose records are for developers: each is written to library_log only, when quiet.
_LIBRARY_LOGGERS = (
    "transformers",
    "bitsandbytes",
    "peft",
    "accelerate",
    "mlflow",
    "alembic",
    "py.warnings",
)


def quiet_libraries() -> None:
    """Keep transformers/bitsandbytes/peft records, Python warnings and hub progress bars off
    the terminal (idempotent)."""
    logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger
    # mlflow would replace its loggers' handlers with its own stderr one on import.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    for name in _LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        lib.handlers = [library_log]
        lib.propagate = False
        if lib.level == logging.NOTSET or lib.level > logging.INFO:
            lib.setLevel(logging.INFO)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()  # transformers' own stderr handler
        hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
        hf_logging.set_verbosity_info()  # records reach train.log; the terminal never sees them
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
