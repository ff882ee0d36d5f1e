"""Tests for radiology.imports: model files registered as runs of kind imported, refusals, class order."""

import hashlib
import json

import keras
import numpy as np
import pytest

from radiology import registry
from radiology.__main__ import main
from radiology.errors import ModelLoadError
from radiology.explain import Explainer
from radiology.imports import describe, import_model, import_record, parse_class_order
from radiology.model import ModelMetadata, load_model, predict_images, save_model
from tests.factories import png_bytes, xray


def _small_conv(path, *, layer_name="my_conv", outputs=3):
    """Writes a small image classifier whose only conv layer is not called block5_conv3."""
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name=layer_name)(inp)
    x = keras.layers.GlobalMaxPooling2D()(x)
    out = keras.layers.Dense(outputs, activation="softmax", name="predictions")(x)
    keras.saving.save_model(keras.Model(inp, out), path)
    return path


def _left(runs_dir):
    return sorted(p.name for p in runs_dir.iterdir()) if runs_dir.exists() else []


def test_notebook_h5_becomes_an_imported_run(notebook_h5, tmp_path):
    """The notebook's Keras 2 best_model.h5 imports as a succeeded run that predicts what Keras 2 predicted."""
    runs = tmp_path / "runs"
    run = import_model(notebook_h5, runs_dir=runs)
    assert run.kind == "imported" and run.state == "succeeded" and run.has_model
    assert [r.id for r in registry.list_runs(runs, include_bundled=False)] == [run.id]
    record = import_record(run)
    assert record["source_file"] == "best_model.h5" and record["format"] == "h5"
    assert record["sha256"] == hashlib.sha256(notebook_h5.read_bytes()).hexdigest()
    assert record["class_order"].startswith("assumed") and record["class_names"] == ["covid", "normal", "pneumonia"]
    assert any("no metadata" in w and "best_model.h5" in w for w in record["warnings"])
    assert (run.dir / "source.h5").read_bytes() == notebook_h5.read_bytes()
    loaded = load_model(run.model_path)
    assert loaded.metadata.gradcam_layer == "block5_conv3" and not loaded.warnings
    expected = np.load(f"{notebook_h5}.p.npy")
    assert np.abs(predict_images(loaded, list(np.load(f"{notebook_h5}.x.npy"))) - expected).max() < 1e-4
    registry.set_active(run, runs)
    assert registry.active_run(runs).id == run.id
    assert not list(runs.glob(".import-*"))


def test_class_order_override_changes_the_labels(notebook_h5, tmp_path):
    """The same file imported with another class order names every prediction differently, same probabilities."""
    runs = tmp_path / "runs"
    default = load_model(import_model(notebook_h5, runs_dir=runs).model_path)
    shifted_run = import_model(notebook_h5, runs_dir=runs, class_names=["normal", "pneumonia", "covid"])
    shifted = load_model(shifted_run.model_path)
    assert shifted.metadata.class_names == ("normal", "pneumonia", "covid")
    assert import_record(shifted_run)["class_order"] == "set on import"
    images = [xray(i, size=(200, 200), level=40 + 30 * i) for i in range(4)]
    p_default, p_shifted = predict_images(default, images), predict_images(shifted, images)
    assert np.allclose(p_default, p_shifted, atol=1e-6)
    labels_default = [default.metadata.class_names[i] for i in p_default.argmax(1)]
    labels_shifted = [shifted.metadata.class_names[i] for i in p_shifted.argmax(1)]
    assert all(a != b for a, b in zip(labels_default, labels_shifted))


def test_any_conv_model_gets_grad_cam_on_its_own_last_conv_layer(tmp_path):
    """A .keras model without metadata and without block5_conv3 explains with its own last conv layer."""
    run = import_model(_small_conv(tmp_path / "small.keras"), runs_dir=tmp_path / "runs", name="colleague")
    loaded = load_model(run.model_path)
    assert loaded.metadata.gradcam_layer == "my_conv" and loaded.metadata.name == "colleague"
    assert loaded.metadata.preprocess.input_shape == (32, 32, 3)
    explanation = Explainer(loaded).explain(xray(3, size=(80, 70)))
    assert explanation.cam.shape == (32, 32) and explanation.probs.shape == (3,)


def test_metadata_of_a_file_is_kept(tmp_path):
    """A .keras file saved by this app keeps its class order, training config and name, and says so."""
    meta = ModelMetadata(class_names=("pneumonia", "covid", "normal"), train_config={"epochs": 3}, name="ward")
    small = keras.saving.load_model(_small_conv(tmp_path / "small.keras"))
    path = save_model(small, tmp_path / "ward.keras", meta)
    info = describe(path.read_bytes(), path.name)
    assert info.has_metadata and info.class_names == ("pneumonia", "covid", "normal")
    run = import_model(path, runs_dir=tmp_path / "runs")
    assert run.config == {"epochs": 3} and import_record(run)["class_order"] == "from the file's metadata"
    assert load_model(run.model_path).metadata.class_names == ("pneumonia", "covid", "normal")
    assert load_model(run.model_path).metadata.name == "ward"


