"""Evaluating a run on a dataset in the background, and the status file the app reads while it runs.

A job is a ``python -m radiology evaluate --save`` process. It reports through
``evaluation_status.json`` in the run folder: state (``queued``, ``running``, ``succeeded``,
``failed``), pid, phase, progress fraction, error. Its results land in ``metrics.json`` and
``predictions.csv``, each replaced atomically, so the app never reads a half-written file.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from radiology import registry
from radiology.errors import EvaluationError
from radiology.registry import LIVE_STATES, STATE_RANK, Run, now, pid_alive, process_start, read_json, write_json_atomic
from radiology.settings import PROJECT_ROOT

STATUS_FILE = "evaluation_status.json"
LOCK_FILE = ".evaluation.lock"
_children: list[subprocess.Popen] = []  # kept so finished children are reaped, not left as zombies


def update_status(run_dir: str | Path, job: str, state: str | None = None, **fields) -> dict:
    """Merges fields into a run's evaluation status, for one job, under a file lock.

    A ``queued`` state starts a new job and replaces the record. Otherwise the update applies only
    while the record belongs to ``job``, and the state never goes backwards (a late ``queued`` or
    ``running`` never overwrites ``running`` or a final state).

    Args:
        run_dir: the run folder.
        job: the job id the caller belongs to.
        state: the new state, or None to keep it.
        **fields: pid, phase, progress, error, and so on.

    Returns:
        the status as written (or as found, when the update was stale).
    """
    run_dir = Path(run_dir)
    with open(run_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = read_json(run_dir / STATUS_FILE, {}) or {}
        if state == "queued":
            current = {"job": job}
        elif current.get("job") != job:
            return current
        if state is not None and STATE_RANK[state] >= STATE_RANK.get(current.get("state"), -1):
            current["state"] = state
        current.update(fields, updated=now())
        write_json_atomic(run_dir / STATUS_FILE, current)
        return current


def read_status(run_dir: str | Path) -> dict | None:
    """The run's evaluation status, or None when it was never evaluated in the background.

    A live status whose process has died reads as ``failed``, with that as its error.
    """
    status = read_json(Path(run_dir) / STATUS_FILE)
    if not status:
        return None
    pid = status.get("pid")
    if status.get("state") in LIVE_STATES and pid is not None and not pid_alive(pid, status.get("pid_start")):
        return {**status, "state": "failed", "error": f"the evaluation process (pid {pid}) died without finishing"}
    return status


def is_running(run_dir: str | Path) -> bool:
    """Whether an evaluation of this run is queued or running now."""
    status = read_status(run_dir)
    return status is not None and status.get("state") in LIVE_STATES


def start(run: Run, data: str | Path, *, split: str = "test", cache_dir: str | Path | None = None) -> str:
    """Starts ``python -m radiology evaluate --save`` for a run in a background process.

    The status is written as ``queued`` before the process starts, and the child moves it on, so it
    never goes backwards. The split is made with the model's own seed and fractions.

    Args:
        run: a run with a model; not the bundled model, whose folder is read-only.
        data: the dataset folder (the caller checks it is inside the data root).
        split: ``train``, ``val``, ``test`` or ``all``.
        cache_dir: the decode cache folder, or None for none.

    Returns:
        the job id.

    Raises:
        EvaluationError: the run is the bundled model, has no model, is still training, or is
            being evaluated already.
    """
    for p in list(_children):
        if p.poll() is not None:
            _children.remove(p)
    check_can_save(run)
    if is_running(run.dir):
        raise EvaluationError(f"run {run.id} is being evaluated already; wait for it to finish")
    job = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    update_status(run.dir, job, "queued", queued=now(), data=str(data), split=split, progress=0.0, error=None)
    command = [sys.executable, "-m", "radiology", "evaluate", "--model", str(run.dir), "--data", str(data)]
    command += ["--split", split, "--save", "--job", job]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    try:
        with open(run.dir / "evaluation_console.txt", "wb") as console:
            proc = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a restart of the app does not take the evaluation down with it
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
    except OSError as exc:
        update_status(run.dir, job, "failed", error=f"could not start the evaluation: {exc}", ended=now())
        raise
    _children.append(proc)
    update_status(run.dir, job, pid=proc.pid, pid_start=process_start(proc.pid))
    return job


def check_can_save(run: Run) -> None:
    """Refuses runs whose folder must not receive an evaluation.

    Raises:
        EvaluationError: the run is the bundled model, has no model, or is still training.
    """
    if run.dir == registry.BUNDLED_DIR:
        raise EvaluationError(
            f"the bundled model's folder {run.dir} is read-only: import or train a run to save evaluations"
        )
    if not run.has_model:
        raise EvaluationError(f"run {run.id} has no model file {run.model_path.name} to evaluate")
    if run.state in LIVE_STATES:
        raise EvaluationError(f"run {run.id} is still {run.state}; evaluate it when its training has finished")
