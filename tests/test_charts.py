"""Tests for radiology.charts: figures built from metric data."""

import numpy as np
import pytest

from radiology import charts, metrics

NAMES = ("covid", "normal", "pneumonia")


def test_figures_from_metrics():
    """Every chart builds from evaluate()'s output with the expected traces."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60)
    m = metrics.evaluate(labels, probs, NAMES, n_boot=20)
    cm = charts.confusion_heatmap(m["confusion"], normalized=True)
    assert cm.data[0].type == "heatmap" and list(cm.data[0].x) == list(NAMES)
    assert len(charts.roc_figure(m["curves"]).data) == 4  # three classes and chance
    assert len(charts.pr_figure(m["curves"]).data) == 3
    assert "ECE" in charts.reliability_figure(m["calibration"]).layout.title.text
    assert len(charts.probability_bars([0.2, 0.7, 0.1], NAMES).data[0].x) == 3


def test_probability_axis_is_fixed_at_0_to_100_percent():
    """The probability bars keep a 0-100% axis that cannot autoscale, and mark the confidence threshold."""
    fig = charts.probability_bars([0.499, 0.3, 0.201], NAMES, threshold=0.5)
    assert tuple(fig.layout.xaxis.range) == (0, 1) and fig.layout.xaxis.autorange is False
    assert fig.layout.xaxis.fixedrange and fig.layout.xaxis.tickformat == ".0%"
    assert tuple(fig.layout.xaxis.tickvals)[-1] == 1
    assert fig.layout.shapes[0].x0 == 0.5 and fig.layout.annotations[0].text == "confident from 50%"
    assert not charts.probability_bars([0.2, 0.7, 0.1], NAMES).layout.shapes


def test_history_balance_and_sizes():
    """History, class balance and size charts build from plain data."""
    hist = [
        {"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4},
        {"epoch": 2, "loss": 0.8, "accuracy": 0.6, "val_loss": 1.0, "val_accuracy": 0.5},
    ]
    assert len(charts.history_figure(hist).data) == 4
    counts = {"train": {"covid": 3, "normal": 2, "pneumonia": 1}, "val": {"covid": 1, "normal": 1, "pneumonia": 1}}
    assert len(charts.class_balance_figure(counts).data) == 3
    assert len(charts.size_histogram([10, 20], [30, 40]).data) == 2


def test_cam_colour_bar_runs_from_least_to_most():
    """The CAM colour bar uses the given colour scale on 0..1 and labels its ends."""
    scale = [[0.0, "rgb(0,0,127)"], [1.0, "rgb(127,0,0)"]]
    fig = charts.cam_colour_bar(scale, label="relevance to covid")
    assert fig.data[0].zmin == 0 and fig.data[0].zmax == 1
    assert [list(c) for c in fig.data[0].colorscale] == scale
    assert list(fig.layout.xaxis.ticktext) == ["0 (least)", "0.5", "1 (most)"]
    assert fig.layout.xaxis.title.text == "relevance to covid"


def test_pr_curves_are_steps_without_markers():
    """PR curves are drawn as lines in steps (no column of dots at the end), ROC curves as lines."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 40)
    curves = metrics.roc_pr_curves(labels, rng.dirichlet(np.ones(3), 40), NAMES)
    pr = charts.pr_figure(curves)
    assert all(t.mode == "lines" and t.line.shape == "hv" for t in pr.data)
    assert all(t.mode == "lines" for t in charts.roc_figure(curves).data[:-1])


def _faithfulness() -> dict:
    curve = {"deletion_curve": [1.0, 0.5, 0.2], "insertion_curve": [0.1, 0.6, 1.0], "deletion_auc": 0.55}
    curve["insertion_auc"] = 0.57
    return {
        "steps": 2,
        "methods": {
            "Grad-CAM": {**curve, "better_than_random": True},
            "ScoreCAM": {**curve, "better_than_random": False},
        },
        "baselines": {"random": curve, "centre": curve},
    }


def test_faithfulness_curves_show_every_map_and_mark_the_unfaithful():
    """Deletion and insertion charts draw one line per method and baseline, name AUCs, and mark a method no
    better than random; another kind is refused."""
    fig = charts.faithfulness_curves(_faithfulness(), kind="insertion")
    assert len(fig.data) == 4 and list(fig.data[0].x) == [0, 0.5, 1] and list(fig.data[0].y) == [0.1, 0.6, 1.0]
    assert fig.data[0].name == "Grad-CAM (AUC 0.570)" and "no better than random" in fig.data[1].name
    assert fig.data[2].line.dash == "dash" and "higher is better" in fig.layout.title.text
    assert "lower is better" in charts.faithfulness_curves(_faithfulness()).layout.title.text
    with pytest.raises(ValueError, match="got 'roar'"):
        charts.faithfulness_curves(_faithfulness(), kind="roar")


def test_shortcut_bars_compare_inputs_with_chance():
    """The shortcut chart has one bar group per input and a chance line."""
    r = {"accuracy": 0.7, "recall": {"covid": 0.9, "normal": None}}
    fig = charts.shortcut_bars({"full": r, "borders_only": r, "thorax_only": r, "chance": 1 / 3})
    assert [t.name for t in fig.data] == ["full image", "borders only", "thorax only"]
    assert list(fig.data[0].text) == ["70%", "90%", "–"] and fig.layout.shapes[0].y0 == pytest.approx(1 / 3)
