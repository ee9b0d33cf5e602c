"""Quiet terminals for flows: Prefect's and Dask's INFO lines go to a log file.

A flow run on a local cluster prints dozens of "Closing Nanny" and task-state lines
from three kinds of processes (this one, the Dask workers, the temporary server).
``quiet`` must run before Prefect or distributed is imported: it only sets
environment variables, which the spawned processes inherit, so every process logs
the same way:

- ``PREFECT_LOGGING_SETTINGS_PATH``: Prefect's own ``logging.yml`` with its console
  handler at WARNING and a file handler on the root logger (what Prefect sends to
  its API, and so to the UI, is unchanged);
- ``DASK_LOGGING``: the ``distributed`` loggers to the same file, warnings also to
  stderr.

ovlift's own progress (the ``ovlift`` logger) stays on the terminal in this process.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

import yaml

TERMINAL_LEVEL = "WARNING"


def default_log_file(plan: Path) -> Path:
    """``$OVLIFT_LOG_DIR`` (default ``~/.cache/ovlift/logs``)/<plan>-<time>-<pid>.log."""
    folder = Path(os.environ.get("OVLIFT_LOG_DIR", "~/.cache/ovlift/logs")).expanduser()
    return folder / f"{plan.stem}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def quiet(log_file: Path) -> None:
    """Send Prefect's and Dask's logs below WARNING to ``log_file`` in this process and the
    processes it starts. Call before importing ``ovlift.flows``."""
    if "prefect" in sys.modules or "distributed" in sys.modules:
        raise RuntimeError("flow_logging.quiet must run before prefect and distributed are imported")
    log_file = log_file.resolve()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None
    config = yaml.safe_load((Path(spec.origin).parent / "logging" / "logging.yml").read_text())
    file_handler = {
        "class": "logging.FileHandler",
        "filename": str(log_file).replace("$", "$$"),  # Prefect substitutes ${...} in this file
        "formatter": "standard",
        "level": 0,
    }
    config["handlers"]["console"]["level"] = TERMINAL_LEVEL
    config["handlers"]["ovlift_file"] = file_handler
    config["root"]["handlers"] = ["console", "ovlift_file"]
    for name in ("uvicorn", "fastapi"):
        config["loggers"][name]["handlers"] = ["console", "ovlift_file"]
    settings = log_file.with_suffix(".prefect-logging.yml")
    settings.write_text(yaml.safe_dump(config, sort_keys=False))
    os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = str(settings)
    dask_logging = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s - %(message)s"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "plain"},
            "terminal": {"class": "logging.StreamHandler", "level": TERMINAL_LEVEL, "formatter": "plain"},
        },
        "loggers": {
            name: {"level": level, "handlers": ["file", "terminal"], "propagate": False}
            for name, level in (("distributed", "INFO"), ("tornado", "ERROR"), ("bokeh", "ERROR"))
        },
    }
    os.environ["DASK_LOGGING"] = repr(dask_logging)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its weight-loading bars, in every worker
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def ovlift_to_terminal(level: str = "INFO") -> None:
    """ovlift's own messages on stderr in this process (Prefect owns the root logger)."""
    logger = logging.getLogger("ovlift")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
