"""Tests for training/bundle.py: the shipped model's folder, its portability and its card."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from radiology.errors import RadiologyError
from training import bundle


@pytest.fixture(scope="module")
def bundled(tiny_run, tmp_path_factory):
    """The tiny run bundled as if it were the default model, in two phases (the run twice)."""
    out = tmp_path_factory.mktemp("bundle") / "default"
    phases = [bundle.read_phase(tiny_run, "machine A"), bundle.read_phase(tiny_run, "machine B")]
    notes = "We kept this size because the test said so."
    result = bundle.bundle(tiny_run, tiny_run.parent.parent / "data", phases, out, notes=notes, progress=lambda m: None)
    return out, result


def test_bundle_is_a_run_folder_with_a_float16_model(bundled):
    """The bundle reads as a finished run whose float16 model keeps the temperature and gate statistics."""
    from radiology import registry
    from radiology.model import load_model

    out, result = bundled
    run = registry.load_run(out)
    assert run.state == "succeeded" and run.has_model
    meta = load_model(out / "model.keras").metadata
    assert meta.weights_dtype == "float16"
    assert meta.temperature is not None and meta.ood is not None
    assert run.metrics["n"] == result["n"] and run.metrics["split"] == "test"
    rows = run.predictions()
    expected = sum(r["predicted"] == r["predicted_float32"] for r in rows) / len(rows)
    assert run.metrics["float16_agreement"] == expected > 0.9  # the same weights, rounded to float16


def test_bundle_holds_no_machine_path(bundled, tiny_run):
    """No file of the bundle names the folders of the machine that built it; data is named by its folder name."""
    import zipfile

    from radiology.model import METADATA_ENTRY

    out, _ = bundled
    machine = str(tiny_run.parent.parent)
    meta = json.loads(zipfile.ZipFile(out / "model.keras").read(METADATA_ENTRY))
    assert meta["train_config"]["data"] == "data" and meta["train_config"]["runs_dir"] == "runs"
    for name in ("config.json", "metrics.json", "predictions.csv", "history.csv", "card.json", "MODEL_CARD.md"):
        assert machine not in (out / name).read_text(), name
    assert machine not in json.dumps(meta)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert rows and all(not r["path"].startswith("/") for r in rows)


def test_history_has_every_phase(bundled, tiny_run):
    """history.csv holds each phase's epochs with its phase number and image size."""
    out, _ = bundled
    rows = list(csv.DictReader((out / "history.csv").open()))
    one = len(list(csv.DictReader((tiny_run / "history.csv").open())))
    assert [r["phase"] for r in rows] == ["1"] * one + ["2"] * one
    size = json.loads((tiny_run / "config.json").read_text())["image_size"]
    assert all(r["image_size"] == str(size) for r in rows)


def test_card_reports_measurements_and_shortfall(bundled, tiny_run):
    """The card gives the test accuracy with its CI, each target's shortfall, the commands and the limits."""
    out, result = bundled
    card = (out / "MODEL_CARD.md").read_text()
    size = json.loads((tiny_run / "config.json").read_text())["image_size"]
    assert f"accuracy {result['accuracy']:.3f} (95% CI {result['ci']['accuracy'][0]:.3f}" in card
    assert f"python -m training --data data --image-size {size} --weights none" in card
    assert "machine A" in card and "machine B" in card
    assert "We kept this size" in card
    assert "Research demo, not for diagnosis" in card
    summary = json.loads((out / "card.json").read_text())
    missed = [t for t in summary["targets"] if not t["met"]]
    assert missed, "a 1-epoch model on synthetic data cannot reach the targets"
    assert f"short by {abs(missed[0]['value'] - missed[0]['goal']):.3f}" in card
    assert "What would close the gap" in card


def test_bundle_refuses_an_uncalibrated_model(tiny_run, tmp_path):
    """A run without a temperature is refused, with the command that fits one."""
    from radiology.model import load_model, update_metadata

    shutil.copy(tiny_run / "model.keras", tmp_path / "model.keras")
    update_metadata(load_model(tmp_path / "model.keras"), tmp_path / "model.keras", temperature=None)
    with pytest.raises(RadiologyError, match="radiology calibrate"):
        bundle.bundle(tmp_path, tiny_run.parent.parent / "data", [], tmp_path / "out", progress=lambda m: None)


def test_portable_config_names_previous_runs_by_folder():
    """Weights of the machine that trained become runs/NAME; imagenet and none stay as they are."""
    cfg = {"data": "/home/me/cxr3", "runs_dir": "/home/me/runs", "weights": "/home/me/runs/20261201-1"}
    assert bundle.portable_config(cfg, "cxr3") == {
        "data": "cxr3",
        "runs_dir": "runs",
        "cache_dir": "",
        "weights": "runs/20261201-1",
    }
    assert bundle.portable_config({"weights": "none"}, "cxr3")["weights"] == "none"
    assert bundle.portable_config({"weights": "/x/warm/model.keras"}, "cxr3")["weights"] == "runs/warm/model.keras"


