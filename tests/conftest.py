"""Shared fixtures: a tiny dataset and a tiny trained run of the real architecture."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tests.factories import make_dataset  # noqa: E402

SHARED_DATA = Path(
    os.environ.get("RADIOLOGY_CXR3", Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cxr3")
)


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    """A class-folders dataset of 30 synthetic images."""
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished 1-epoch training run of the real architecture (weights none) on synthetic data."""
    from radiology.registry import new_run_dir
    from training.config import TrainConfig
    from training.trainer import run_training

    base = tmp_path_factory.mktemp("tiny")
    data = make_dataset(base / "data", per_class=8)
    (data / "covid" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    config = TrainConfig(
        data=str(data),
        epochs=1,
        batch_size=8,
        weights="none",
        runs_dir=str(base / "runs"),
        n_boot=100,
        compute="float32",  # the timed choice is tested on its own; the fixture stays quick
    )
    run_dir = new_run_dir(config.runs_dir)
    state = run_training(config, run_dir)
    assert state == "succeeded", (run_dir / "log.txt").read_text()
    return run_dir


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    """The loaded model of ``tiny_run``."""
    from radiology.model import load_model

    return load_model(tiny_run / "model.keras")


@pytest.fixture(scope="session")
def notebook_h5(tmp_path_factory) -> Path:
    """A genuine Keras 2 ``best_model.h5`` in the notebook's layout (VGG16 nested), with test inputs beside it."""
    pytest.importorskip("tf_keras")
    from tests.factories import keras2_notebook_h5

    return keras2_notebook_h5(tmp_path_factory.mktemp("notebook") / "best_model.h5")
