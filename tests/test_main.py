"""Tests of the radiology command line: evaluation split as in training, --save, and its error paths."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from radiology import registry
from radiology.__main__ import main
from radiology.datasets import discover
from radiology.model import save_model
from tests.factories import make_dataset, png_bytes, xray


def _run_with(tiny_run, tiny_model, folder: Path, **metadata) -> Path:
    """A copy of the tiny run whose model carries the given metadata fields."""
    shutil.copytree(tiny_run, folder)
    save_model(tiny_model.model, folder / "model.keras", replace(tiny_model.metadata, **metadata))
    return folder


@pytest.fixture
def data(tmp_path) -> Path:
    """A class-folders dataset of 24 synthetic images."""
    return make_dataset(tmp_path / "data", per_class=8)


@pytest.fixture
def seed7_run(tiny_run, tiny_model, tmp_path, data) -> Path:
    """A run whose model says it was trained on ``data`` split with seed 7 and 50/10/40."""
    fractions = (0.5, 0.1, 0.4)
    config = {**tiny_model.metadata.train_config, "seed": 7, "fractions": list(fractions)}
    fingerprint = discover(data, seed=7, fractions=fractions).fingerprint()
    folder = tmp_path / "runs" / "seed7"
    return _run_with(tiny_run, tiny_model, folder, train_config=config, data_fingerprint=fingerprint)


def _evaluate(capsys, *args) -> tuple[int, dict | None, str]:
    code = main(["evaluate", *args, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out.strip().splitlines()[-1]) if code == 0 else None), err


def test_evaluate_splits_with_the_models_seed_and_fractions(capsys, seed7_run, data):
    """Without --seed, a model trained with seed 7 is tested on seed 7's test split, which matches its training."""
    seed7 = discover(data, seed=7, fractions=(0.5, 0.1, 0.4))
    assert {s.path for s in seed7.splits["test"]} != {s.path for s in discover(data).splits["test"]}
    code, out, _ = _evaluate(capsys, "--model", str(seed7_run), "--data", str(data))
    assert code == 0 and out["n"] == len(seed7.splits["test"]) != len(discover(data).splits["test"])
    assert out["seed"] == 7 and out["fractions"] == [0.5, 0.1, 0.4]
    assert out["split_matches_training"] is True and "only the test split is unseen" in out["training_overlap"]


def test_explicit_seed_overrides_and_is_reported_as_another_split(capsys, seed7_run, data):
    """An explicit --seed wins, and the output says the split differs from the model's training split."""
    code, out, _ = _evaluate(capsys, "--model", str(seed7_run), "--data", str(data), "--seed", "42")
    assert code == 0 and out["seed"] == 42
    assert out["split_matches_training"] is False and "differs" in out["training_overlap"]


def test_evaluating_the_training_split_warns_it_includes_training_images(capsys, seed7_run, data):
    """Evaluating the train split of the model's own dataset is flagged as including training images."""
    main(["evaluate", "--model", str(seed7_run), "--data", str(data), "--split", "train"])
    out = capsys.readouterr().out
    assert "split matches training: yes" in out and "includes images used in training" in out


def test_unknown_training_data_reads_as_null(capsys, tiny_run, tiny_model, tmp_path, data):
    """A model without a data fingerprint gives split_matches_training null and says it cannot know."""
    run = _run_with(tiny_run, tiny_model, tmp_path / "runs" / "nofp", data_fingerprint=None)
    code, out, _ = _evaluate(capsys, "--model", str(run), "--data", str(data))
    assert code == 0 and out["split_matches_training"] is None and "cannot be known" in out["training_overlap"]


