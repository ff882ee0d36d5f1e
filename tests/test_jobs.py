"""Tests of radiology.jobs: the state machine, pid checks, spawner and ids shared by every background job."""

import json
import os
import re
import subprocess

import pytest

from radiology import jobs


def _updated(path):
    return {"updated": json.loads(path.read_text())["updated"]}


def test_status_never_moves_backwards(tmp_path):
    """queued, running, then a final state: a write that moves back or changes a final state changes nothing."""
    path = tmp_path / "status.json"
    assert jobs.update_status(path, "queued", pid=1)["state"] == "queued"
    assert jobs.update_status(path, "running", pid=2)["state"] == "running"
    assert jobs.update_status(path, "queued", pid=3) == {"state": "running", "pid": 2, **_updated(path)}
    assert jobs.update_status(path, pid=4)["state"] == "running"  # fields alone keep the state
    assert jobs.update_status(path, "failed", error="MemoryError")["state"] == "failed"
    for later in ("running", "queued", "succeeded", "cancelled"):
        assert jobs.update_status(path, later, error=None)["state"] == "failed"
    status = json.loads(path.read_text())
    assert status["state"] == "failed" and status["error"] == "MemoryError" and status["pid"] == 4
    with pytest.raises(ValueError, match="state must be one of .* got 'done'"):
        jobs.update_status(path, "done")
    with pytest.raises(ValueError, match="a restart queues the job, got state 'running'"):
        jobs.update_status(path, "running", restart=True)


def test_restart_is_refused_while_another_attempt_lives(tmp_path):
    """A restart queues a job that is not live, counting attempts; while one lives it changes nothing."""
    path = tmp_path / "status.json"
    first = jobs.update_status(path, "queued", job="a", restart=True, data="x")
    assert first["job"] == "a" and first["attempt"] == 1
    assert jobs.update_status(path, "queued", job="b", restart=True)["job"] == "a"  # queued a moment ago: live
    assert jobs.update_status(path, "running", job="b")["state"] == "queued"  # another job's write is stale
    jobs.update_status(path, "failed", job="a", error="boom", pid=2**22 + 1)
    again = jobs.update_status(path, "queued", job="b", restart=True)
    assert again["job"] == "b" and "error" not in again and "data" not in again
    kept = jobs.update_status(tmp_path / "run.json", "queued", restart=True, kind="training")
    jobs.update_status(tmp_path / "run.json", "cancelled", ended="t", pid=2**22 + 1)
    resumed = jobs.update_status(tmp_path / "run.json", "queued", restart=True)
    assert resumed["attempt"] == kept["attempt"] + 1 and resumed["kind"] == "training"
    assert "ended" not in resumed and "pid" not in resumed


def test_a_queued_job_without_a_process_lives_only_for_the_grace_period(tmp_path, monkeypatch):
    """Queued with no pid yet reads live; once older than the grace period it reads failed as never started."""
    path = tmp_path / "status.json"
    jobs.update_status(path, "queued")
    assert jobs.is_live(jobs.read_status(path))
    monkeypatch.setattr(jobs, "SPAWN_GRACE_S", -1.0)
    status = jobs.read_status(path, what="estimate")
    assert status["state"] == "failed" and status["error"] == "the estimate process never started"


def test_a_dead_or_reused_pid_reads_failed(tmp_path):
    """A running status whose process is gone, or whose pid another process reused, reads as failed."""
    path = tmp_path / "status.json"
    other = subprocess.Popen(["sleep", "30"])
    try:
        start = jobs.process_start(other.pid)
        jobs.update_status(path, "running", pid=other.pid, pid_start=start + 1)
        assert jobs.read_status(path, what="evaluation")["error"] == (
            f"the evaluation process (pid {other.pid}) died without finishing"
        )
        jobs.update_status(path, pid_start=start)
        assert jobs.read_status(path)["state"] == "running"
    finally:
        other.kill()
        other.wait()
    assert jobs.effective_state(json.loads(path.read_text())) == "failed"


def test_process_start_names_one_process():
    """The start time read from /proc is stable for a process and differs for a later one."""
    me = jobs.process_start(os.getpid())
    assert isinstance(me, int) and me == jobs.process_start(os.getpid())
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert jobs.process_start(proc.pid) >= me
        assert jobs.pid_alive(proc.pid, jobs.process_start(proc.pid))
    finally:
        proc.kill()
        proc.wait()
    assert jobs.process_start(proc.pid) is None and jobs.process_start(None) is None


def test_terminate_never_signals_this_process():
    """terminate refuses this process's own pid, whatever the start time given."""
    assert jobs.terminate(os.getpid(), jobs.process_start(os.getpid())) is False


@pytest.mark.parametrize("error", [KeyError("config"), RuntimeError("boom"), KeyboardInterrupt()])
def test_recording_records_any_failure_then_raises_it(tmp_path, error):
    """An exception of any type inside recording() marks the job failed with its type and message, and goes on."""
    path = tmp_path / "status.json"
    jobs.update_status(path, "queued", job="j", restart=True)
    with pytest.raises(type(error)):
        with jobs.recording(path, job="j"):
            raise error
    status = json.loads(path.read_text())
    assert status["state"] == "failed" and status["error"] == jobs.describe_error(error)
    assert status["error"].startswith(type(error).__name__)


def test_start_records_the_childs_pid_and_a_failed_start(tmp_path):
    """start() records the spawned process's own pid; a process that cannot start leaves the job failed."""
    path = tmp_path / "status.json"
    jobs.update_status(path, "queued", job="j", restart=True)
    status = jobs.start(path, ["-c", "import time; time.sleep(30)"], console=tmp_path / "out.txt", job="j")
    try:
        assert status["pid"] != os.getpid() and jobs.pid_alive(status["pid"], status["pid_start"])
    finally:
        os.kill(status["pid"], 9)
    jobs.update_status(tmp_path / "b.json", "queued", restart=True)
    with pytest.raises(OSError):
        jobs.start(tmp_path / "b.json", ["-c", "pass"], console=tmp_path / "missing" / "out.txt")
    failed = json.loads((tmp_path / "b.json").read_text())
    assert failed["state"] == "failed" and failed["error"].startswith("the process did not start: FileNotFoundError")


def test_ids_sort_by_start_time_and_differ():
    """An id is the start time and four hex digits."""
    a, b = jobs.new_id(), jobs.new_id()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", a) and a[:15] <= b[:15]
