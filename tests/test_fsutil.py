"""Tests for radiology.fsutil: atomic writes of files and folders."""

import json
import os
import threading

import pytest

from radiology import fsutil


def test_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    """Bytes, text and JSON land at the path, replacing what was there, with no temporary file left."""
    target = tmp_path / "a.json"
    target.write_text("old")
    fsutil.write_json_atomic(target, {"x": [1, 2]})
    assert json.loads(target.read_text()) == {"x": [1, 2]}
    fsutil.atomic_write_text(tmp_path / "t.csv", "a,b\n")
    fsutil.atomic_write_bytes(tmp_path / "b.bin", b"\0\1")
    assert (tmp_path / "t.csv").read_text() == "a,b\n" and (tmp_path / "b.bin").read_bytes() == b"\0\1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin", "t.csv"]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    """A write that fails at sync, or a writer that raises, leaves the old content and no temporary file."""
    target = tmp_path / "a.json"
    target.write_text('{"old": true}')

    def full(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(fsutil.os, "fsync", full)
        with pytest.raises(OSError, match="No space left"):
            fsutil.write_json_atomic(target, {"new": True})
    with pytest.raises(TypeError, match="not JSON serializable"):
        fsutil.write_json_atomic(target, {"new": object()})
    with pytest.raises(RuntimeError, match="writer failed"), fsutil.atomic_path(tmp_path / "m.keras") as tmp:
        assert tmp.suffix == ".keras" and tmp.name.startswith(fsutil.TMP_PREFIX)
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_concurrent_writers_use_unique_temporary_names(tmp_path):
    """Writers of one file at the same time each get their own temporary name; one complete file wins."""
    target = tmp_path / "status.json"
    seen, barrier = [], threading.Barrier(8)

    def write(i):
        with fsutil.atomic_path(target) as tmp:
            seen.append(tmp.name)
            barrier.wait()  # every writer holds its temporary file at once
            tmp.write_text(json.dumps({"writer": i, "pad": "x" * 10000}))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 8
    assert json.loads(target.read_text())["writer"] in range(8)
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_atomic_folder_is_created_whole_or_not_at_all(tmp_path):
    """A folder appears with its files; a failed writer leaves nothing; a second writer is told it lost."""
    entry = tmp_path / "cache" / "key"
    with pytest.raises(RuntimeError, match="killed"), fsutil.atomic_folder(entry) as tmp:
        (tmp / "a.npy").write_bytes(b"half")
        raise RuntimeError("killed")
    assert not entry.exists() and os.listdir(tmp_path / "cache") == []
    with fsutil.atomic_folder(entry) as tmp:
        (tmp / "a.npy").write_bytes(b"first")
    with pytest.raises(FileExistsError, match="created by another writer"), fsutil.atomic_folder(entry) as tmp:
        (tmp / "a.npy").write_bytes(b"second")
    assert (entry / "a.npy").read_bytes() == b"first"
    assert os.listdir(tmp_path / "cache") == ["key"]


def test_a_non_durable_write_is_atomic_without_fsync(tmp_path, monkeypatch):
    """durable=False (progress, rewritten several times a second) replaces the file whole but never fsyncs."""
    import json

    from radiology import fsutil

    synced = []
    monkeypatch.setattr(fsutil, "_fsync_file", lambda p: synced.append(p))
    monkeypatch.setattr(fsutil, "_fsync_dir", lambda p: synced.append(p))
    fsutil.write_json_atomic(tmp_path / "progress.json", {"batch": 1}, durable=False)
    assert synced == [] and json.loads((tmp_path / "progress.json").read_text()) == {"batch": 1}
    fsutil.write_json_atomic(tmp_path / "status.json", {"state": "running"})
    assert len(synced) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.json", "status.json"]


def test_csv_rows_with_different_keys_share_one_header(tmp_path):
    """write_csv_atomic heads the file with every key in first-seen order; missing cells are empty."""
    import csv

    from radiology.fsutil import write_csv_atomic

    write_csv_atomic(tmp_path / "h.csv", [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "val_loss": 0.7, "loss": 0.4}])
    with open(tmp_path / "h.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["epoch", "loss", "val_loss"] and rows[0]["val_loss"] == "" and rows[1]["loss"] == "0.4"


def test_remove_leftovers_takes_only_temporaries(tmp_path):
    """What killed writers left (.tmp- files and folders) goes; every other file stays."""
    from radiology.fsutil import TMP_PREFIX, remove_leftovers

    (tmp_path / "model.keras").write_text("model")
    (tmp_path / f"{TMP_PREFIX}abc.keras").write_text("half")
    (tmp_path / f"{TMP_PREFIX}folder").mkdir()
    (tmp_path / f"{TMP_PREFIX}folder" / "pixels.npy").write_text("half")
    removed = remove_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == [f"{TMP_PREFIX}abc.keras", f"{TMP_PREFIX}folder"]
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
