"""Launching, resuming and cancelling background training runs, and duration estimates, one at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from radiology.errors import ResumeError, TrainingBusyError
from radiology.fsutil import write_json_atomic
from radiology.registry import (
    LIVE_STATES,
    Run,
    TrainingLock,
    load_run,
    now,
    pid_alive,
    process_start,
    running_run,
    update_status,
)
from radiology.settings import PROJECT_ROOT
from training.clock import estimate_path, read_estimate
from training.config import TrainConfig
from training.trainer import CANCEL_FILE, new_run_dir, resumable

_children: list[subprocess.Popen] = []  # kept so finished children are reaped, not left as zombies


def busy_message(runs_dir: Path) -> str:
    """Why a launch is refused, naming the run in progress when it is known."""
    run = running_run(runs_dir)
    if run:
        return f"another training is running ({run.id}); wait for it or cancel it"
    return "another training is running (or a duration estimate, which takes a few minutes)"


def _take_lock(runs_dir: Path) -> TrainingLock:
    """The one-training lock of ``runs_dir``, taken without waiting.

    Raises:
        TrainingBusyError: a training, resume or estimate holds it.
    """
    lock = TrainingLock(runs_dir)
    if not lock.acquire():
        raise TrainingBusyError(busy_message(runs_dir))
    return lock


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


def _start_child(args: list[str], lock: TrainingLock, run_dir: Path) -> None:
    """Spawns the training process of a queued run and hands its pid over; a failed start marks the run failed."""
    try:
        proc = _spawn(args, lock, run_dir / "console.txt")
    except OSError as exc:
        update_status(run_dir, "failed", ended=now(), error=f"the training process did not start: {exc}")
        raise
    update_status(run_dir, pid=proc.pid, pid_start=process_start(proc.pid))


def launch(config: TrainConfig) -> Run:
    """Starts a training run in a background process and returns it.

    The training lock is taken here and handed to the child, which holds it until it exits, so
    two launches at once, from the app or the command line, never both run.

    Raises:
        TrainingBusyError: another training holds the lock.
    """
    runs_dir = Path(config.runs_dir).resolve()
    lock = _take_lock(runs_dir)
    try:
        run_dir = new_run_dir(runs_dir)
        config.save(run_dir / "config.json")
        me = os.getpid()
        update_status(run_dir, "queued", pid=me, pid_start=process_start(me), queued=now(), attempt=1)
        _start_child(["--run-dir", str(run_dir)], lock, run_dir)
    finally:
        lock.release()
    return load_run(run_dir)


def resume(run: Run) -> Run:
    """Continues a cancelled, failed or killed run in a background process from its last completed epoch.

    Raises:
        ResumeError: the run is live, succeeded, or has no completed epoch.
        TrainingBusyError: another training holds the lock.
    """
    why = resumable(run)
    if why:
        raise ResumeError(f"cannot resume: {why}")
    runs_dir = run.dir.parent
    lock = _take_lock(runs_dir)
    try:
        (run.dir / CANCEL_FILE).unlink(missing_ok=True)
        me = os.getpid()
        # a new attempt of the same run: the one write that may leave a final state, back to queued
        # (this process's pid until the child's is known); the child then writes running
        update_status(
            run.dir, "queued", new_attempt=True, pid=me, pid_start=process_start(me), queued=now(), resumed=now()
        )
        _start_child(["--resume", str(run.dir)], lock, run.dir)
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
    lock = _take_lock(runs_dir)
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
    """Asks a run to stop after its current batch: writes the cancel file and sends SIGTERM.

    The signal goes only to the run's own process, named by its pid and start time: a process that
    reused the pid of a dead run is left alone.
    """
    (run.dir / CANCEL_FILE).touch()
    if run.state in LIVE_STATES:
        terminate(run.status.get("pid"), run.status.get("pid_start"))


def terminate(pid, start: int | None) -> bool:
    """Sends SIGTERM to process ``pid`` if it lives and, when ``start`` is given, started then.

    On Linux the process is held by a pidfd while its start time is checked, so the pid cannot be
    reused between the check and the signal.

    Returns:
        whether the signal was sent.
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfds here: check, then signal by pid
        if not pid_alive(pid, start):
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True
    try:
        if not pid_alive(pid, start):
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)
