"""Tests for radiology.registry: run status, dead processes, the active pointer and the lock."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from radiology import fsutil, jobs, registry


def _run(runs, name, state, pid=None, model=True):
    d = runs / name
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"state": state, "pid": pid}))
    if model:
        (d / "model.keras").write_bytes(b"x")
    return d


def test_list_runs_newest_first_and_dead_pid_reads_failed(tmp_path):
    """Runs list newest first; a 'running' run whose process is gone reads as failed."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _run(tmp_path, "20260101-000000-aaaa", "succeeded")
    _run(tmp_path, "20260102-000000-bbbb", "running", pid=dead.pid)
    runs = registry.list_runs(tmp_path, include_bundled=False)
    assert [r.id for r in runs] == ["20260102-000000-bbbb", "20260101-000000-aaaa"]
    assert runs[0].state == "failed" and "died" in runs[0].error
    assert registry.running_run(tmp_path) is None


def test_live_pid_reads_running(tmp_path):
    """A running run whose process lives, and holds the training lock, reads as running."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    holder = registry.TrainingLock(tmp_path)  # what the run's process holds
    try:
        _run(tmp_path, "r1", "running", pid=proc.pid)
        assert registry.running_run(tmp_path) is None  # the lock is free: no run can be live
        assert holder.acquire()
        assert registry.running_run(tmp_path).id == "r1"
    finally:
        holder.release()
        proc.kill()
        proc.wait()


def test_the_live_run_is_found_without_reading_the_others(tmp_path, monkeypatch):
    """While no training holds the lock no run folder is read; while one does, only statuses are read, newest
    first, up to the live run; the last training run skips newer imported ones."""
    proc = subprocess.Popen(["sleep", "30"])
    for i in range(5):
        _run(tmp_path, f"2026010{i}-000000-aaaa", "succeeded")
    live = _run(tmp_path, "20260109-000000-live", "running", pid=proc.pid)
    (tmp_path / "20260110-000000-impo" / "status.json").parent.mkdir()
    (tmp_path / "20260110-000000-impo" / "status.json").write_text(
        json.dumps({"state": "succeeded", "kind": "imported"})
    )
    read = []
    real = registry.read_json
    monkeypatch.setattr(
        registry, "read_json", lambda path, default=None: read.append(Path(path)) or real(path, default)
    )
    holder = registry.TrainingLock(tmp_path)
    try:
        assert registry.running_run(tmp_path) is None and read == []
        assert holder.acquire()
        assert registry.running_run(tmp_path).id == live.name
        assert [p.parent.name for p in read if p.name == "status.json"][:2] == ["20260110-000000-impo", live.name]
        older = {f"2026010{i}-000000-aaaa" for i in range(5)}
        assert not any(p.parent.name in older for p in read)
    finally:
        holder.release()
        proc.kill()
        proc.wait()
    assert registry.last_run(tmp_path).id == live.name
    assert registry.last_run(tmp_path, kind="imported").id == "20260110-000000-impo"


def test_set_active_is_atomic_and_checked(tmp_path, monkeypatch):
    """Promoting writes the pointer; promoting a failed run is refused; a crash mid-write keeps the old pointer."""
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "no-bundle")
    ok = registry.load_run(_run(tmp_path, "ok", "succeeded"))
    registry.set_active(ok, tmp_path)
    assert registry.active_run(tmp_path).id == "ok"
    bad = registry.load_run(_run(tmp_path, "bad", "failed"))
    with pytest.raises(ValueError, match="cannot be promoted"):
        registry.set_active(bad, tmp_path)
    ok2 = registry.load_run(_run(tmp_path, "ok2", "succeeded"))

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fsutil.os, "fsync", crash)
    with pytest.raises(OSError):
        registry.set_active(ok2, tmp_path)
    assert registry.active_run(tmp_path).id == "ok"
    assert not list(tmp_path.glob(".tmp-*"))


def test_active_falls_back_to_bundled_then_none(tmp_path, monkeypatch):
    """Without a pointer the bundled model is active; without either, none is."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    monkeypatch.setattr(registry, "BUNDLED_DIR", bundle)
    assert registry.active_run(tmp_path / "runs") is None
    (bundle / "model.keras").write_bytes(b"x")
    (bundle / "status.json").write_text('{"state": "succeeded"}')
    assert registry.active_run(tmp_path / "runs").id == "bundled"