def test_save_writes_what_the_evaluation_page_reads(capsys, seed7_run, data):
    """--save stores metrics.json and predictions.csv as an evaluation of its own in the run, naming the split,
    the overlap with training and the time; the run's training-time metrics.json is kept as it was."""
    before = (seed7_run / "metrics.json").read_text()
    code, out, _ = _evaluate(capsys, "--model", str(seed7_run), "--data", str(data), "--split", "val", "--save")
    assert code == 0
    run = registry.load_run(seed7_run)
    assert (seed7_run / "metrics.json").read_text() == before
    (record,) = [e for e in run.evaluations() if e.id != "training"]
    m = record.metrics
    val = discover(data, seed=7, fractions=(0.5, 0.1, 0.4)).splits["val"]
    assert {r["path"] for r in record.predictions()} == {Path(s.path).relative_to(data).as_posix() for s in val}
    assert m["evaluated"] and m["source"] == "evaluate" and m["id"] == record.id
    assert m["n"] == len(val) and m["split"] == "val"
    for key in ("class_names", "ci", "report", "confusion", "curves", "calibration", "split_method", "data_root"):
        assert key in m, key
    assert m["split_matches_training"] is True and "optimistic" in m["training_overlap"]
    assert json.loads((seed7_run / "evaluation_status.json").read_text())["state"] == "succeeded"
    assert not list(seed7_run.glob(".tmp-*"))


def _fails(capsys, argv, code, message):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert any(line.startswith("error: ") and message in line for line in err.splitlines()), err


def test_save_refuses_the_bundled_model_and_bare_files(capsys, seed7_run, data, monkeypatch):
    """--save refuses the bundled model's folder and a model file outside a run folder."""
    model = str(seed7_run / "model.keras")
    _fails(capsys, ["evaluate", "--model", model, "--data", str(data), "--save"], 2, "needs a run folder")
    monkeypatch.setattr(registry, "BUNDLED_DIR", seed7_run)
    _fails(capsys, ["evaluate", "--model", str(seed7_run), "--data", str(data), "--save"], 2, "read-only")
    assert not (seed7_run / "evaluation_status.json").exists()


def test_missing_model_and_bad_dataset_are_error_lines(capsys, tmp_path, seed7_run):
    """A missing model file and a folder without images each give one error line and exit status 2."""
    _fails(capsys, ["evaluate", "--model", str(tmp_path / "nope"), "--data", str(tmp_path)], 2, "model file not found")
    _fails(capsys, ["predict", str(tmp_path / "x.png"), "--model", str(tmp_path / "nope")], 2, "model file not found")
    (tmp_path / "empty").mkdir()
    _fails(capsys, ["evaluate", "--model", str(seed7_run), "--data", str(tmp_path / "empty")], 2, "no class folders")
    _fails(capsys, ["evaluate", "--model", str(seed7_run), "--data", str(tmp_path / "absent")], 2, "not found")


def test_empty_split_is_an_error_line(capsys, tmp_path, seed7_run):
    """A test folder without images gives an error naming the empty split, not a traceback."""
    data = make_dataset(tmp_path / "splits", per_class=3, splits=True)
    shutil.rmtree(data / "test")
    (data / "test").mkdir()
    _fails(capsys, ["evaluate", "--model", str(seed7_run), "--data", str(data)], 2, "the test split of")


def test_class_mismatch_and_unreadable_split_are_error_lines(capsys, tiny_run, tiny_model, tmp_path, data):
    """Labels the model does not know, and a split with no readable image, are errors with their reason."""
    run = _run_with(tiny_run, tiny_model, tmp_path / "runs" / "other", class_names=("covid", "normal", "viral"))
    _fails(capsys, ["evaluate", "--model", str(run), "--data", str(data)], 2, "labels ['pneumonia'] are not among")
    broken = make_dataset(tmp_path / "broken", per_class=3, splits=True)
    for f in (broken / "test").rglob("*.png"):
        f.write_bytes(b"not an image")
    _fails(capsys, ["evaluate", "--model", str(run), "--data", str(broken)], 2, "no readable images to evaluate")


