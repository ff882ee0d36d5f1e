"""Launching and cancelling background training runs, one at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from radiology.errors import TrainingBusyError
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
from training.config import TrainConfig
from training.trainer import CANCEL_FILE, new_run_dir

_children: list[subprocess.Popen] = []  # kept so finished children are reaped, not left as zombies


def busy_message(runs_dir: Path) -> str:
    """Why a launch is refused, naming the run in progress when it is known."""
    run = running_run(runs_dir)
    return f"another training is running ({run.id}); wait for it or cancel it" if run else "another training is running"


def launch(config: TrainConfig) -> Run:
    """Starts a training run in a background process and returns it.

    The training lock is taken here and handed to the child, which holds it until it exits, so
    two launches at once, from the app or the command line, never both run. The run reads as
    ``queued`` before its process starts, held by this process until it hands over its own pid;
    the process then moves it to ``running``, and nothing moves it back.

    Raises:
        TrainingBusyError: another training holds the lock.
    """
    for p in list(_children):
        if p.poll() is not None:
            _children.remove(p)
    runs_dir = Path(config.runs_dir).resolve()
    lock = TrainingLock(runs_dir)
    if not lock.acquire():
        raise TrainingBusyError(busy_message(runs_dir))
    try:
        run_dir = new_run_dir(runs_dir)
        config.save(run_dir / "config.json")
        me = os.getpid()
        update_status(run_dir, "queued", pid=me, pid_start=process_start(me), queued=now())
        try:
            with open(run_dir / "console.txt", "wb") as console:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "training", "--run-dir", str(run_dir), "--lock-fd", str(lock.fd)],
                    cwd=PROJECT_ROOT,
                    pass_fds=(lock.fd,),
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a restart of the app does not take the run down with it
                )
        except OSError as exc:
            update_status(run_dir, "failed", ended=now(), error=f"the training process did not start: {exc}")
            raise
        _children.append(proc)
        update_status(run_dir, pid=proc.pid, pid_start=process_start(proc.pid))
    finally:
        lock.release()
    return load_run(run_dir)


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
