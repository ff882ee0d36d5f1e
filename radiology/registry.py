"""The run registry: run folders, their status, and the atomic pointer to the active model.

A run folder holds ``config.json``, ``status.json``, ``history.csv``, ``progress.json``,
``log.txt``, the best checkpoint ``model.keras``, ``last.keras`` while it can be resumed, a ``cancel``
file while a cancel is asked for, and after testing ``metrics.json`` and ``predictions.csv``: the test
evaluation made at training time, which nothing later overwrites. Every later evaluation (``python -m
radiology evaluate --save``, the Evaluation page, ``fit-ood``) is a folder of its own under
``evaluations/``, named by its id, holding the same two files. The bundled model ships in the same
layout. ``active.json`` in the runs folder names the active run; it is replaced atomically, so a crash
never leaves it half-written.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from radiology import jobs, settings
from radiology.fsutil import read_json, write_json_atomic
from radiology.jobs import LIVE_STATES, STATE_RANK, STATES, now, pid_alive, process_start  # noqa: F401

BUNDLED_DIR = Path(
    os.environ.get("RADIOLOGY_BUNDLED_DIR", Path(__file__).resolve().parent.parent / "models" / "default")
).resolve()
BUNDLED_ID = "bundled"
ACTIVE_FILE = "active.json"
LOCK_FILE = ".training.lock"
STATUS_FILE = "status.json"
EVALUATIONS_DIR = "evaluations"
CANCEL_FILE = "cancel"  # its presence asks the run's process to stop after the current batch
LAST_CHECKPOINT = "last.keras"  # the checkpoint of the last completed epoch, which a run resumes from


def update_status(run_dir: str | Path, state: str | None = None, *, new_attempt: bool = False, **fields) -> dict:
    """Updates a run's ``status.json`` through the job state machine (``radiology.jobs.update_status``).

    Args:
        run_dir: the run folder.
        state: the new state, or None to add ``fields`` without changing it.
        new_attempt: start another attempt of a run that is not live (``state`` must be ``queued``):
            its end time, error and pid are cleared and ``attempt`` counts up.
        **fields: fields to set, such as ``pid``, ``started`` or ``error``.

    Returns:
        the status as it is now on disk.

    Raises:
        ValueError: ``state`` is not one of :data:`STATES`.
    """
    return jobs.update_status(Path(run_dir) / STATUS_FILE, state, restart=new_attempt, **fields)


@dataclass
class EvaluationRecord:
    """One stored evaluation of a run: the training-time test (id ``training``), or a later one.

    Its metrics name what they were measured on (see ``radiology.evaluation.measured_on``).
    """

    id: str
    dir: Path

    @cached_property
    def metrics(self) -> dict:
        """The evaluation's ``metrics.json`` (empty when unreadable)."""
        return read_json(self.dir / "metrics.json", {}) or {}

    def predictions(self) -> list[dict]:
        """Rows of its ``predictions.csv``: path, label and one probability column per class."""
        try:
            with open(self.dir / "predictions.csv", newline="") as fh:
                return list(csv.DictReader(fh))
        except OSError:
            return []