def test_predict_reports_a_bad_image_and_goes_on(capsys, seed7_run, tmp_path):
    """A bad file gets an error line, the good one is still predicted, and the exit status is 1."""
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(png_bytes(xray()))
    bad.write_bytes(b"garbage")
    assert main(["predict", str(good), str(bad), "--model", str(seed7_run)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}: ") and f"{bad}: error: " in err


@pytest.mark.parametrize("error", [KeyError("p_covid"), RuntimeError("boom"), MemoryError()])
def test_evaluate_save_records_any_failure_then_raises_it(tmp_path, monkeypatch, error):
    """An unexpected error of --save is recorded in the evaluation status with its type and message, then
    raised again; the status never stays at running."""
    import radiology.__main__ as cli

    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"state": "succeeded"}))
    (run_dir / "model.keras").write_bytes(b"model")

    def fail(*args):
        raise error

    monkeypatch.setattr(cli, "_evaluate", fail)
    with pytest.raises(type(error)):
        main(["evaluate", "--model", str(run_dir), "--data", str(tmp_path), "--save"])
    status = json.loads((run_dir / "evaluation_status.json").read_text())
    assert status["state"] == "failed" and status["error"] == (f"{type(error).__name__}: {error}".rstrip(": "))


@pytest.fixture(scope="module")
def corner(tmp_path_factory):
    """A run holding the model that reads only one corner, and a dataset of its films with two sources."""
    from tests.factories import corner_dataset, corner_run

    base = tmp_path_factory.mktemp("corner")
    return corner_run(base / "runs" / "corner"), corner_dataset(base / "data", per_class=20)


def test_audit_json_has_faithfulness_and_shortcut_fields(capsys, corner):
    """The audit's JSON holds deletion and insertion AUCs per method and baseline, and the shortcut figures
    (full, borders only, thorax only with accuracy and recall; chance; CAM inside the thorax; source)."""
    run, data = corner
    code = main(["audit", "--model", str(run), "--data", str(data), "--split", "all", "--n", "6", "--steps", "5"])
    assert code == 0 and "From the borders alone this model still gets 100% right" in capsys.readouterr().out
    assert main(["audit", "--model", str(run), "--data", str(data), "--split", "all", "--n", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    f, s = out["faithfulness"], out["shortcut"]
    for name in ("Grad-CAM", "Grad-CAM++", "ScoreCAM", "LayerCAM"):
        assert {"deletion_auc", "insertion_auc", "n", "better_than_random"} <= set(f["methods"][name])
        assert f["methods"][name]["n"] == 6
    assert {"deletion_auc", "insertion_auc", "n"} <= set(f["baselines"]["random"]) and "centre" in f["baselines"]
    for key in ("full", "borders_only", "thorax_only"):
        assert {"accuracy", "recall"} <= set(s[key]) and set(s[key]["recall"]) == {"covid", "normal", "pneumonia"}
    assert s["borders_only"]["accuracy"] == 1.0 and s["thorax_only"]["accuracy"] == pytest.approx(1 / 3)
    assert s["chance"] == pytest.approx(1 / 3) and set(s["cam_inside_thorax"]) == {"covid", "normal", "pneumonia"}
    assert s["source_from_features"]["chance"] == 0.5 and s["n"] == 60
    assert out["split"] == "all" and out["verdict"][0].startswith("From the borders alone")


def test_audit_save_stores_it_in_the_run(capsys, corner):
    """--save writes audits/ID/audit.json in the run and leaves the status succeeded, of kind audit."""
    from radiology.audit import latest_audit

    run, data = corner
    assert main(["audit", "--model", str(run), "--data", str(data), "--n", "3", "--steps", "4", "--save"]) == 0
    status = json.loads((run / "evaluation_status.json").read_text())
    assert status["state"] == "succeeded" and status["kind"] == "audit" and status["audit"] == status["job"]
    stored = latest_audit(run)
    assert stored["id"] == status["job"] and stored["faithfulness"]["n"] == 3 and stored["split"] == "test"
    assert f"saved this audit in {run / 'audits' / status['job'] / 'audit.json'}" in capsys.readouterr().out


def test_audit_refuses_bad_counts_with_an_error_line(capsys, corner):
    """--n 0, --steps 1 and --shortcut-n 0 are one error line each, naming the value."""
    run, data = corner
    base = ["audit", "--model", str(run), "--data", str(data)]
    _fails(capsys, [*base, "--n", "0"], 2, "--n must be 1 or more images, got 0")
    _fails(capsys, [*base, "--steps", "1"], 2, "--steps must be 2 or more, got 1")
    _fails(capsys, [*base, "--shortcut-n", "0"], 2, "--shortcut-n must be 1 or more images, got 0")
