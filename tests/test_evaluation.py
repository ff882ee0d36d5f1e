"""Tests for radiology.evaluation: the evaluation files, the mistakes list and the comparison row."""

import csv
import json

import numpy as np
import pytest

from radiology import metrics
from radiology.evaluation import (
    accuracy_interval,
    by_source_note,
    by_source_rows,
    comparison_table,
    interval_text,
    macro_f1_interval_text,
    measured_on,
    misclassified,
    proportion_interval,
    recall_intervals,
    save_evaluation,
    summary_row,
    write_evaluation,
)

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
    assert row["accuracy 95% CI"].endswith(" (Wilson)")  # 8 images: too few for the bootstrap
    lo, hi = (float(v) for v in row["accuracy 95% CI"].removesuffix(" (Wilson)").split("–"))
    assert 0 <= lo <= 0.75 <= hi <= 1
    assert row["macro F1"] == result["macro_f1"] and row["ECE"] == result["calibration"]["ece"]
    assert row["recall covid"] == pytest.approx(0.5) and row["recall pneumonia"] == pytest.approx(2 / 3)


def test_summary_row_of_a_sparse_result():
    """A result without CI, calibration or report still gives a row, with empty values."""
    row = summary_row("old", {"accuracy": 0.9})
    assert row == {"run": "old", "images": None, "accuracy": 0.9, "accuracy 95% CI": "", "macro F1": None, "ECE": None}


def test_degenerate_bootstrap_gives_way_to_wilson():
    """On 6 images all right, recall and accuracy get a Wilson interval instead of "1.000-1.000"; macro F1 says
    the sample is too small."""
    labels = np.array([0, 0, 1, 1, 2, 2])
    result = metrics.evaluate(labels, np.eye(3)[labels] * 0.9 + 0.1 / 3, NAMES, n_boot=50)
    assert result["ci"]["recall"]["covid"] == [1.0, 1.0]
    (lo, hi), method = recall_intervals(result)["covid"]
    assert method == "Wilson" and hi == 1.0 and lo == pytest.approx(metrics.wilson_interval(2, 2)[0])
    assert lo < 0.5
    (lo, hi), method = accuracy_interval(result)
    assert method == "Wilson" and lo == pytest.approx(metrics.wilson_interval(6, 6)[0])
    assert interval_text([lo, hi], method).endswith("–1.000 (Wilson)")
    assert macro_f1_interval_text(result) == "no 95% CI: 6 images are too few for a bootstrap"


def test_an_informative_bootstrap_is_kept():
    """With enough images and a non-degenerate bootstrap, the stored interval is shown as it is."""
    assert proportion_interval(80, 100, [0.72, 0.87]) == ([0.72, 0.87], "bootstrap")
    assert proportion_interval(100, 100, [1.0, 1.0])[1] == "Wilson"
    assert proportion_interval(0, 0, None) == ([None, None], "none")
    assert interval_text([None, None], "none") == ""


def test_comparison_table_is_text_that_arrow_accepts():
    """The compare table has one text row per metric, formatted, and converts to Arrow without an error."""
    import pandas as pd
    import pyarrow as pa

    labels = np.array([0, 0, 1, 1, 2, 2, 2, 1])
    result = metrics.evaluate(labels, np.eye(3)[[0, 1, 1, 1, 2, 2, 0, 1]] * 0.8 + 0.2 / 3, NAMES, n_boot=50)
    rows = [summary_row("run-1", result), summary_row("old", {"accuracy": 0.9, "n": 10, "ECE": None})]
    rows[1]["ECE"] = 0.0005431903733147947
    table = comparison_table(rows)
    assert [r["metric"] for r in table][:3] == ["images", "accuracy", "accuracy 95% CI"]
    by_metric = {r["metric"]: r for r in table}
    assert by_metric["accuracy"] == {"metric": "accuracy", "run-1": "75.0%", "old": "90.0%"}
    assert by_metric["ECE"]["old"] == "0.001" and by_metric["recall covid"]["old"] == "–"
    assert all(isinstance(v, str) for r in table for v in r.values())
    pa.Table.from_pandas(pd.DataFrame(table))


def test_by_source_note_says_why_accuracy_per_source_is_missing():
    """No sources (no manifest), one source, or an old evaluation each get a reason; two sources get none."""
    assert "no manifest.csv with a source column" in by_source_note({"by_source": {"unknown": {}}})
    assert by_source_note({"by_source": {"a": {}}}).startswith("Every image comes from one source, a")
    assert "predates accuracy per source" in by_source_note({})
    assert by_source_note({"by_source": {"a": {}, "b": {}}}) is None
    rows = by_source_rows({"a": {"n": 4, "accuracy": 0.75, "ci": [0.3, 0.95]}})
    assert rows == [{"source": "a", "images": 4, "accuracy": "75.0%", "95% CI (Wilson)": "0.300–0.950"}]


def test_misclassified_without_a_limit_keeps_every_mistake():
    """limit=None returns every wrong row, so the page can say how many it does not draw."""
    rows = [_row(f"{i}.png", "covid", "normal", [0.1, 0.8 - i / 100, 0.1]) for i in range(20)]
    assert len(misclassified(rows, NAMES)) == 12 and len(misclassified(rows, NAMES, limit=None)) == 20


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


def _run_measured(folder, accuracy: float, fingerprint: str, *, later: dict | None = None):
    """A run folder whose training-time test measured ``accuracy`` on data ``fingerprint``, optionally with a
    later evaluation (``{"id": ..., "metrics": ...}``)."""
    from radiology.registry import load_run

    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"state": "succeeded"}))
    metrics = {"accuracy": accuracy, "n": 120, "split": "test", "data_fingerprint": fingerprint, "data_root": "/d"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if later:
        (folder / "evaluations" / later["id"]).mkdir(parents=True)
        (folder / "evaluations" / later["id"] / "metrics.json").write_text(json.dumps(later["metrics"]))
    return load_run(folder)


def test_a_run_worse_on_the_same_images_is_named_with_both_accuracies(tmp_path):
    """Measured on the same split of the same data, a lower accuracy gives a sentence naming both; a higher one,
    or numbers from other data, give None."""
    from radiology.evaluation import worse_on_the_same_images

    active = _run_measured(tmp_path / "active", 0.756, "abc")
    worse = _run_measured(tmp_path / "worse", 0.5, "abc")
    better = _run_measured(tmp_path / "better", 0.8, "abc")
    elsewhere = _run_measured(tmp_path / "elsewhere", 0.3, "other")
    assert worse_on_the_same_images(worse, active) == (
        "run worse measured 50.0% accuracy on the test split of /d (120 images), below the 75.6% of active "
        "on the same images"
    )
    assert worse_on_the_same_images(better, active) is None
    assert worse_on_the_same_images(elsewhere, active) is None


def test_a_later_evaluation_on_the_active_models_data_counts_too(tmp_path):
    """An imported run evaluated later on the active model's test split is compared on those images."""
    from radiology.evaluation import worse_on_the_same_images

    active = _run_measured(tmp_path / "active", 0.9, "abc")
    later = {
        "id": "20260101-000000-e",
        "metrics": {"accuracy": 0.6, "n": 120, "split": "test", "data_fingerprint": "abc"},
    }
    imported = _run_measured(tmp_path / "imported", 0.95, "its-own", later=later)
    assert "measured 60.0% accuracy on the test split" in worse_on_the_same_images(imported, active)
