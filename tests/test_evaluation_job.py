"""Tests of radiology.evaluation_job: the background evaluation and its status file."""

import json
import os
import shutil
import time

import pytest

from radiology import evaluation_job, jobs, registry
from radiology.errors import EvaluationError
from tests.factories import make_dataset


def test_status_never_goes_backwards_and_ignores_stale_jobs(tmp_path):
    """A late queued or running write does not undo running or succeeded; another job's writes are ignored."""
    evaluation_job.update_status(tmp_path, "a", "queued", pid=None)
    evaluation_job.update_status(tmp_path, "a", "succeeded", progress=1.0)
    status = evaluation_job.update_status(tmp_path, "a", "running", pid=os.getpid())
    assert status["state"] == "succeeded" and status["pid"] is None
    assert evaluation_job.update_status(tmp_path, "b", "failed", error="x")["state"] == "succeeded"
    assert evaluation_job.update_status(tmp_path, "c", "queued")["job"] == "c"
    assert evaluation_job.read_status(tmp_path)["state"] == "queued"


def test_a_dead_process_reads_as_failed(tmp_path):
    """A running status whose process is gone reads as failed, naming the pid."""
    evaluation_job.update_status(tmp_path, "a", "queued")
    evaluation_job.update_status(tmp_path, "a", "running", pid=2**22 + 12345)
    status = evaluation_job.read_status(tmp_path)
    assert status["state"] == "failed" and "died without finishing" in status["error"]


def test_a_reused_pid_reads_as_failed(tmp_path):
    """A live unrelated process that reused the job's pid (another start time) does not keep the job alive."""
    import subprocess

    other = subprocess.Popen(["sleep", "30"])
    try:
        evaluation_job.update_status(tmp_path, "a", "queued")
        start = jobs.process_start(other.pid)
        evaluation_job.update_status(tmp_path, "a", "running", pid=other.pid, pid_start=start + 1)
        assert evaluation_job.read_status(tmp_path)["state"] == "failed"
        evaluation_job.update_status(tmp_path, "a", pid_start=start)
        assert evaluation_job.read_status(tmp_path)["state"] == "running"
    finally:
        other.kill()
        other.wait()


def test_start_refuses_the_bundled_model(tiny_run, tmp_path, monkeypatch):
    """The bundled model's folder is read-only: no job starts and no status is written."""
    run_dir = shutil.copytree(tiny_run, tmp_path / "bundled")
    monkeypatch.setattr(registry, "BUNDLED_DIR", run_dir)
    with pytest.raises(EvaluationError, match="read-only"):
        evaluation_job.start(registry.load_run(run_dir), tmp_path)
    assert evaluation_job.read_status(run_dir) is None


def test_background_evaluation_succeeds_and_writes_metrics(tiny_run, tmp_path):
    """A job started on a dataset reaches succeeded with progress 1 and stores its metrics as an evaluation of
    their own in the run, leaving the training-time metrics.json as it was."""
    run_dir = shutil.copytree(tiny_run, tmp_path / "runs" / "20260101-000000-eval")
    data = make_dataset(tmp_path / "data", per_class=3, splits=True)
    before = json.loads((run_dir / "metrics.json").read_text())
    evaluation_job.start(registry.load_run(run_dir), data, split="val", cache_dir=tmp_path / "cache")
    with pytest.raises(EvaluationError, match="being evaluated already"):
        evaluation_job.start(registry.load_run(run_dir), data)
    deadline = time.monotonic() + 400
    while evaluation_job.is_running(run_dir) and time.monotonic() < deadline:
        time.sleep(1)
    status = evaluation_job.read_status(run_dir)
    assert status["state"] == "succeeded", (status, (run_dir / "evaluation_console.txt").read_text()[-2000:])
    assert status["progress"] == 1.0 and isinstance(status["pid"], int)
    run = registry.load_run(run_dir)
    assert run.metrics == before  # the training-time test is kept
    (record,) = [e for e in run.evaluations() if e.id != "training"]
    m = record.metrics
    assert record.id == status["job"] == status["evaluation"] and m["source"] == "evaluate"
    assert m["split"] == "val" and m["n"] == 9 and m["data_root"] == str(data) and m["evaluated"]
    assert m["split_matches_training"] is False and len(record.predictions()) == 9


