"""Tests for training.estimate: a run's duration, timed on this machine before it starts."""

import dataclasses
import json

import pytest

from tests.factories import make_dataset
from training import estimate as estimate_module
from training.config import TrainConfig
from training.estimate import Estimate


def test_estimate_arithmetic():
    """An epoch is its training, validation and checkpoint time; a run adds setup, the gate's fit and the test;
    one epoch is "1 epoch"."""
    e = Estimate(100, 20, 10, 10.0, 40.0, 2.0, 15.0, "compute: float32", "TensorFlow on CPU (2 cores)", 8, 2, "t")
    assert e.epoch_seconds() == pytest.approx(10 + 0.5 + 2)
    assert e.after_seconds() == pytest.approx((100 + 20 + 10) / 40)  # forward passes: gate fit on train+val, test
    assert e.total_seconds(4) == pytest.approx(15 + 4 * 12.5 + 3.25)
    assert "About **1 min 08 s** for 4 epochs" in estimate_module.describe(e, 4)
    assert "for 1 epoch on this machine" in estimate_module.describe(e, 1)
    assert "then 3 s to fit the out-of-distribution gate" in estimate_module.describe(e, 4)
    assert "TensorFlow on CPU (2 cores)" in e.method()


def test_size_tradeoff_names_the_gradcam_grid():
    """The image-size line gives the Grad-CAM grid N/16 and the compute share against 224 px."""
    assert "4×4 cells" in estimate_module.size_tradeoff(64) and "8%" in estimate_module.size_tradeoff(64)
    assert "14×14 cells" in estimate_module.size_tradeoff(224)


def test_estimate_cli_records_the_estimate_and_caches_the_compute_choice(tmp_path):
    """python -m training --estimate times the settings, prints the duration and how, and stores both the
    estimate (for the Training page) and the compute choice (which the run then reuses)."""
    from training.__main__ import main

    data = make_dataset(tmp_path / "data", per_class=8)
    runs = tmp_path / "runs"
    argv = ["--data", str(data), "--epochs", "3", "--batch-size", "4", "--weights", "none", "--image-size", "32"]
    assert main([*argv, "--runs-dir", str(runs), "--estimate"]) == 0
    config = TrainConfig(data=str(data), epochs=3, batch_size=4, weights="none", image_size=32, runs_dir=str(runs))
    record = estimate_module.read_estimate(config)
    assert record["state"] == "succeeded", record
    estimate = estimate_module.estimate_from(record)
    assert (estimate.train_images, estimate.val_images, estimate.test_images, estimate.batch_size) == (15, 6, 3, 4)
    assert estimate.train_images_per_s > 0 and estimate.total_seconds(3) > 3 * estimate.epoch_seconds()
    assert "timed float32" in estimate.compute and "float32 + XLA" in estimate.compute
    choices = list((runs / ".cache" / "compute").glob("*.json"))
    assert len(choices) == 1 and json.loads(choices[0].read_text())["images_per_s"]
    # another number of epochs needs no new timing: the key leaves the epochs out
    assert estimate_module.estimate_path(dataclasses.replace(config, epochs=30)) == estimate_module.estimate_path(
        config
    )
    assert estimate_module.estimate_path(dataclasses.replace(config, image_size=64)) != estimate_module.estimate_path(
        config
    )
