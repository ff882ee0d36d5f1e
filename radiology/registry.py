"""The run registry: run folders, their status, and the atomic pointer to the active model.

A run folder holds ``config.json``, ``status.json``, ``history.csv``, ``progress.json``,
``log.txt``, the best checkpoint ``model.keras``, and after testing ``metrics.json`` and
``predictions.csv``. The bundled model ships in the same layout. ``active.json`` in the runs
folder names the active run; it is replaced atomically, so a crash never leaves it half-written.
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import fcntl
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from radiology import settings
from radiology.fsutil import write_json_atomic

BUNDLED_DIR = Path(
    os.environ.get("RADIOLOGY_BUNDLED_DIR", Path(__file__).resolve().parent.parent / "models" / "default")
).resolve()
BUNDLED_ID = "bundled"
ACTIVE_FILE = "active.json"
LOCK_FILE = ".training.lock"
STATUS_LOCK_FILE = ".status.lock"
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
LIVE_STATES = ("queued", "running")
# a status only moves forwards: queued, then running, then one terminal state that is final
STATE_RANK = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}


def now() -> str:
    """The current UTC time as an ISO string."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_json(path: str | Path, default=None):
    """Reads JSON, returning ``default`` when the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def process_start(pid) -> int | None:
    """When a process started, in clock ticks after boot (field 22 of ``/proc/PID/stat``); None if unknown.

    A pid is reused once its process is gone; the pid and this start time together name one process.
    """
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        # the command name (field 2) may hold spaces and parentheses, so count from its closing one
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid, start: int | None = None) -> bool:
    """Whether the process ``pid`` exists, is not a zombie and, when ``start`` is given, started then.

    A process that reused the pid of a dead one has another start time and reads as not alive.
    Reaps the process if it is our child.
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is not None and process_start(pid) not in (start, None):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def update_status(run_dir: str | Path, state: str | None = None, *, new_attempt: bool = False, **fields) -> dict:
    """Updates a run's ``status.json`` atomically, keeping the fields written before.

    The read, the change and the write happen under a lock on the run folder, so the launcher and
    the training process never undo each other's writes. The state only moves forwards (queued,
    running, then a final state): a write that would move it back, or change a final state,
    changes nothing. The one exception is a resumed run: ``new_attempt`` moves a run that is not live
    back to ``queued`` for another attempt, clearing its end time and error.

    Args:
        run_dir: the run folder.
        state: the new state, or None to add ``fields`` without changing it.
        new_attempt: start another attempt of a run that is no longer live (``state`` must be ``queued``).
        **fields: fields to set, such as ``pid``, ``started`` or ``error``.

    Returns:
        the status as it is now on disk.

    Raises:
        ValueError: ``state`` is not one of :data:`STATES`.
    """
    if state is not None and state not in STATE_RANK:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    run_dir = Path(run_dir)
    fd = os.open(run_dir / STATUS_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        status = read_json(run_dir / "status.json", {}) or {}
        current = status.get("state")
        if new_attempt:
            if state != "queued" or (current in LIVE_STATES and pid_alive(status.get("pid"), status.get("pid_start"))):
                return status
            status.update(ended=None, error=None, attempt=int(status.get("attempt", 1)) + 1)
        elif state is not None and current in STATE_RANK:
            if STATE_RANK[state] < STATE_RANK[current] or (STATE_RANK[current] == 2 and state != current):
                return status
        status.update(fields, updated=now())
        if state is not None:
            status["state"] = state
        write_json_atomic(run_dir / "status.json", status)
        return status
    finally:
        os.close(fd)


@dataclass
class Run:
    """One run folder as read from disk; the metrics, the largest file, are read on first use."""

    dir: Path
    status: dict
    config: dict

    @cached_property
    def metrics(self) -> dict | None:
        """The test evaluation (``metrics.json``), or None before it exists."""
        return read_json(self.dir / "metrics.json")

    @cached_property
    def card(self) -> dict | None:
        """The model card's summary (``card.json``: data, recipe, limits, targets) of a bundled model, or None."""
        return read_json(self.dir / "card.json")

    @property
    def id(self) -> str:
        """The run's folder name, or ``bundled`` for the shipped model."""
        return BUNDLED_ID if self.dir == BUNDLED_DIR else self.dir.name

    @property
    def kind(self) -> str:
        """``training`` for a run trained here, ``imported`` for a model file brought in."""
        return self.status.get("kind", "training")

    @property
    def state(self) -> str:
        """The status, with a live status whose process has died read as ``failed``."""
        state = self.status.get("state", "failed")
        if state in LIVE_STATES and not pid_alive(self.status.get("pid"), self.status.get("pid_start")):
            return "failed"
        return state

    @property
    def error(self) -> str | None:
        """Why the run failed, if it did."""
        if self.status.get("state") in LIVE_STATES and self.state == "failed":
            return f"the training process (pid {self.status.get('pid')}) died without finishing"
        return self.status.get("error")

    @property
    def model_path(self) -> Path:
        """Path of the run's best checkpoint."""
        return self.dir / "model.keras"

    @property
    def has_model(self) -> bool:
        """Whether the run has a checkpoint file."""
        return self.model_path.is_file()

    def progress(self) -> dict:
        """The latest progress record: phase, epoch, epochs, batch, batches."""
        return read_json(self.dir / "progress.json", {}) or {}

    def progress_fractions(self) -> tuple[float, float]:
        """How far the run is, overall and within the current epoch (or image reading), each in [0, 1]."""
        p = self.progress()
        epoch, epochs = p.get("epoch", 0), max(p.get("epochs", 1), 1)
        within = min(p.get("batch", 0) / max(p.get("batches", 0), 1), 1.0)
        if p.get("phase") == "caching":
            return 0.0, within
        return min((max(epoch - 1, 0) + within) / epochs, 1.0), within

    def history(self) -> list[dict]:
        """Per-epoch history rows with numbers as floats."""
        return read_history(self.dir / "history.csv")

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the run's log."""
        try:
            with open(self.dir / "log.txt", "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 200 * lines))
                return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def predictions(self) -> list[dict]:
        """Rows of ``predictions.csv``: path, label and one probability column per class."""
        try:
            with open(self.dir / "predictions.csv", newline="") as fh:
                return list(csv.DictReader(fh))
        except OSError:
            return []


def read_history(path: Path) -> list[dict]:
    """Reads a history CSV into rows of floats (epoch as int)."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return []
    out = []
    for row in rows:
        try:
            out.append({k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("", None)})
        except ValueError:
            continue  # a line cut short by a crash
    return out


def load_run(run_dir: str | Path) -> Run:
    """Reads one run folder; missing files read as empty."""
    run_dir = Path(run_dir).resolve()
    return Run(run_dir, read_json(run_dir / "status.json", {}) or {}, read_json(run_dir / "config.json", {}) or {})


def list_runs(runs_dir: str | Path | None = None, *, include_bundled: bool = True) -> list[Run]:
    """Runs in the registry, newest first, then the bundled model if it ships."""
    runs_dir = Path(runs_dir) if runs_dir else settings.runs_dir()
    runs = []
    if runs_dir.is_dir():
        for d in sorted(runs_dir.iterdir(), reverse=True):
            if d.is_dir() and not d.name.startswith(".") and (d / "status.json").exists():
                runs.append(load_run(d))
    if include_bundled and (BUNDLED_DIR / "model.keras").is_file():
        runs.append(load_run(BUNDLED_DIR))
    return runs


def get_run(run_id: str, runs_dir: str | Path | None = None) -> Run:
    """The run with this id (folder name or ``bundled``)."""
    if run_id == BUNDLED_ID:
        return load_run(BUNDLED_DIR)
    runs_dir = Path(runs_dir) if runs_dir else settings.runs_dir()
    path = (runs_dir / run_id).resolve()
    if path.parent != runs_dir.resolve() or not (path / "status.json").exists():
        raise KeyError(f"no run {run_id!r} in {runs_dir}")
    return load_run(path)


def set_active(run: Run, runs_dir: str | Path | None = None) -> None:
    """Makes ``run``'s model the active one by replacing ``active.json`` atomically.

    Raises:
        ValueError: the run has not succeeded or has no model file.
    """
    if run.state != "succeeded" or not run.has_model:
        raise ValueError(
            f"run {run.id} cannot be promoted: it is {run.state} and has {'a' if run.has_model else 'no'} model"
        )
    runs_dir = Path(runs_dir) if runs_dir else settings.runs_dir()
    runs_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(runs_dir / ACTIVE_FILE, {"run": run.id, "promoted": now()})


def active_run(runs_dir: str | Path | None = None) -> Run | None:
    """The active run: the promoted one, else the bundled model, else None."""
    runs_dir = Path(runs_dir) if runs_dir else settings.runs_dir()
    pointer = read_json(runs_dir / ACTIVE_FILE, {}) or {}
    if pointer.get("run"):
        try:
            run = get_run(pointer["run"], runs_dir)
            if run.has_model:
                return run
        except KeyError:
            pass
    bundled = load_run(BUNDLED_DIR)
    return bundled if bundled.has_model else None


class TrainingLock:
    """The one-training-at-a-time lock: an exclusive ``flock`` on a file in the runs folder.

    The kernel drops a ``flock`` when its holder dies, even by ``kill -9``, so a stale lock never
    blocks the next launch. The descriptor can be handed to a child process, which then holds it.
    """

    def __init__(self, runs_dir: str | Path | None = None):
        runs_dir = Path(runs_dir) if runs_dir else settings.runs_dir()
        runs_dir.mkdir(parents=True, exist_ok=True)
        self.path = runs_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Takes the lock without waiting; False if another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        """Closes this process's descriptor (the lock ends when no process holds it open)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> bool:
        """Whether some process holds the lock now."""
        if self.acquire():
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.release()
            return False
        return True


def running_run(runs_dir: str | Path | None = None) -> Run | None:
    """The run that is queued or running now, if any."""
    for run in list_runs(runs_dir, include_bundled=False):
        if run.state in LIVE_STATES:
            return run
    return None