def test_cli_wants_one_machine_per_phase(capsys):
    """Two phases and one machine is refused by the command line."""
    with pytest.raises(SystemExit):
        bundle.main(["--model", "m", "--data", "d", "--phase", "a", "--phase", "b", "--machine", "x"])
    assert "one --machine per --phase" in capsys.readouterr().err


def test_card_only_rewrites_the_card_from_the_bundle(bundled, tiny_run, tmp_path):
    """--card-only rewrites MODEL_CARD.md with new notes from the bundle's own files, without evaluating."""
    out, _ = bundled
    notes = tmp_path / "notes.md"
    notes.write_text("Rewritten without a dataset.")
    args = ["--card-only", "--model", "-", "--data", "/no/such/data", "--phase", str(tiny_run), "--machine", "m"]
    assert bundle.main([*args, "--notes", str(notes), "--out", str(out)]) == 0
    assert "Rewritten without a dataset." in (out / "MODEL_CARD.md").read_text()


def test_card_only_adds_the_trust_audit(bundled, tiny_run, tmp_path):
    """--audit stores the trust audit in card.json without machine paths, and the card reports its verdict, the
    faithfulness table, the shortcuts and the cost; a later --card-only without --audit keeps it."""
    import numpy as np

    from radiology import audit
    from tests.factories import corner_loaded, corner_xray

    out, _ = bundled
    loaded = corner_loaded()
    pixels = np.stack([corner_xray(k, k * 10 + i) for k in range(3) for i in range(2)])
    labels = np.repeat([0, 1, 2], 2)
    found = {
        "class_names": list(loaded.metadata.class_names),
        "faithfulness": audit.faithfulness(loaded, pixels, steps=4),
        "shortcut": audit.shortcut(loaded, pixels, labels),
        "split": "test",
        "data_root": str(tmp_path / "machine" / "cxr3"),
        "model": str(tmp_path / "machine" / "run"),
        "seconds": 600.0,
    }
    (tmp_path / "audit.json").write_text(json.dumps(found))
    args = ["--card-only", "--model", "-", "--data", "-", "--phase", str(tiny_run), "--machine", "m", "--out", str(out)]
    assert bundle.main([*args, "--audit", str(tmp_path / "audit.json")]) == 0
    assert bundle.main(args) == 0
    trust = json.loads((out / "card.json").read_text())["trust"]
    assert trust["data_root"] == "cxr3" and "model" not in trust and str(tmp_path) not in json.dumps(trust)
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Trust" in card and "Measured with `python -m radiology audit` on the test split of cxr3" in card
    assert "- From the borders alone this model still gets 100% right" in card
    assert "| map | deletion AUC (95% CI) | insertion AUC (95% CI) |" in card and "| random map (baseline) |" in card
    assert "| borders only | 100.0%" in card and "the whole audit 10 min" in card


def test_card_only_keeps_the_gate_report(bundled, tiny_run, tmp_path):
    """--gate-report stores the gate's measured rates in card.json without the model's path; a later --card-only
    without it still reports them."""
    out, _ = bundled
    report = {
        "model": str(tmp_path / "machine" / "run" / "model.keras"),
        "test_passing": 0.991,
        "auroc_gate_score": 0.97,
        "auroc_feature_score": 0.69,
        "groups": {"colour photographs": {"n": 13, "flagged": 1.0}},
    }
    (tmp_path / "gate.json").write_text(json.dumps(report))
    args = ["--card-only", "--model", "-", "--data", "-", "--phase", str(tiny_run), "--machine", "m", "--out", str(out)]
    assert bundle.main([*args, "--gate-report", str(tmp_path / "gate.json")]) == 0
    assert bundle.main(args) == 0
    assert str(tmp_path) not in (out / "card.json").read_text()
    card = (out / "MODEL_CARD.md").read_text()
    assert "it passes 99.1% of the test split" in card and "| colour photographs | 13 | 100.0% |" in card


def test_a_file_that_is_no_audit_is_refused(bundled, tiny_run, tmp_path, capsys):
    """--audit with a JSON that is not an audit is one error line naming what it holds."""
    out, _ = bundled
    (tmp_path / "x.json").write_text(json.dumps({"accuracy": 0.9}))
    args = ["--card-only", "--model", "-", "--data", "-", "--phase", str(tiny_run), "--machine", "m", "--out", str(out)]
    assert bundle.main([*args, "--audit", str(tmp_path / "x.json")]) == 2
    assert "expected a trust audit with faithfulness and shortcut objects" in capsys.readouterr().err
