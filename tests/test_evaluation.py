"""Tests for radiology.evaluation: the evaluation files, the mistakes list and the comparison row."""

import csv
import json

import numpy as np
import pytest

from radiology import metrics
from radiology.evaluation import measured_on, misclassified, save_evaluation, summary_row, write_evaluation

NAMES = ["covid", "normal", "pneumonia"]


def _row(path, label, predicted, probs):
    return {
        "path": path,
        "label": label,
        "predicted": predicted,
        "source": "",
        **{f"p_{c}": p for c, p in zip(NAMES, probs)},
    }


def test_write_evaluation_writes_both_files_and_no_temporary(tmp_path):
    """metrics.json and predictions.csv round-trip, and no temporary file is left behind."""
    result = {"accuracy": 0.5, "n": 2, "class_names": NAMES}
    rows = [
        _row("covid/a.png", "covid", "covid", [0.7, 0.2, 0.1]),
        _row("normal/b.png", "normal", "pneumonia", [0.1, 0.3, 0.6]),
    ]
    write_evaluation(tmp_path, result, rows)
    assert json.loads((tmp_path / "metrics.json").read_text()) == result
    with open(tmp_path / "predictions.csv", newline="") as fh:
        back = list(csv.DictReader(fh))
    assert [r["path"] for r in back] == ["covid/a.png", "normal/b.png"]
    assert float(back[1]["p_pneumonia"]) == pytest.approx(0.6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "predictions.csv"]


def test_write_evaluation_replaces_earlier_files(tmp_path):
    """A second evaluation replaces the first one's files entirely."""
    write_evaluation(tmp_path, {"n": 3}, [_row(f"x{i}.png", "covid", "covid", [1, 0, 0]) for i in range(3)])
    write_evaluation(tmp_path, {"n": 1}, [_row("y.png", "normal", "normal", [0, 1, 0])])
    with open(tmp_path / "predictions.csv", newline="") as fh:
        assert [r["path"] for r in csv.DictReader(fh)] == ["y.png"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"n": 1}


def test_write_evaluation_into_a_missing_folder_raises(tmp_path):
    """A run folder that does not exist is an error, and nothing is written elsewhere."""
    with pytest.raises(OSError):
        write_evaluation(tmp_path / "gone", {"n": 1}, [_row("y.png", "normal", "normal", [0, 1, 0])])
    assert not list(tmp_path.iterdir())


def test_misclassified_keeps_wrong_rows_most_confident_first():
    """Only wrong predictions are kept, ordered by the probability given to the wrong class, up to the limit."""
    rows = [
        _row("right.png", "covid", "covid", ["0.9", "0.05", "0.05"]),
        _row("mild.png", "covid", "normal", ["0.3", "0.4", "0.3"]),
        _row("sure.png", "normal", "pneumonia", ["0.0", "0.05", "0.95"]),
        _row("mid.png", "pneumonia", "covid", ["0.6", "0.2", "0.2"]),
    ]
    wrong = misclassified(rows, NAMES)
    assert [r["path"] for r in wrong] == ["sure.png", "mid.png", "mild.png"]
    assert wrong[0]["confidence"] == pytest.approx(0.95)
    assert [r["path"] for r in misclassified(rows, NAMES, limit=1)] == ["sure.png"]


def test_misclassified_ignores_predictions_outside_the_classes():
    """A row predicting a class the model does not have is skipped instead of raising a KeyError."""
    rows = [_row("a.png", "covid", "normal", [0.2, 0.8, 0.0]), _row("b.png", "covid", "other", [0, 0, 0])]
    assert [r["path"] for r in misclassified(rows, NAMES)] == ["a.png"]
    assert misclassified([], NAMES) == []


def test_summary_row_from_a_real_evaluation():
    """The comparison row carries accuracy, its CI as text, macro F1, ECE and the recall of every class."""
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 1])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 2, 0, 1]] * 0.8 + 0.2 / 3
    result = metrics.evaluate(labels, probs, NAMES, n_boot=50)
    row = summary_row("run-1", result)
    assert row["run"] == "run-1" and row["images"] == 8
    assert row["accuracy"] == pytest.approx(0.75)
    lo, hi = (float(v) for v in row["accuracy 95% CI"].split("–"))
    assert 0 <= lo <= 0.75 <= hi <= 1
    assert row["macro F1"] == result["macro_f1"] and row["ECE"] == result["calibration"]["ece"]
    assert row["recall covid"] == pytest.approx(0.5) and row["recall pneumonia"] == pytest.approx(2 / 3)


def test_summary_row_of_a_sparse_result():
    """A result without CI, calibration or report still gives a row, with empty values."""
    row = summary_row("old", {"accuracy": 0.9})
    assert row == {"run": "old", "images": None, "accuracy": 0.9, "accuracy 95% CI": "", "macro F1": None, "ECE": None}


def test_a_saved_evaluation_is_a_record_of_its_own_beside_the_training_time_test(tmp_path):
    """save_evaluation writes RUN/evaluations/ID/ and leaves metrics.json alone; the run lists both, training first."""
    from radiology.registry import load_run

    (tmp_path / "status.json").write_text(json.dumps({"state": "succeeded"}))
    write_evaluation(
        tmp_path,
        {"n": 3, "split": "test", "source": "training", "data_root": "/d"},
        [_row("a", "covid", "covid", (1, 0, 0))],
    )
    later = {"n": 1, "split": "val", "data_root": "/e", "evaluated": "2026-12-02T13:05:00+00:00", "source": "evaluate"}
    folder = save_evaluation(tmp_path, "20261202-130500-abcd", later, [_row("b", "normal", "covid", (0.6, 0.4, 0))])
    assert folder == tmp_path / "evaluations" / "20261202-130500-abcd"
    assert json.loads((tmp_path / "metrics.json").read_text())["n"] == 3
    records = load_run(tmp_path).evaluations()
    assert [r.id for r in records] == ["training", "20261202-130500-abcd"]
    assert records[1].metrics["id"] == records[1].id and records[1].predictions()[0]["path"] == "b"


def test_measured_on_names_the_split_data_time_and_overlap():
    """Every label says which split of which data, how many images, and when or that it was at training time."""
    assert measured_on({"n": 9, "split": "test", "data_root": "/d", "source": "training"}) == (
        "test split of /d at training time, 9 images"
    )
    later = {
        "n": 4,
        "split": "val",
        "data_root": "/e",
        "evaluated": "2026-12-02T13:05:00+00:00",
        "split_matches_training": False,
        "training_overlap": "this dataset differs from the one the model was trained on",
    }
    assert measured_on(later) == (
        "validation split of /e, 4 images, 2026-12-02 13:05 UTC; "
        "this dataset differs from the one the model was trained on"
    )
    assert "at training time" in measured_on(
        {"n": 1, "split": "test", "data_root": "/d"}
    )  # before records had a source
