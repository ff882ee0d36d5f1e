"""Launching, resuming and cancelling background training runs, and duration estimates, one at a time."""

from __future__ import annotations

import os
from pathlib import Path

from radiology import jobs
from radiology.errors import ResumeError, TrainingBusyError
from radiology.fsutil import write_json_atomic
from radiology.jobs import LIVE_STATES, now
from radiology.pretrained import require_weights
from radiology.registry import (
    CANCEL_FILE,
    STATUS_FILE,
    Run,
    TrainingLock,
    load_run,
    new_run_dir,
    resumable,
    running_run,
    update_status,
)
from training.config import TrainConfig
from training.estimate import estimate_path, read_estimate, running_estimate


def busy_message(runs_dir: Path) -> str:
    """Why a launch is refused, naming the run or the estimate in progress when it is known."""
    run = running_run(runs_dir)
    if run:
        return f"another training is running ({run.id}); wait for it or cancel it"
    timing = running_estimate(runs_dir)
    if timing:
        return f"a duration estimate is running ({timing.get('phase', 'starting')}); it takes a few minutes"
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


def _start_child(status: Path, args: list[str], lock: TrainingLock, console: Path, job: str | None = None) -> None:
    """Starts ``python -m training ARGS`` as the job of ``status``, handing it the lock; records its pid."""
    env = dict(os.environ)
    if os.environ.get("RADIOLOGY_TRAINING_BACKEND"):
        # the runs train on this Keras backend (jax on a GPU) while the app, whose Grad-CAM needs
        # TensorFlow, stays on its own
        env["KERAS_BACKEND"] = os.environ["RADIOLOGY_TRAINING_BACKEND"]
    argv = ["-m", "training", *args, "--lock-fd", str(lock.fd)]
    jobs.start(status, argv, console=console, job=job, env=env, pass_fds=(lock.fd,))


def launch(config: TrainConfig) -> Run:
    """Starts a training run in a background process and returns it.

    The training lock is taken here and handed to the child, which holds it until it exits, so
    two launches at once, from the app or the command line, never both run.

    Raises:
        ModelLoadError: the initial weights are ImageNet's, which are neither cached nor downloadable.
        TrainingBusyError: another training holds the lock.
    """
    require_weights(config.weights)
    runs_dir = Path(config.runs_dir).resolve()
    lock = _take_lock(runs_dir)
    try:
        run_dir = new_run_dir(runs_dir)
        config.save(run_dir / "config.json")
        # no pid until the child's is known: the launcher's own would let a cancel signal the app
        update_status(run_dir, "queued", new_attempt=True, queued=now())
        _start_child(run_dir / STATUS_FILE, ["--run-dir", str(run_dir)], lock, run_dir / "console.txt")
    finally:
        lock.release()
    return load_run(run_dir)


def resume(run: Run) -> Run:
    """Continues a cancelled, failed or killed run in a background process from its last completed epoch.

    Raises:
        ResumeError: the run is live, succeeded, or has no completed epoch.
        ModelLoadError: the run starts from ImageNet (the model is built before its checkpoint is loaded) and
            those weights are neither cached nor downloadable.
        TrainingBusyError: another training holds the lock.
    """
    why = resumable(run)
    if why:
        raise ResumeError(f"cannot resume: {why}")
    runs_dir = run.dir.parent
    lock = _take_lock(runs_dir)
    try:
        require_weights(run.config.get("weights"))
        (run.dir / CANCEL_FILE).unlink(missing_ok=True)
        # the last attempt's progress would show until the child writes its own: say what happens instead
        epochs = run.config.get("epochs", 0)
        progress = {"phase": f"resuming after epoch {len(run.history())} of {epochs}", "epoch": 0, "epochs": epochs}
        write_json_atomic(run.dir / "progress.json", {**progress, "batch": 0, "batches": 0, "updated": now()})
        # a new attempt of the same run: the one write that may leave a final state, back to queued
        # (with no pid until the child's is known); the child then writes running
        update_status(run.dir, "queued", new_attempt=True, queued=now(), resumed=now())
        _start_child(run.dir / STATUS_FILE, ["--resume", str(run.dir)], lock, run.dir / "console.txt")
    finally:
        lock.release()
    return load_run(run.dir)


def estimate(config: TrainConfig) -> dict:
    """Starts timing this config in a background process; its record is then read with ``estimate.read_estimate``.

    The estimate holds the training lock while it times, so no training runs beside it and skews it.

    Raises:
        ModelLoadError: the initial weights are ImageNet's, which are neither cached nor downloadable.
        TrainingBusyError: a training or another estimate holds the lock.
    """
    require_weights(config.weights)
    runs_dir = Path(config.runs_dir).resolve()
    lock = _take_lock(runs_dir)
    try:
        path = estimate_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        job = jobs.new_id()
        queued = jobs.update_status(
            path, "queued", job=job, restart=True, queued=now(), config=config.to_dict(), phase="starting"
        )
        if queued.get("job") != job:
            raise TrainingBusyError("these settings are being estimated already")
        _start_child(path, ["--estimate-file", str(path)], lock, path.with_suffix(".log"), job=job)
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
        jobs.terminate(run.status.get("pid"), run.status.get("pid_start"))