@dataclass
class Run:
    """One run folder as read from disk; the metrics, the largest file, are read on first use."""

    dir: Path
    status: dict
    config: dict

    @cached_property
    def metrics(self) -> dict | None:
        """The test evaluation made at training time (``metrics.json``), or None when there is none."""
        return read_json(self.dir / "metrics.json")

    @cached_property
    def card(self) -> dict | None:
        """The model card's summary (``card.json``: data, recipe, limits, targets) of a bundled model, or None."""
        return read_json(self.dir / "card.json")

    def evaluations(self) -> list[EvaluationRecord]:
        """The run's stored evaluations: the training-time test first, then later ones newest first."""
        records = [EvaluationRecord("training", self.dir)] if (self.dir / "metrics.json").is_file() else []
        folder = self.dir / EVALUATIONS_DIR
        if folder.is_dir():
            for d in sorted(folder.iterdir(), reverse=True):
                if not d.name.startswith(".") and (d / "metrics.json").is_file():
                    records.append(EvaluationRecord(d.name, d))
        return records

    def has_evaluations(self) -> bool:
        """Whether the run has any stored evaluation, read without opening one."""
        folder = self.dir / EVALUATIONS_DIR
        return (self.dir / "metrics.json").is_file() or (
            folder.is_dir() and any(not d.name.startswith(".") for d in folder.iterdir())
        )

    @property
    def bf16_agreement(self) -> float | None:
        """How often bf16 agreed with float32, from the training-time test, else the newest evaluation with it."""
        for record in self.evaluations():
            value = record.metrics.get("bf16_agreement")
            if value is not None:
                return value
        return None

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
        return jobs.effective_state(self.status)

    @property
    def error(self) -> str | None:
        """Why the run failed, if it did."""
        return jobs.died_message(self.status, "training") or self.status.get("error")

    @property
    def model_path(self) -> Path:
        """Path of the run's best checkpoint."""
        return self.dir / "model.keras"

    @property
    def has_model(self) -> bool:
        """Whether the run has a checkpoint file."""
        return self.model_path.is_file()

    @property
    def cancel_requested(self) -> bool:
        """Whether a cancel has been asked for (the ``cancel`` file is there) and the run not resumed since."""
        return (self.dir / CANCEL_FILE).is_file()

    def epochs_summary(self) -> str:
        """The epochs the run went through, from the history it carries, against those its config planned.

        ``9`` for a complete run, ``2 of 9`` for one stopped or imported after its second epoch, ``17 in 3
        phases`` for a bundled model trained in phases, ``9 planned (no history)`` for an imported file that
        carries a config but no history, empty when nothing is known.
        """
        history, planned = self.history(), self.config.get("epochs")
        done, phases = len(history), {row["phase"] for row in history if "phase" in row}
        if len(phases) > 1:
            return f"{done} in {len(phases)} phases"
        if done:
            return str(done) if planned is None or done >= planned else f"{done} of {planned}"
        if planned is None:
            return ""
        return f"{planned} planned (no history)" if self.kind == "imported" else f"0 of {planned}"

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
        """Rows of the training-time test's ``predictions.csv``: path, label and one probability column per class."""
        return EvaluationRecord("training", self.dir).predictions()


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
    return Run(run_dir, read_json(run_dir / STATUS_FILE, {}) or {}, read_json(run_dir / "config.json", {}) or {})


def new_run_dir(runs_dir: str | Path) -> Path:
    """Creates a new, uniquely named run folder (named by :func:`radiology.jobs.new_id`, so by start time)."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = runs_dir / jobs.new_id()
    path.mkdir()
    return path


def resumable(run: Run) -> str | None:
    """Why ``run`` cannot be resumed, or None when it can.

    A run can be resumed when it was cancelled, failed or killed after at least one completed epoch.
    """
    if run.state in (*LIVE_STATES, "succeeded"):
        return f"run {run.id} is {run.state}"
    if not (run.dir / LAST_CHECKPOINT).is_file():
        return f"run {run.id} has no {LAST_CHECKPOINT}: it stopped before completing an epoch"
    return None


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
        """Whether some process holds the lock now.

        Probes with a shared lock, held for microseconds, so a launch at that instant is rarely refused.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        finally:
            os.close(fd)
        return False


def _run_dirs_newest_first(runs_dir: Path):
    if runs_dir.is_dir():
        for d in sorted(runs_dir.iterdir(), reverse=True):
            if d.is_dir() and not d.name.startswith("."):
                yield d


def running_run(runs_dir: str | Path | None = None) -> Run | None:
    """The run that is queued or running now, if any, read without reading the other runs.

    A live run's process holds the training lock, so while the lock is free nothing is read; while it is
    held, run statuses are read newest first until the live one (an estimate holds it too, and then every
    status is read once).
    """
    runs_dir = Path(runs_dir) if runs_dir else settings.runs_dir()
    if not (runs_dir / LOCK_FILE).exists() or not TrainingLock(runs_dir).held_elsewhere():
        return None
    for d in _run_dirs_newest_first(runs_dir):
        if jobs.is_live(read_json(d / STATUS_FILE)):
            return load_run(d)
    return None


def last_run(runs_dir: str | Path | None = None, *, kind: str = "training") -> Run | None:
    """The newest run of ``kind`` (``training`` or ``imported``), reading statuses only until it is found."""
    runs_dir = Path(runs_dir) if runs_dir else settings.runs_dir()
    for d in _run_dirs_newest_first(runs_dir):
        status = read_json(d / STATUS_FILE)
        if isinstance(status, dict) and status.get("kind", "training") == kind:
            return load_run(d)
    return None