def _lambda_model(path):
    inp = keras.Input((8, 8, 3))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    keras.Model(inp, out).save(path)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("lambda", "refusing evil.keras: it contains Lambda layers"),
        ("truncated-keras", "model.keras is truncated or damaged"),
        ("truncated-h5", "small.h5 is truncated or damaged"),
        ("not-a-model", "notes.h5 is not a model file"),
        ("too-large", "over the 1 MB limit"),
        ("wrong-class-count", "expected 2 outputs"),
        ("repeated-class", "names covid more than once"),
    ],
)
def test_refused_files_leave_no_run(case, match, tmp_path):
    """An unsafe, truncated, non-model, too large or mislabelled file is refused with its own message, no run left."""
    runs = tmp_path / "runs"
    kwargs = {}
    if case == "lambda":
        data, name = _lambda_model(tmp_path / "evil.keras"), "evil.keras"
    elif case == "truncated-keras":
        data, name = _small_conv(tmp_path / "model.keras").read_bytes(), "model.keras"
        data = data[: len(data) // 2]
    elif case == "truncated-h5":
        data, name = _small_conv(tmp_path / "small.h5").read_bytes(), "small.h5"
        data = data[: len(data) - 1000]
    elif case == "not-a-model":
        data, name = png_bytes(xray()), "notes.h5"
    elif case == "too-large":
        data, name = b"\x89HDF\r\n\x1a\n" + bytes(2**20), "model.h5"
        kwargs["max_bytes"] = 2**20
    elif case == "wrong-class-count":
        data, name = _small_conv(tmp_path / "small.keras").read_bytes(), "small.keras"
        kwargs["class_names"] = "covid,normal"
    else:
        data, name = _small_conv(tmp_path / "small.keras").read_bytes(), "small.keras"
        kwargs["class_names"] = "covid, normal, COVID"
    with pytest.raises(ModelLoadError, match=match):
        import_model(data, filename=name, runs_dir=runs, **kwargs)
    assert _left(runs) == []


def test_a_failure_while_saving_leaves_no_run(notebook_h5, tmp_path, monkeypatch):
    """A crash after the bytes were written (here: a full disk while saving) removes the staging folder."""
    import radiology.imports as imports

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imports, "save_model", full_disk)
    runs = tmp_path / "runs"
    with pytest.raises(OSError, match="No space left"):
        import_model(notebook_h5, runs_dir=runs)
    assert _left(runs) == []


def test_parse_class_order():
    """Class orders are stripped and lower-cased; empty or repeated names are refused with the input named."""
    assert parse_class_order(" Normal,covid , pneumonia") == ("normal", "covid", "pneumonia")
    with pytest.raises(ModelLoadError, match="'covid,,normal'"):
        parse_class_order("covid,,normal")


def test_cli_import_model(tmp_path, capsys, monkeypatch):
    """python -m radiology import-model registers the file with its class order; a refusal exits 2 with no run."""
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(tmp_path / "runs"))
    path = _small_conv(tmp_path / "colleague.keras")
    assert main(["import-model", str(path), "--name", "mine", "--class-order", "pneumonia,normal,covid"]) == 0
    out = capsys.readouterr()
    (run,) = registry.list_runs(tmp_path / "runs", include_bundled=False)
    assert f"as run {run.id}" in out.out and "pneumonia, normal, covid (set on import)" in out.out
    assert "Grad-CAM uses my_conv" in out.err
    assert json.loads((run.dir / "import.json").read_text())["name"] == "mine"
    bad = tmp_path / "notes.keras"
    bad.write_text("not a model")
    assert main(["import-model", str(bad)]) == 2
    assert "notes.keras is not a model file" in capsys.readouterr().err
    assert len(registry.list_runs(tmp_path / "runs", include_bundled=False)) == 1


def test_server_upload_limit_admits_model_files():
    """The server's upload limit is at least the model-file limit, so the notebook's 60+ MB file can be uploaded."""
    from pathlib import Path

    import tomllib

    from radiology.imports import MAX_UPLOAD_MB

    config = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] >= MAX_UPLOAD_MB


def test_an_imported_checkpoint_is_described_by_its_history(tmp_path):
    """A last.keras saved at epoch 2 of a 9-epoch run brings its history: the run reads '2 of 9', not 9."""
    from radiology.model import save_checkpoint

    small = keras.saving.load_model(_small_conv(tmp_path / "small.keras"))
    history = [{"epoch": e, "loss": 1.0 / e, "val_accuracy": 0.3 * e} for e in (1, 2)]
    meta = ModelMetadata(train_config={"epochs": 9, "weights": "none"})
    path = save_checkpoint(small, tmp_path / "last.keras", meta, {"epoch": 2, "history": history})
    run = import_model(path, runs_dir=tmp_path / "runs")
    assert [row["epoch"] for row in run.history()] == [1, 2]
    assert run.epochs_summary() == "2 of 9" and import_record(run)["checkpoint_epoch"] == 2
    plain = import_model(_small_conv(tmp_path / "plain.keras"), runs_dir=tmp_path / "runs")
    assert plain.history() == [] and import_record(plain)["checkpoint_epoch"] is None
