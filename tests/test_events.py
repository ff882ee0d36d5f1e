"""Tests for training.events: a run's epochs as TensorBoard event files."""

import builtins
from pathlib import Path

import pytest

from training.events import EventWriter


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of the event files in ``folder``, by tag: (step, value) pairs."""
    import tensorflow as tf

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                found.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return found


def test_epochs_become_train_and_validation_scalars(tmp_path):
    """Each row is one scalar per metric at its epoch; val_ metrics go to validation under the same name."""
    pytest.importorskip("tensorflow")
    writer = EventWriter(tmp_path)
    assert writer.unavailable is None
    writer.write_epoch({"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.2, "val_accuracy": 0.4, "lr": 1e-4})
    writer.write_epoch({"epoch": 2, "loss": 0.8, "accuracy": 0.6, "seconds": 12.5})
    writer.close()
    train = _scalars(tmp_path / "tensorboard" / "train")
    assert train["loss"] == [(1, 1.0), (2, pytest.approx(0.8))] and train["epoch_seconds"] == [(2, 12.5)]
    assert train["learning_rate"] == [(1, pytest.approx(1e-4))]
    assert _scalars(tmp_path / "tensorboard" / "validation")["accuracy"] == [(1, pytest.approx(0.4))]


def test_without_tensorflow_it_says_so_and_writes_nothing(tmp_path, monkeypatch):
    """Where TensorFlow cannot be imported (a JAX-only machine), the writer says why and every write is a no-op."""
    real_import = builtins.__import__

    def no_tensorflow(name, *args, **kwargs):
        if name.startswith("tensorflow"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorflow)
    writer = EventWriter(tmp_path)
    assert "TensorFlow is not installed" in writer.unavailable
    writer.write_epoch({"epoch": 1, "loss": 1.0})
    writer.close()
    assert not (tmp_path / "tensorboard").exists()