def test_two_starts_queue_one_evaluation(tmp_path, monkeypatch):
    """Of two starts that both found no evaluation running (the check raced), only the first is queued and
    spawned: the check and the queued write are one step under the status lock."""
    import subprocess

    run_dir = tmp_path / "runs" / "20260101-000000-aaaa"
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"state": "succeeded"}))
    (run_dir / "model.keras").write_bytes(b"model")
    monkeypatch.setattr(evaluation_job, "is_running", lambda _: False)  # both callers checked before either wrote
    real_popen, spawned = subprocess.Popen, []

    def fake_popen(args, **kwargs):
        spawned.append(real_popen(["sleep", "30"]))
        return spawned[-1]

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    run = registry.load_run(run_dir)
    try:
        job = evaluation_job.start(run, tmp_path / "data")
        with pytest.raises(EvaluationError, match="being evaluated already"):
            evaluation_job.start(run, tmp_path / "other")
        status = evaluation_job.read_status(run_dir)
        assert status["job"] == job and status["data"] == str(tmp_path / "data") and len(spawned) == 1
    finally:
        for proc in spawned:
            proc.kill()
            proc.wait()


def test_a_gate_fit_and_an_evaluation_of_one_run_exclude_each_other(tmp_path, monkeypatch):
    """A gate fit is a job of the run's model like an evaluation: queued as fit-ood with its own command, and
    an evaluation asked for meanwhile is refused, naming the fit."""
    import subprocess

    run_dir = tmp_path / "runs" / "20260101-000000-gate"
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"state": "succeeded"}))
    (run_dir / "model.keras").write_bytes(b"model")
    real_popen, spawned = subprocess.Popen, []

    def fake_popen(args, **kwargs):
        spawned.append((args, real_popen(["sleep", "30"])))
        return spawned[-1][1]

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    run = registry.load_run(run_dir)
    try:
        job = evaluation_job.start_gate_fit(run, tmp_path / "data", cache_dir=tmp_path / "cache")
        with pytest.raises(EvaluationError, match="having its out-of-distribution gate fitted already"):
            evaluation_job.start(run, tmp_path / "data")
        status = evaluation_job.read_status(run_dir)
        assert status["kind"] == "fit-ood" and status["job"] == job and evaluation_job.is_running(run_dir)
        ((argv, _),) = spawned
        assert argv[1:4] == ["-m", "radiology", "fit-ood"] and argv[argv.index("--job") + 1] == job
        assert argv[argv.index("--model") + 1] == str(run_dir) and "--cache-dir" in argv
    finally:
        for _, proc in spawned:
            proc.kill()
            proc.wait()


def test_an_audit_is_a_job_of_the_same_kind_of_status(tmp_path):
    """An unknown kind is refused before anything is written; an audit waits for a live evaluation of the run,
    and an evaluation for a live audit, each naming what runs."""
    from tests.factories import corner_run

    run = registry.load_run(corner_run(tmp_path / "runs" / "r"))
    with pytest.raises(ValueError, match="kind must be one of .*got 'explain'"):
        evaluation_job.start(run, tmp_path, kind="explain")
    assert evaluation_job.read_status(run.dir) is None
    evaluation_job.queue(run, "a", kind="evaluate")  # queued, its process not started yet: live for a while
    with pytest.raises(EvaluationError, match="is being evaluated already"):
        evaluation_job.start(run, tmp_path, kind="audit")
    evaluation_job.update_status(run.dir, "a", "failed", error="stopped")
    evaluation_job.queue(run, "b", kind="audit")
    with pytest.raises(EvaluationError, match="is being audited already"):
        evaluation_job.start(run, tmp_path)
