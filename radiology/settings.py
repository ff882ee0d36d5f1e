"""Where the app, the command lines and training keep their files: one answer for all of them.

Both folders default to the project folder, not the working directory, so the app and a command
line started from anywhere share the runs folder: its training lock, its runs and ``active.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def runs_dir() -> Path:
    """The runs folder, resolved: ``$RADIOLOGY_RUNS_DIR``, else ``runs`` in the project folder."""
    return Path(os.environ.get("RADIOLOGY_RUNS_DIR") or PROJECT_ROOT / "runs").resolve()


def data_root() -> Path:
    """The data root that dataset paths must stay inside, resolved: ``$RADIOLOGY_DATA_ROOT``, else ``data`` in
    the project folder."""
    return Path(os.environ.get("RADIOLOGY_DATA_ROOT") or PROJECT_ROOT / "data").resolve()


DEFAULT_CACHE_MAX_BYTES = 4 * 2**30


def cache_max_bytes() -> int:
    """The most bytes the decode cache keeps on disk: ``$RADIOLOGY_CACHE_MAX_BYTES``, else 4 GiB.

    Raises:
        ValueError: the variable is set but is not a positive integer.
    """
    value = os.environ.get("RADIOLOGY_CACHE_MAX_BYTES")
    if not value:
        return DEFAULT_CACHE_MAX_BYTES
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n <= 0:
        raise ValueError(f"RADIOLOGY_CACHE_MAX_BYTES must be a positive number of bytes, got {value!r}")
    return n
