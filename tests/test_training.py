"""End-to-end tests of training runs: run folder, CLIs, background launch, refusal and cancel."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radiology.errors import TrainingBusyError
from radiology.registry import load_run
from tests.factories import make_dataset, png_bytes, xray
from training.config import TrainConfig
from training.launch import cancel, launch

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _python(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs ``python ARGS...`` in the project root and captures its output."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_run_folder_is_complete(tiny_run):
    """A finished run holds config, status, history, progress, log, checkpoint, metrics and predictions."""
    for name in (
        "config.json",
        "status.json",
        "history.csv",
        "progress.json",
        "log.txt",
        "model.keras",
        "metrics.json",
        "predictions.csv",
        "validation.json",
    ):
        assert (tiny_run / name).is_file(), name
    run = load_run(tiny_run)
    assert run.state == "succeeded" and run.status["pid"] and run.status["ended"]
    assert run.config["epochs"] == 1 and run.config["weights"] == "none"
    assert len(run.history()) == 1 and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(run.history()[0])
    assert run.progress()["batch"] == run.progress()["batches"] > 0
    progress = run.progress()
    assert progress["device"].startswith("TensorFlow on CPU (") and progress["compute"] == "float32"
    assert progress["images_per_s"] > 0 and progress["run_left_s"] == 0
    assert "img/s" in run.log_tail(20) and "training on TensorFlow on CPU" in run.log_tail(20)
    assert not (tiny_run / "last.keras").exists()  # a finished run has nothing to resume
    m = run.metrics
    assert m["n"] == len(run.predictions()) > 0 and 0 <= m["accuracy"] <= 1
    assert set(run.predictions()[0]) >= {"path", "label", "p_covid", "p_normal", "p_pneumonia"}
    validation = json.loads((tiny_run / "validation.json").read_text())
    assert validation["unreadable"] == {
        "covid/broken.png": "not an image: the content is no PNG, JPEG, BMP, TIFF, WebP, GIF or DICOM"
    }
    assert "broken.png" in run.log_tail()


def test_config_is_frozen_and_roundtrips(tmp_path):
    """The config cannot change after creation and survives its JSON file."""
    cfg = TrainConfig(data="x", epochs=2)
    with pytest.raises(AttributeError):
        cfg.epochs = 3
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        TrainConfig(data="x", epochs=0)


def test_predict_and_evaluate_cli(tiny_run, tmp_path):
    """predict prints a label per good file, an error line per bad one and exits 1; evaluate prints metrics."""
    good = tmp_path / "a.png"
    good.write_bytes(png_bytes(xray()))
    bad = tmp_path / "b.png"
    bad.write_bytes(b"nope")
    out = _python("-m", "radiology", "predict", str(good), str(bad), "--model", str(tiny_run), "--json")
    assert out.returncode == 1, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert (
        lines[0]["label"] in ("covid", "normal", "pneumonia")
        and abs(sum(lines[0]["probabilities"].values()) - 1) < 1e-3
    )
    assert "not an image" in lines[1]["error"]
    data = Path(load_run(tiny_run).config["data"])
    ev = _python("-m", "radiology", "evaluate", "--data", str(data), "--model", str(tiny_run), "--split", "all")
    assert ev.returncode == 0, ev.stderr
    assert "accuracy" in ev.stdout and "24 images (all split, 1 unreadable skipped)" in ev.stdout
    assert "broken.png" in ev.stderr


def _wait(predicate, timeout=240, step=0.3):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_launch_refuses_a_second_run_and_cancel_keeps_the_checkpoint(tmp_path):
    """A background run blocks a second launch (app or CLI); cancelling mid-training ends it as cancelled."""
    data = make_dataset(tmp_path / "data", per_class=16)
    config = TrainConfig(
        data=str(data),
        epochs=30,
        batch_size=4,
        weights="none",
        runs_dir=str(tmp_path / "runs"),
        n_boot=10,
        compute="float32",
    )
    run = launch(config)
    try:
        with pytest.raises(TrainingBusyError, match="another training is running"):
            launch(config)
        cli = _python("-m", "training", "--data", str(data), "--weights", "none", "--runs-dir", config.runs_dir)
        assert cli.returncode == 2 and "refused: another training is running" in cli.stderr
        assert _wait(lambda: load_run(run.dir).has_model and load_run(run.dir).progress().get("epoch", 0) >= 2), (
            load_run(run.dir).log_tail()
        )
    finally:
        cancel(load_run(run.dir))
    assert _wait(lambda: load_run(run.dir).state != "running", timeout=120)
    done = load_run(run.dir)
    assert done.state == "cancelled", done.log_tail()
    assert done.has_model and done.metrics is None
    assert "last.keras to resume from" in done.log_tail(), done.log_tail()
    assert (
        len(list((tmp_path / "runs").iterdir())) == 3
    )  # the run, the cache and the lock file: the refusals made no folder


def test_augmentation_placement_follows_the_backend(monkeypatch):
    """augment_on=auto puts augmentation on the host under JAX and in the model otherwise."""
    import keras

    assert TrainConfig(data="x").augment_where == ("host" if keras.backend.backend() == "jax" else "model")
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert TrainConfig(data="x").augment_where == "host"
    assert TrainConfig(data="x", augment_on="model").augment_where == "model"
    assert TrainConfig(data="x", augment=False).augment_where is None
    with pytest.raises(ValueError, match="augment_on must be"):
        TrainConfig(data="x", augment_on="gpu")


def test_run_survives_its_launcher_and_repeats_with_the_same_seed(tmp_path):
    """A run launched by a process that then exits (an app restart) goes on and finishes; it gives the same
    losses and test predictions as a foreground run with the same config and seed."""
    from radiology.registry import new_run_dir, read_history
    from training.trainer import run_training

    data = make_dataset(tmp_path / "data", per_class=10)
    runs = tmp_path / "runs"
    code = (
        "from training.config import TrainConfig; from training.launch import launch; "
        f"print(launch(TrainConfig(data={str(data)!r}, epochs=1, batch_size=8, weights='none', "
        f"runs_dir={str(runs)!r}, n_boot=10)).id)"
    )
    app = _python("-c", code, timeout=120)
    assert app.returncode == 0, app.stderr
    background = runs / app.stdout.strip()
    assert _wait(lambda: load_run(background).state not in ("queued", "running"), timeout=300)
    assert load_run(background).state == "succeeded", load_run(background).log_tail()

    foreground = new_run_dir(runs)
    assert run_training(TrainConfig.load(background / "config.json"), foreground) == "succeeded"
    assert read_history(foreground / "history.csv")[0]["loss"] == read_history(background / "history.csv")[0]["loss"]
    assert (foreground / "predictions.csv").read_text() == (background / "predictions.csv").read_text()


def test_cli_options_are_the_config_fields_with_their_defaults_and_help():
    """python -m training has one option per TrainConfig field, defaulting to the field's default and helped by
    its docstring; the split fractions and lr_patience can be set."""
    from dataclasses import fields

    from training.__main__ import _config, parse_args
    from training.config import defaults, field_help

    args = parse_args(["--data", "x"])
    for name, value in defaults().items():
        assert getattr(args, name) == value, name
    helps = field_help()
    assert set(helps) == {f.name for f in fields(TrainConfig)}
    assert helps["runs_dir"].startswith("where run folders are created") and "``" not in helps["compute"]
    config = _config(parse_args(["--data", "x", "--fractions", "0.6", "0.2", "0.2", "--lr-patience", "5"]))
    assert config.fractions == (0.6, 0.2, 0.2) and config.lr_patience == 5
    assert _config(parse_args(["--data", "x", "--no-augment", "--class-weights"])).augment is False
    assert _config(args) == TrainConfig(data="x")


def test_trainable_layers_take_one_range_from_0_to_19(capsys):
    """The config and the CLI accept 0 to 19 trainable layers (19, the README's from-scratch recipe, included)
    and refuse 20 with the range and its reason in one error line; --help shows the range."""
    from training.__main__ import add_config_options, main
    from training.config import TRAINABLE_LAYERS

    assert TRAINABLE_LAYERS == (0, 19)
    assert TrainConfig(data="x", trainable_layers=19).trainable_layers == 19
    for bad in (-1, 20):
        with pytest.raises(ValueError, match=r"trainable_layers must be 0 to 19: VGG16 has 19 layers counting"):
            TrainConfig(data="x", trainable_layers=bad)
    assert main(["--data", "x", "--trainable-layers", "20"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: trainable_layers must be 0 to 19") and err.count("\n") == 1, err
    import argparse

    parser = argparse.ArgumentParser()
    add_config_options(parser)
    assert "--trainable-layers 0-19" in parser.format_help()


def test_training_from_scratch_with_frozen_layers_warns(tmp_path, monkeypatch, capsys):
    """Weights none with fewer than 18 trainable layers is warned about in plain words, on the console too;
    19 from scratch, or 6 from ImageNet, is not."""
    import training.__main__ as cli

    assert TrainConfig(data="x", weights="none", trainable_layers=19).warnings() == []
    assert TrainConfig(data="x", weights="imagenet", trainable_layers=6).warnings() == []
    (warning,) = TrainConfig(data="x", weights="none", trainable_layers=6).warnings()
    assert "leaves the first 12 of VGG16's 18 layers frozen at their random weights" in warning
    assert warning.endswith("Set trainable layers to 19.")
    data = make_dataset(tmp_path / "data", per_class=3)
    monkeypatch.setattr(cli, "_estimate", lambda args, config: 0)  # the console's part only, not the timing
    assert cli.main(["--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--weights", "none", "--estimate"]) == 0
    assert capsys.readouterr().err == f"warning: {warning}\n"


def test_cli_resume_takes_the_lock_of_the_runs_folder_the_run_is_in(tmp_path, monkeypatch):
    """A command-line resume locks the folder the run is in, as the app's resume does, not the runs_dir its
    config named: a training in that folder blocks it."""
    import training.trainer
    from radiology.registry import TrainingLock
    from training.__main__ import main

    stopped = tmp_path / "moved" / "20260101-000000-aaaa"
    stopped.mkdir(parents=True)
    TrainConfig(data="x", runs_dir=str(tmp_path / "elsewhere")).save(stopped / "config.json")
    (stopped / "status.json").write_text(json.dumps({"state": "cancelled", "pid": 1}))
    (stopped / "last.keras").write_bytes(b"checkpoint")
    monkeypatch.setattr(training.trainer, "run_training", lambda *a, **k: "succeeded")
    holder = TrainingLock(tmp_path / "moved")
    assert holder.acquire()
    try:
        assert main(["--resume", str(stopped)]) == 2
    finally:
        holder.release()
    assert main(["--resume", str(stopped)]) == 0


def test_launch_writes_queued_before_the_child_starts_and_never_undoes_running(tmp_path, monkeypatch):
    """The run reads queued before its process starts; a child that reports running at once stays running."""
    from radiology import jobs
    from radiology.fsutil import read_json
    from radiology.jobs import process_start
    from radiology.registry import update_status

    real_popen = subprocess.Popen
    seen, children = [], []

    def fast_child(args, **kwargs):
        run_dir = Path(args[args.index("--run-dir") + 1])
        seen.append((read_json(run_dir / "status.json") or {}).get("state"))
        child = real_popen(["sleep", "30"])
        children.append(child)
        update_status(run_dir, "running", pid=child.pid, pid_start=process_start(child.pid))
        return child

    monkeypatch.setattr(jobs.subprocess, "Popen", fast_child)
    try:
        run = launch(TrainConfig(data="x", weights="none", runs_dir=str(tmp_path / "runs")))
        assert seen == ["queued"]
        assert run.state == "running" and run.status["pid"] == children[0].pid
        assert run.status["pid_start"] == process_start(children[0].pid) and run.status["queued"]
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_cancel_never_signals_a_process_that_reused_the_pid(tmp_path):
    """Cancelling a run whose pid now names an unrelated process (another start time) leaves that process alone;
    with the run's own start time it is signalled."""
    import signal

    from radiology.jobs import process_start

    other = subprocess.Popen(["sleep", "30"])
    try:
        run_dir = tmp_path / "runs" / "r"
        run_dir.mkdir(parents=True)
        start = process_start(other.pid)
        (run_dir / "status.json").write_text(json.dumps({"state": "running", "pid": other.pid, "pid_start": start + 7}))
        run = load_run(run_dir)
        assert run.state == "failed"
        cancel(run)
        time.sleep(0.5)
        assert other.poll() is None and (run_dir / "cancel").exists()
        (run_dir / "status.json").write_text(json.dumps({"state": "running", "pid": other.pid, "pid_start": start}))
        cancel(load_run(run_dir))
        assert other.wait(timeout=10) == -signal.SIGTERM
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("size", [0, 100, 16, 250])
def test_image_size_must_be_a_multiple_of_32(size):
    """Image sizes that are not multiples of 32, or below 32, are refused naming the value."""
    with pytest.raises(ValueError, match=f"image_size must be a multiple of 32 and at least 32, got {size}"):
        TrainConfig(data="x", image_size=size)


def test_image_size_travels_with_the_model_and_a_run_starts_a_larger_one(tmp_path):
    """A 32 px run's model carries 32 px in its spec, predicts any image at that size, and starts a 64 px
    run through --weights RUN_DIR (progressive resizing)."""
    from radiology.model import load_model, predict_images

    data = make_dataset(tmp_path / "data", per_class=6)
    runs = tmp_path / "runs"
    common = ["--data", str(data), "--epochs", "1", "--batch-size", "8", "--runs-dir", str(runs)]
    common += ["--compute", "float32"]
    first = _python("-m", "training", *common, "--weights", "none", "--image-size", "32")
    assert first.returncode == 0, first.stderr
    (small,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    loaded = load_model(small / "model.keras")
    assert loaded.metadata.preprocess.height == loaded.metadata.preprocess.width == 32
    assert loaded.model.input_shape == (None, 32, 32, 3)
    assert predict_images(loaded, [xray(size=(300, 200))]).shape == (1, 3)
    second = _python("-m", "training", *common, "--weights", str(small), "--image-size", "64")
    assert second.returncode == 0, second.stderr
    (large,) = [p for p in runs.iterdir() if not p.name.startswith(".") and p != small]
    assert load_model(large / "model.keras").model.input_shape == (None, 64, 64, 3)
    assert load_run(large).config["weights"] == str(small)


def test_resume_refuses_a_finished_run(tiny_run, capsys):
    """--resume of a run that succeeded exits 1 and says why; so does the launcher."""
    from radiology.errors import ResumeError
    from training.__main__ import main
    from training.launch import resume

    assert main(["--resume", str(tiny_run)]) == 1
    assert f"cannot resume: run {tiny_run.name} is succeeded" in capsys.readouterr().err
    with pytest.raises(ResumeError, match="is succeeded"):
        resume(load_run(tiny_run))


def test_resume_child_trusts_the_launcher(tmp_path, monkeypatch):
    """The child that launch.resume starts (the page's Resume) trains the run it queued, instead of refusing it."""
    import os

    import training.trainer
    from radiology.jobs import process_start
    from training.__main__ import main

    stopped = tmp_path / "runs" / "20260101-000000-aaaa"
    stopped.mkdir(parents=True)
    TrainConfig(data="x", runs_dir=str(tmp_path / "runs")).save(stopped / "config.json")
    (stopped / "last.keras").write_bytes(b"checkpoint")
    me = os.getpid()  # as launch.resume leaves it: queued under the launcher's live pid
    (stopped / "status.json").write_text(
        json.dumps({"state": "queued", "pid": me, "pid_start": process_start(me), "attempt": 2})
    )
    calls = []
    monkeypatch.setattr(
        training.trainer, "run_training", lambda c, d, resume, **_: calls.append((d, resume)) or "succeeded"
    )
    assert main(["--resume", str(stopped), "--lock-fd", "99"]) == 0
    assert calls == [(stopped, True)]


def test_resume_respects_the_training_lock(tmp_path):
    """Resuming a stopped run is refused while another process holds the one-training lock."""
    from radiology.registry import TrainingLock
    from training.launch import resume

    runs = tmp_path / "runs"
    stopped = runs / "20260101-000000-aaaa"
    stopped.mkdir(parents=True)
    TrainConfig(data="x", runs_dir=str(runs)).save(stopped / "config.json")
    (stopped / "status.json").write_text(json.dumps({"state": "cancelled", "pid": 1}))
    (stopped / "last.keras").write_bytes(b"checkpoint")
    holder = TrainingLock(runs)
    assert holder.acquire()
    try:
        with pytest.raises(TrainingBusyError, match="another training is running"):
            resume(load_run(stopped))
    finally:
        holder.release()
    assert load_run(stopped).status["state"] == "cancelled"  # the refusal touched nothing


@pytest.mark.parametrize(
    ("folder", "match"),
    [("no/such/folder", "error: dataset folder not found: "), ("", "error: no class folders with images in ")],
)
def test_training_cli_reports_a_bad_dataset_in_one_error_line(tmp_path, folder, match):
    """A missing folder, or one without class folders, is one 'error:' line and exit status 1; no run is made."""
    (tmp_path / "data" / "notes").mkdir(parents=True)
    (tmp_path / "data" / "notes" / "readme.txt").write_text("not a class folder")
    data = tmp_path / "data" / folder
    out = _python("-m", "training", "--data", str(data), "--runs-dir", str(tmp_path / "runs"), timeout=120)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and out.stderr.startswith(match), out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_training_cli_reports_a_failed_run_in_one_error_line(tmp_path):
    """A run that fails after it started (every image unreadable) prints one 'error:' line, not the traceback,
    which stays in the run's log; the exit status is 1."""
    for name in ("covid", "normal", "pneumonia"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / name / f"{i}.png").write_bytes(b"not a png")
    out = _python(
        "-m", "training", "--data", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"), "--weights", "none"
    )
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "log.txt" in errors[0], out.stderr
    (log,) = (tmp_path / "runs").glob("*/log.txt")
    assert "Traceback (most recent call last)" in log.read_text()


def _tiny_fit(run_dir: Path, cancel_at: tuple[str, int, int], *, epochs: int = 3):
    """Fits a small dense model with the run's callbacks, writing the cancel file at (phase, epoch, batch).

    Returns:
        the (epoch, batch) of every validation batch run.
    """
    import keras
    import numpy as np

    from radiology.model import ModelMetadata
    from radiology.registry import CANCEL_FILE
    from training.callbacks import FitContext, RunMonitor, make_callbacks

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 3, 16)
    xv, yv = rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 3, 16)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    validated, epoch_now = [], [0]
    phase, at_epoch, at_batch = cancel_at

    class CancelAt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epoch_now[0] = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (phase, epoch_now[0], batch) == ("train", at_epoch, at_batch):
                (run_dir / CANCEL_FILE).touch()

        def on_test_batch_end(self, batch, logs=None):
            validated.append((epoch_now[0], batch))
            if (phase, epoch_now[0], batch) == ("val", at_epoch, at_batch):
                (run_dir / CANCEL_FILE).touch()

    ctx = FitContext(run_dir, ModelMetadata(), 8, 2, 16, 16, "val_accuracy", 2)
    callbacks = [CancelAt(), *make_callbacks(RunMonitor(run_dir, epochs), ctx)]
    model.fit(x, y, batch_size=2, validation_data=(xv, yv), epochs=epochs, callbacks=callbacks, verbose=0)
    return validated