def test_training_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    """A second holder is refused; a killed holder's lock is free at once."""
    code = (
        "import sys, time; from radiology.registry import TrainingLock; "
        f"l = TrainingLock({str(tmp_path)!r}); assert l.acquire(); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        lock = registry.TrainingLock(tmp_path)
        assert not lock.acquire() and lock.held_elsewhere()
    finally:
        proc.kill()
        proc.wait()
    assert registry.TrainingLock(tmp_path).acquire()


def test_history_tolerates_a_torn_last_line(tmp_path):
    """A history row cut short by a crash is skipped."""
    (tmp_path / "history.csv").write_text("epoch,loss\n1,0.5\n2,0.")
    assert registry.read_history(tmp_path / "history.csv") == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.0}]
    (tmp_path / "history.csv").write_text("epoch,loss\n1,0.5\n2,x")
    assert registry.read_history(tmp_path / "history.csv") == [{"epoch": 1, "loss": 0.5}]


def test_progress_fractions(tmp_path):
    """Progress reads as overall and within-epoch fractions; image reading counts as epoch zero."""
    d = _run(tmp_path, "r", "running")
    run = registry.load_run(d)
    (d / "progress.json").write_text(
        json.dumps({"phase": "training", "epoch": 2, "epochs": 4, "batch": 5, "batches": 10})
    )
    assert run.progress_fractions() == (0.375, 0.5)
    (d / "progress.json").write_text(json.dumps({"phase": "caching", "batch": 30, "batches": 120}))
    assert run.progress_fractions() == (0.0, 0.25)
    (d / "progress.json").unlink()
    assert run.progress_fractions() == (0.0, 0.0)


def test_reused_pid_reads_failed(tmp_path):
    """A running run whose pid now belongs to another process (another start time) reads as failed."""
    other = subprocess.Popen(["sleep", "30"])
    try:
        start = jobs.process_start(other.pid)
        d = _run(tmp_path, "reused", "running", pid=other.pid)
        (d / "status.json").write_text(json.dumps({"state": "running", "pid": other.pid, "pid_start": start - 1}))
        run = registry.load_run(d)
        assert run.state == "failed" and "died" in run.error
        holder = registry.TrainingLock(tmp_path)
        assert holder.acquire()
        assert registry.running_run(tmp_path) is None
        holder.release()
        (d / "status.json").write_text(json.dumps({"state": "running", "pid": other.pid, "pid_start": start}))
        assert registry.load_run(d).state == "running"
    finally:
        other.kill()
        other.wait()


def test_epochs_summary_reads_the_history_against_the_config(tmp_path):
    """Complete, stopped, phased and history-less imported runs are described by what their history holds."""

    def run(name, epochs, rows, kind="training"):
        d = _run(tmp_path, name, "succeeded")
        (d / "config.json").write_text(json.dumps({"epochs": epochs} if epochs else {}))
        (d / "status.json").write_text(json.dumps({"state": "cancelled", "kind": kind}))
        if rows:
            fsutil.write_csv_atomic(d / "history.csv", rows)
        return registry.load_run(d)

    assert run("complete", 3, [{"epoch": e} for e in (1, 2, 3)]).epochs_summary() == "3"
    assert run("stopped", 9, [{"epoch": 1}, {"epoch": 2}]).epochs_summary() == "2 of 9"
    phased = [{"phase": p, "epoch": e} for p, e in ((1, 1), (1, 2), (2, 1))]
    assert run("phased", 1, phased).epochs_summary() == "3 in 2 phases"
    assert run("imported", 9, [], kind="imported").epochs_summary() == "9 planned (no history)"
    assert run("notebook", None, [], kind="imported").epochs_summary() == ""


def test_cancel_requested_while_the_cancel_file_is_there(tmp_path):
    """A run reads as cancelling from the cancel request until a resume removes the file."""
    d = _run(tmp_path, "20260101-000000-aaaa", "running")
    assert not registry.load_run(d).cancel_requested
    (d / registry.CANCEL_FILE).touch()
    assert registry.load_run(d).cancel_requested
