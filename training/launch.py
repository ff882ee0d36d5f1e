"""Launching, resuming and cancelling background training runs, and duration estimates, one at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from radiology.errors import ResumeError, TrainingBusyError
from radiology.registry import Run, TrainingLock, load_run, now, read_json, running_run, write_json_atomic
from training.clock import estimate_path, read_estimate
from training.config import TrainConfig
from training.trainer import CANCEL_FILE, new_run_dir, resumable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_children: list[subprocess.Popen] = []  # kept so finished children are reaped, not left as zombies


def busy_message(runs_dir: Path) -> str:
    """Why a launch is refused, naming the run in progress when it is known."""
    run = running_run(runs_dir)
    if run:
        return f"another training is running ({run.id}); wait for it or cancel it"
    return "another training is running (or a duration estimate, which takes a few minutes)"


def _spawn(args: list[str], lock: TrainingLock, console: Path) -> subprocess.Popen:
    """Starts ``python -m training ARGS`` in its own session, handing it the lock."""
    for p in list(_children):
        if p.poll() is not None:
            _children.remove(p)
    env = dict(os.environ)
    if os.environ.get("RADIOLOGY_TRAINING_BACKEND"):
        # the runs train on this Keras backend (jax on a GPU) while the app, whose Grad-CAM needs
        # TensorFlow, stays on its own
        env["KERAS_BACKEND"] = os.environ["RADIOLOGY_TRAINING_BACKEND"]
    with open(console, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "training", *args, "--lock-fd", str(lock.fd)],
            cwd=PROJECT_ROOT,
            env=env,
            pass_fds=(lock.fd,),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a restart of the app does not take the run down with it
        )
    _children.append(proc)
    return proc


def launch(config: TrainConfig) -> Run:
    """Starts a training run in a background process and returns it.

    The training lock is taken here and handed to the child, which holds it until it exits, so
    two launches at once, from the app or the command line, never both run.

    Raises:
        TrainingBusyError: another training holds the lock.
    """
    runs_dir = Path(config.runs_dir).resolve()
    lock = TrainingLock(runs_dir)
    if not lock.acquire():
        raise TrainingBusyError(busy_message(runs_dir))
    try:
        run_dir = new_run_dir(runs_dir)
        config.save(run_dir / "config.json")
        proc = _spawn(["--run-dir", str(run_dir)], lock, run_dir / "console.txt")
        write_json_atomic(run_dir / "status.json", {"state": "queued", "pid": proc.pid, "queued": now()})
    finally:
        lock.release()
    return load_run(run_dir)


def resume(run: Run) -> Run:
    """Continues a cancelled, failed or killed run in a background process from its last completed epoch.

    Raises:
        ResumeError: the run is live, succeeded, or has no completed epoch.
        TrainingBusyError: another training holds the lock.
    """
    why = resumable(run.dir)
    if why:
        raise ResumeError(f"cannot resume: {why}")
    runs_dir = run.dir.parent
    lock = TrainingLock(runs_dir)
    if not lock.acquire():
        raise TrainingBusyError(busy_message(runs_dir))
    try:
        (run.dir / CANCEL_FILE).unlink(missing_ok=True)
        status = read_json(run.dir / "status.json", {}) or {}
        # a new attempt of the same run goes back from its terminal state to queued (this process's pid
        # until the child's is known); the child then writes running with ``resumed`` and ``attempt``
        queued = {**status, "state": "queued", "pid": os.getpid(), "queued": now(), "resumed": now()}
        queued.update(ended=None, error=None)
        write_json_atomic(run.dir / "status.json", queued)
        proc = _spawn(["--resume", str(run.dir)], lock, run.dir / "console.txt")
        status = read_json(run.dir / "status.json", {}) or {}
        if status.get("state") == "queued":
            write_json_atomic(run.dir / "status.json", {**status, "pid": proc.pid})
    finally:
        lock.release()
    return load_run(run.dir)


def estimate(config: TrainConfig) -> dict:
    """Starts timing this config in a background process; its record is then read with ``clock.read_estimate``.

    The estimate holds the training lock while it times, so no training runs beside it and skews it.

    Raises:
        TrainingBusyError: a training or another estimate holds the lock.
    """
    runs_dir = Path(config.runs_dir).resolve()
    lock = TrainingLock(runs_dir)
    if not lock.acquire():
        raise TrainingBusyError(busy_message(runs_dir))
    try:
        path = estimate_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"state": "running", "started": now(), "config": config.to_dict(), "phase": "starting"}
        write_json_atomic(path, {**record, "pid": os.getpid()})
        proc = _spawn(["--estimate-file", str(path)], lock, path.with_suffix(".log"))
        write_json_atomic(path, {**record, "pid": proc.pid})
    finally:
        lock.release()
    return read_estimate(config) or {}


def cancel(run: Run) -> None:
    """Asks a run to stop after its current batch: writes the cancel file and sends SIGTERM."""
    (run.dir / CANCEL_FILE).touch()
    pid = run.status.get("pid")
    if isinstance(pid, int) and run.state in ("queued", "running"):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
