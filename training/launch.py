"""Launching and cancelling background training runs, one at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from radiology.errors import TrainingBusyError
from radiology.fsutil import write_json_atomic
from radiology.registry import Run, TrainingLock, load_run, now, running_run
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
    two launches at once, from the app or the command line, never both run.

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
        _children.append(proc)
        write_json_atomic(run_dir / "status.json", {"state": "queued", "pid": proc.pid, "queued": now()})
    finally:
        lock.release()
    return load_run(run_dir)


def cancel(run: Run) -> None:
    """Asks a run to stop after its current batch: writes the cancel file and sends SIGTERM."""
    (run.dir / CANCEL_FILE).touch()
    pid = run.status.get("pid")
    if isinstance(pid, int) and run.state in ("queued", "running"):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
