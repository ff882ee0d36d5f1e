"""Tests for radiology.settings: one runs folder and one data root for the app, the CLIs and training."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from radiology import registry, settings
from tests.factories import make_dataset, png_bytes, xray

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_in_the_project_whatever_the_working_directory(tmp_path, monkeypatch):
    """Without the variables both folders are in the project folder; the app, registry and training use them."""
    import ui
    from training.__main__ import parse_args
    from training.config import TrainConfig

    monkeypatch.delenv("RADIOLOGY_RUNS_DIR", raising=False)
    monkeypatch.delenv("RADIOLOGY_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert settings.PROJECT_ROOT == ROOT
    assert settings.runs_dir() == ROOT / "runs" and settings.data_root() == ROOT / "data"
    assert ui.runs_dir is settings.runs_dir and ui.data_root is settings.data_root
    assert TrainConfig(data="x").runs_dir == str(ROOT / "runs")
    assert TrainConfig(data="x", runs_dir=parse_args(["--data", "x"]).runs_dir).runs_dir == str(ROOT / "runs")
    assert registry.TrainingLock().path == ROOT / "runs" / registry.LOCK_FILE


def test_variables_override_and_relative_paths_resolve(tmp_path, monkeypatch):
    """The variables set the folders, resolved; a config keeps the folders it was given, made absolute."""
    from training.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", "elsewhere/../r")
    monkeypatch.setenv("RADIOLOGY_DATA_ROOT", "d")
    assert settings.runs_dir() == tmp_path / "r" and settings.data_root() == tmp_path / "d"
    config = TrainConfig(data="x", runs_dir="mine", cache_dir="c")
    assert (config.runs_dir, config.cache_dir) == (str(tmp_path / "mine"), str(tmp_path / "c"))
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_command_lines_from_another_folder_share_the_apps_lock_and_active_model(tmp_path, tiny_run, tiny_model):
    """In a copy of the project, the training CLI started from another folder is refused while the app's lock
    is held, and predict from another folder uses the model promoted in the app's runs folder."""
    from radiology.images import decode_image
    from radiology.model import predict_images

    project = tmp_path / "project"
    for name in ("radiology", "training", "ui"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADIOLOGY_")}
    env.update(PYTHONPATH=str(project), TF_CPP_MIN_LOG_LEVEL="3", RADIOLOGY_BUNDLED_DIR=str(tmp_path / "no-bundle"))

    def python(*args):
        return subprocess.run(
            [sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
        )

    app = python("-c", "import ui; print(ui.runs_dir())")
    assert app.returncode == 0, app.stderr
    app_runs = Path(app.stdout.strip())
    assert app_runs == project / "runs"

    lock = registry.TrainingLock(app_runs)
    assert lock.acquire()
    try:
        # a real dataset: the CLI checks the data before it takes the lock
        cli = python("-m", "training", "--data", str(make_dataset(tmp_path / "data", per_class=2)), "--weights", "none")
    finally:
        lock.release()
    assert cli.returncode == 2 and "refused: another training is running" in cli.stderr, cli.stderr
    assert not (elsewhere / "runs").exists()

    shutil.copytree(tiny_run, app_runs / "20260101-000000-good")
    registry.set_active(registry.load_run(app_runs / "20260101-000000-good"), app_runs)
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(xray(3)))
    out = python("-m", "radiology", "predict", str(image), "--json")
    assert out.returncode == 0, out.stderr
    probs = json.loads(out.stdout)["probabilities"]
    expected = predict_images(tiny_model, [decode_image(str(image))])[0]
    assert np.allclose([probs[c] for c in tiny_model.metadata.class_names], expected, atol=1e-4)


def test_cache_bound_defaults_to_4_gib_and_refuses_nonsense(monkeypatch):
    """RADIOLOGY_CACHE_MAX_BYTES sets the decode cache's bound; unset it is 4 GiB; a bad value is named."""
    import pytest

    monkeypatch.delenv("RADIOLOGY_CACHE_MAX_BYTES", raising=False)
    assert settings.cache_max_bytes() == 4 * 2**30
    monkeypatch.setenv("RADIOLOGY_CACHE_MAX_BYTES", "1000")
    assert settings.cache_max_bytes() == 1000
    monkeypatch.setenv("RADIOLOGY_CACHE_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="must be a positive number of bytes, got 'lots'"):
        settings.cache_max_bytes()