def test_cancel_during_validation_stops_it_and_keeps_the_trained_epoch(tmp_path):
    """A cancel in the second epoch's validation stops it after the current batch; that epoch's training is
    kept for a resume (last.keras at epoch 2) but its partial validation is not recorded nor picks the best."""
    from radiology.model import read_checkpoint_state
    from radiology.registry import read_history

    validated = _tiny_fit(tmp_path, ("val", 1, 2))
    assert validated == [(0, b) for b in range(8)] + [(1, 0), (1, 1), (1, 2)]
    assert read_checkpoint_state(tmp_path / "last.keras")["epoch"] == 2
    rows = read_history(tmp_path / "history.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert "val_accuracy" in rows[0] and "val_accuracy" not in rows[1] and "loss" in rows[1]
    # the counted epochs are in the run's TensorBoard event files too
    assert list((tmp_path / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((tmp_path / "tensorboard" / "validation").glob("events.out.tfevents.*"))


def test_cancel_during_training_skips_validation_and_does_not_count_the_epoch(tmp_path):
    """A cancel mid-epoch stops training after the current batch, validates at most one batch, and the cut
    epoch is not counted: last.keras stays at the epoch before."""
    from radiology.model import read_checkpoint_state
    from radiology.registry import read_history

    validated = _tiny_fit(tmp_path, ("train", 1, 3))
    assert validated == [(0, b) for b in range(8)] + [(1, 0)]
    assert read_checkpoint_state(tmp_path / "last.keras")["epoch"] == 1
    assert [r["epoch"] for r in read_history(tmp_path / "history.csv")] == [1]


def test_launch_and_resume_never_record_the_apps_pid(tmp_path, monkeypatch):
    """Until its child starts, a launched or resumed run records no pid, never the app's own: a Cancel in that
    window cannot send SIGTERM to the app. The child's own pid is recorded once it starts."""
    import signal

    from radiology.fsutil import read_json
    from training.launch import resume

    real_popen = subprocess.Popen
    seen, children, signalled = [], [], []

    def child(args, **kwargs):
        run_dir = Path(args[args.index("--run-dir" if "--run-dir" in args else "--resume") + 1])
        seen.append((read_json(run_dir / "status.json") or {}).get("pid"))
        cancel(load_run(run_dir))  # the user cancels before the child is known
        proc = real_popen(["sleep", "30"])
        children.append(proc)
        return proc

    monkeypatch.setattr(subprocess, "Popen", child)
    previous = signal.signal(signal.SIGTERM, lambda *_: signalled.append(True))
    try:
        run = launch(TrainConfig(data="x", weights="none", runs_dir=str(tmp_path / "runs")))
        assert run.status["pid"] == children[0].pid
        children[0].kill()
        children[0].wait()
        update = {"state": "cancelled", "pid": children[0].pid}
        (run.dir / "status.json").write_text(json.dumps(update))
        (run.dir / "last.keras").write_bytes(b"checkpoint")
        resumed = resume(load_run(run.dir))
        assert resumed.status["pid"] == children[1].pid
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in children:
            proc.kill()
            proc.wait()
    assert seen == [None, None] and not signalled


def test_training_cli_records_any_failure_then_raises_it(tmp_path, monkeypatch):
    """The training CLI records every failure of a launched run or estimate in its status, with its type and
    message: an estimate record without a config (KeyError), an estimate that crashes, an unreadable config."""
    import training.estimate
    from radiology import jobs
    from training.__main__ import main

    record = tmp_path / "estimate.json"
    jobs.update_status(record, "queued", job="e1", restart=True)
    with pytest.raises(KeyError):
        main(["--estimate-file", str(record)])
    status = jobs.read_status(record)
    assert status["state"] == "failed" and status["error"] == "KeyError: 'config'"

    def crash(config, progress=None):
        raise RuntimeError("out of threads")

    monkeypatch.setattr(training.estimate, "estimate_run", crash)
    config = TrainConfig(data="x", runs_dir=str(tmp_path / "runs"))
    jobs.update_status(record, "queued", job="e2", restart=True, config=config.to_dict())
    with pytest.raises(RuntimeError):
        main(["--estimate-file", str(record)])
    assert jobs.read_status(record)["error"] == "RuntimeError: out of threads"

    run_dir = tmp_path / "runs" / "20260101-000000-aaaa"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{not json")
    jobs.update_status(run_dir / "status.json", "queued", restart=True)
    assert main(["--run-dir", str(run_dir), "--lock-fd", "99"]) == 1
    status = load_run(run_dir).status
    assert status["state"] == "failed" and status["error"].startswith("JSONDecodeError: ")


def test_resume_writes_its_state_before_the_child_starts(tmp_path, monkeypatch):
    """When the resumed run's process starts, the run already reads queued, with progress that says it resumes
    after its last epoch, not the cancelled attempt's progress."""
    from radiology.fsutil import read_json, write_csv_atomic
    from training.launch import resume

    stopped = tmp_path / "runs" / "20260101-000000-aaaa"
    stopped.mkdir(parents=True)
    TrainConfig(data="x", epochs=9, weights="none", runs_dir=str(tmp_path / "runs")).save(stopped / "config.json")
    (stopped / "status.json").write_text(json.dumps({"state": "cancelled", "pid": 1}))
    (stopped / "last.keras").write_bytes(b"checkpoint")
    write_csv_atomic(stopped / "history.csv", [{"epoch": 1}, {"epoch": 2}])
    (stopped / "progress.json").write_text(json.dumps({"phase": "training", "epoch": 3, "batch": 17, "batches": 30}))
    (stopped / "cancel").touch()
    seen, children, real_popen = [], [], subprocess.Popen

    def child(args, **kwargs):
        seen.append((load_run(stopped).state, read_json(stopped / "progress.json")))
        children.append(real_popen(["sleep", "30"]))
        return children[-1]

    monkeypatch.setattr(subprocess, "Popen", child)
    try:
        resume(load_run(stopped))
    finally:
        for proc in children:
            proc.kill()
            proc.wait()
    ((state, progress),) = seen
    assert state == "queued" and progress["phase"] == "resuming after epoch 2 of 9"
    assert (progress["epoch"], progress["batch"]) == (0, 0) and not load_run(stopped).cancel_requested
