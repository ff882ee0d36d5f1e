"""Tests for radiology.charts: figures built from metric data."""

import numpy as np

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
