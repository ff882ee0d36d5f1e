"""Tests for training.clock: durations in words, the live clock of a run, and the timed estimate."""

import dataclasses
import json

import pytest

from tests.factories import make_dataset
from training import clock
from training.clock import Estimate, RunClock, format_duration
from training.config import TrainConfig


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "?"),
        (float("nan"), "?"),
        (0.4, "0 s"),
        (42, "42 s"),
        (200, "3 min 20 s"),
        (3900, "1 h 05 min"),
        (28 * 3600, "1 d 4 h"),
    ],
)
def test_format_duration(seconds, text):
    """Durations read as seconds, minutes, hours or days."""
    assert format_duration(seconds) == text


class FakeTime:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_run_clock_rates_and_time_left(monkeypatch):
    """Images/s leaves out the first (compiling) batch; time left counts the batches, validation and epochs left."""
    now = FakeTime()
    monkeypatch.setattr(clock.time, "monotonic", now)
    c = RunClock(epochs=3, batches=10, batch_size=8, train_images=80, val_images=24)
    c.epoch_begin()
    now.t += 30  # the first batch traces the step
    c.batch_end(0)
    assert c.fields(epoch=1) == {"images_per_s": None, "epoch_left_s": None, "run_left_s": None}
    for b in range(1, 5):
        now.t += 2
        c.batch_end(b)
    assert c.images_per_s() == pytest.approx(4.0)  # 8 images per 2 s
    # 5 batches left at 2 s, validation 24 images at a third of the training cost: 24 * 0.25 / 3 = 2 s
    assert c.epoch_left() == pytest.approx(12.0)
    assert c.run_left(epoch=1) == pytest.approx(12.0 + 2 * (20 + 2))
    for b in range(5, 10):
        now.t += 2
        c.batch_end(b)
    train_seconds = c.train_seconds()
    now.t += 5  # validation took 5 s
    c.epoch_end(train_seconds)
    assert c.epoch_seconds == pytest.approx(30 + 18 + 5) and c.val_seconds == pytest.approx(5)
    c.epoch_begin()
    assert c.fields(epoch=2)["run_left_s"] == pytest.approx(10 * 2 + 5 + 53)  # last epoch's rate until a new one


def test_estimate_arithmetic():
    """An epoch is its training, validation and checkpoint time; a run adds setup, the gate's fit and the test."""
    e = Estimate(100, 20, 10, 10.0, 40.0, 2.0, 15.0, "compute: float32", "TensorFlow on CPU (2 cores)", 8, 2, "t")
    assert e.epoch_seconds() == pytest.approx(10 + 0.5 + 2)
    assert e.after_seconds() == pytest.approx((100 + 20 + 10) / 40)  # forward passes: gate fit on train+val, test
    assert e.total_seconds(4) == pytest.approx(15 + 4 * 12.5 + 3.25)
    assert "About **1 min 08 s** for 4 epochs" in clock.describe(e, 4)
    assert "then 3 s to fit the out-of-distribution gate" in clock.describe(e, 4)
    assert "TensorFlow on CPU (2 cores)" in e.method()


def test_size_tradeoff_names_the_gradcam_grid():
    """The image-size line gives the Grad-CAM grid N/16 and the compute share against 224 px."""
    assert "4×4 cells" in clock.size_tradeoff(64) and "8%" in clock.size_tradeoff(64)
    assert "14×14 cells" in clock.size_tradeoff(224)


def test_estimate_cli_records_the_estimate_and_caches_the_compute_choice(tmp_path):
    """python -m training --estimate times the settings, prints the duration and how, and stores both the
    estimate (for the Training page) and the compute choice (which the run then reuses)."""
    from training.__main__ import main

    data = make_dataset(tmp_path / "data", per_class=8)
    runs = tmp_path / "runs"
    argv = ["--data", str(data), "--epochs", "3", "--batch-size", "4", "--weights", "none", "--image-size", "32"]
    assert main([*argv, "--runs-dir", str(runs), "--estimate"]) == 0
    config = TrainConfig(data=str(data), epochs=3, batch_size=4, weights="none", image_size=32, runs_dir=str(runs))
    record = clock.read_estimate(config)
    assert record["state"] == "done", record
    estimate = clock.estimate_from(record)
    assert (estimate.train_images, estimate.val_images, estimate.test_images, estimate.batch_size) == (15, 6, 3, 4)
    assert estimate.train_images_per_s > 0 and estimate.total_seconds(3) > 3 * estimate.epoch_seconds()
    assert "timed float32" in estimate.compute and "float32 + XLA" in estimate.compute
    choices = list((runs / ".cache" / "compute").glob("*.json"))
    assert len(choices) == 1 and json.loads(choices[0].read_text())["images_per_s"]
    # another number of epochs needs no new timing: the key leaves the epochs out
    assert clock.estimate_path(dataclasses.replace(config, epochs=30)) == clock.estimate_path(config)
    assert clock.estimate_path(dataclasses.replace(config, image_size=64)) != clock.estimate_path(config)
