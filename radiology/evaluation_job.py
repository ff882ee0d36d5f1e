"""Background jobs on a run's model: evaluating it, auditing it, or fitting its out-of-distribution gate.

A job is a ``python -m radiology evaluate --save``, ``audit --save`` or ``fit-ood`` process (its ``kind``).
It reports through ``evaluation_status.json`` in the run folder, a ``radiology.jobs`` status: kind, state
(``queued``, ``running``, ``succeeded``, ``failed``), pid, phase, progress fraction, error. One job runs per
run at a time, of any kind: an evaluation never reads a model file that a gate fit is rewriting, and each
keeps the CPU busy. An evaluation's results land in a folder of their own, ``RUN/evaluations/JOB/``
(``metrics.json``, ``predictions.csv``), an audit's in ``RUN/audits/JOB/audit.json``; each appears whole or
not at all, and the run's training-time ``metrics.json`` is never touched. A gate fit stores the statistics
in the run's ``model.keras`` and its test-split numbers under the new gate as an evaluation of their own.
"""

from __future__ import annotations

import os
from pathlib import Path

from radiology import jobs, registry
from radiology.errors import EvaluationError
from radiology.jobs import LIVE_STATES, now
from radiology.registry import Run

STATUS_FILE = "evaluation_status.json"
KINDS = {  # the radiology subcommand a background job runs, and how a refusal names it
    "evaluate": "being evaluated",
    "audit": "being audited",
    "fit-ood": "having its out-of-distribution gate fitted",
}


def update_status(run_dir: str | Path, job: str, state: str | None = None, **fields) -> dict:
    """Changes a run's evaluation status for one job (see ``radiology.jobs.update_status``).

    A ``queued`` state starts a new job and replaces the record, but only while no other evaluation of the
    run is live: the check and the write are one step under the status lock. Otherwise the update applies
    only while the record belongs to ``job``, and the state never goes backwards.

    Args:
        run_dir: the run folder.
        job: the job id the caller belongs to.
        state: the new state, or None to keep it.
        **fields: pid, phase, progress, error, and so on.

    Returns:
        the status as written (or as found, when the update was stale or another job is live).
    """
    return jobs.update_status(Path(run_dir) / STATUS_FILE, state, job=job, restart=state == "queued", **fields)


def read_status(run_dir: str | Path) -> dict | None:
    """The run's evaluation status, or None when it was never evaluated in the background.

    A live status whose process has died reads as ``failed``, with that as its error.
    """
    return jobs.read_status(Path(run_dir) / STATUS_FILE, what="evaluation")


def is_running(run_dir: str | Path) -> bool:
    """Whether a job on this run's model (an evaluation, an audit or a gate fit) is queued or running now."""
    status = read_status(run_dir)
    return status is not None and status.get("state") in LIVE_STATES


def queue(run: Run, job: str, *, kind: str = "evaluate", **fields) -> dict:
    """Queues ``job`` on a run's model, refusing while another job on it is live.

    Args:
        run: the run.
        job: the new job's id.
        kind: ``evaluate``, ``audit`` or ``fit-ood``.
        **fields: data, split, progress, and so on.

    Raises:
        EvaluationError: another job on the run's model (an evaluation, an audit or a gate fit) is queued or running.
    """
    status = update_status(run.dir, job, "queued", queued=now(), kind=kind, **fields)
    if status.get("job") != job:
        busy = KINDS.get(status.get("kind", "evaluate"), "busy")
        raise EvaluationError(f"run {run.id} is {busy} already (one job on a model at a time); wait for it to finish")
    return status


def start(
    run: Run,
    data: str | Path,
    *,
    split: str = "test",
    cache_dir: str | Path | None = None,
    kind: str = "evaluate",
    n: int | None = None,
) -> str:
    """Starts ``python -m radiology evaluate --save`` (or ``audit --save``) for a run in a background process.

    The status is written as ``queued`` before the process starts, and the child moves it on, so it
    never goes backwards. The split is made with the model's own seed and fractions.

    Args:
        run: a run with a model; not the bundled model, whose folder is read-only.
        data: the dataset folder (the caller checks it is inside the data root).
        split: ``train``, ``val``, ``test`` or ``all``.
        cache_dir: the decode cache folder, or None for none.
        kind: ``evaluate`` or ``audit`` (the trust audit, ``radiology.audit``).
        n: images of an audit's faithfulness sample; None for the command's default.

    Returns:
        the job id.

    Raises:
        ValueError: a kind other than ``evaluate`` or ``audit``.
        EvaluationError: the run is the bundled model, has no model, is still training, or another job on
            its model is live.
    """
    if kind not in ("evaluate", "audit"):
        raise ValueError(f"kind must be one of {('evaluate', 'audit')}, got {kind!r}")
    check_can_save(run)
    job = jobs.new_id()
    queue(run, job, kind=kind, data=str(data), split=split, progress=0.0)
    argv = ["-m", "radiology", kind, "--model", str(run.dir), "--data", str(data), "--split", split, "--save"]
    if kind == "audit" and n is not None:
        argv += ["--n", str(n)]
    _spawn(run, job, argv, cache_dir)
    return job


def start_gate_fit(run: Run, data: str | Path, *, cache_dir: str | Path | None = None) -> str:
    """Starts ``python -m radiology fit-ood`` for a run in a background process: the out-of-distribution gate.

    The gate's statistics are fitted on the training split of ``data`` and its thresholds on the validation
    split, both split with the model's own seed and fractions, and stored in the run's ``model.keras``; its
    test-split numbers under the new gate are stored as an evaluation of their own.

    Args:
        run: a run with a model; not the bundled model, whose folder is read-only.
        data: the dataset folder, best the one the model was trained on (the caller checks it is inside the
            data root).
        cache_dir: the decode cache folder, or None for none.

    Returns:
        the job id.

    Raises:
        EvaluationError: the run is the bundled model, has no model, is still training, or another job on
            its model is live.
    """
    check_can_save(run)
    job = jobs.new_id()
    queue(run, job, kind="fit-ood", data=str(data), split="train", progress=0.0)
    _spawn(run, job, ["-m", "radiology", "fit-ood", "--model", str(run.dir), "--data", str(data)], cache_dir)
    return job


def _spawn(run: Run, job: str, argv: list[str], cache_dir: str | Path | None) -> None:
    """Starts the queued ``job``'s process, ``python ARGV --job JOB [--cache-dir DIR]``, through ``radiology.jobs``."""
    argv = [*argv, "--job", job]
    if cache_dir is not None:
        argv += ["--cache-dir", str(cache_dir)]
    jobs.start(
        run.dir / STATUS_FILE,
        argv,
        console=run.dir / "evaluation_console.txt",
        job=job,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


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
