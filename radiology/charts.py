"""Plotly figures built from the plain data of metrics.py, history and predictions."""

from __future__ import annotations

import plotly.graph_objects as go

COLORS = {"covid": "#d62728", "normal": "#2ca02c", "pneumonia": "#1f77b4"}


def probability_bars(probs, class_names, *, threshold: float | None = None) -> go.Figure:
    """Horizontal bars of class probabilities for one image, on a fixed 0-100% axis.

    Args:
        probs: the C class probabilities.
        class_names: the C class names.
        threshold: where a confident prediction starts (``confidence.MIN_TOP_PROBABILITY``), drawn as a dotted
            line; None draws none.
    """
    fig = go.Figure(
        go.Bar(
            x=[float(p) for p in probs],
            y=list(class_names),
            orientation="h",
            marker_color=[COLORS.get(c, "#7f7f7f") for c in class_names],
            text=[f"{p:.1%}" for p in probs],
            textposition="auto",
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    # A fixed axis: an autoscaled one makes 49.9% look like a full bar.
    fig.update_xaxes(range=[0, 1], autorange=False, fixedrange=True, tickvals=[0, 0.25, 0.5, 0.75, 1], tickformat=".0%")
    fig.update_yaxes(fixedrange=True)
    if threshold is not None:
        fig.add_vline(
            x=threshold,
            line={"dash": "dot", "color": "gray"},
            annotation_text=f"confident from {threshold:.0%}",
            annotation_position="top",
        )
    fig.update_layout(height=200, margin=dict(l=10, r=30, t=30 if threshold is not None else 10, b=10))
    return fig


def cam_colour_bar(colorscale: list[list], *, label: str) -> go.Figure:
    """A horizontal colour bar for a CAM overlay: low to high relevance in the overlay's own colours.

    Args:
        colorscale: the overlay's colour map, ``[[value, colour], ...]`` from 0 to 1 (``explain.jet_colorscale``).
        label: what the colours measure, shown under the bar.
    """
    steps = [i / 100 for i in range(101)]
    fig = go.Figure(
        go.Heatmap(
            z=[steps],
            x=steps,
            colorscale=colorscale,
            zmin=0,
            zmax=1,
            showscale=False,
            hovertemplate="%{x:.0%} of this image's highest<extra></extra>",
        )
    )
    fig.update_xaxes(tickvals=[0, 0.5, 1], ticktext=["0 (least)", "0.5", "1 (most)"], title_text=label, fixedrange=True)
    fig.update_yaxes(visible=False, fixedrange=True)
    fig.update_layout(height=90, margin=dict(l=10, r=10, t=5, b=10))
    return fig


def confusion_heatmap(confusion: dict, *, normalized: bool = False) -> go.Figure:
    """Heatmap of a confusion matrix from ``metrics.confusion``; rows are true classes."""
    z = confusion["normalized" if normalized else "matrix"]
    labels = confusion["labels"]
    text = [[f"{v:.0%}" if normalized else str(v) for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, text=text, texttemplate="%{text}", colorscale="Blues"))
    fig.update_layout(
        title="Confusion matrix" + (" (row-normalised)" if normalized else " (counts)"),
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis={"autorange": "reversed"},
        height=380,
    )
    return fig


def roc_figure(curves: dict) -> go.Figure:
    """One-vs-rest ROC curves with AUC in the legend, from ``metrics.roc_pr_curves``."""
    fig = go.Figure()
    for name, c in curves.items():
        if c["roc"]["auc"] is not None:
            fig.add_scatter(
                x=c["roc"]["fpr"],
                y=c["roc"]["tpr"],
                name=f"{name} (AUC {c['roc']['auc']:.3f})",
                mode="lines",
                line_color=COLORS.get(name),
            )
    fig.add_scatter(x=[0, 1], y=[0, 1], name="chance", line={"dash": "dot", "color": "gray"})
    fig.update_layout(
        title="ROC (one-vs-rest)", xaxis_title="false positive rate", yaxis_title="true positive rate", height=380
    )
    return fig


def pr_figure(curves: dict) -> go.Figure:
    """One-vs-rest precision-recall curves with average precision in the legend.

    Drawn as steps without markers, as scikit-learn's ``PrecisionRecallDisplay`` does: the curve's points at one
    recall differ only in precision, and as dots they stood in a vertical column at its end.
    """
    fig = go.Figure()
    for name, c in curves.items():
        if c["pr"]["auc"] is not None:
            fig.add_scatter(
                x=c["pr"]["recall"],
                y=c["pr"]["precision"],
                name=f"{name} (AP {c['pr']['auc']:.3f})",
                mode="lines",
                line={"color": COLORS.get(name), "shape": "hv"},
            )
    fig.update_layout(
        title="Precision-recall (one-vs-rest)",
        xaxis_title="recall",
        yaxis_title="precision",
        xaxis={"range": [0, 1.02]},
        yaxis={"range": [0, 1.02]},
        height=380,
    )
    return fig


def reliability_figure(calibration: dict) -> go.Figure:
    """Reliability diagram: accuracy against confidence per bin, with the ECE in the title."""
    bins = [b for b in calibration["bins"] if b["count"]]
    fig = go.Figure()
    fig.add_bar(
        x=[(b["lower"] + b["upper"]) / 2 for b in bins],
        y=[b["accuracy"] for b in bins],
        width=0.09,
        name="accuracy",
        customdata=[b["count"] for b in bins],
        hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} images",
    )
    fig.add_scatter(x=[0, 1], y=[0, 1], name="perfect calibration", line={"dash": "dot", "color": "gray"})
    fig.update_layout(
        title=f"Reliability (ECE {calibration['ece']:.3f})",
        xaxis_title="confidence",
        yaxis_title="accuracy",
        xaxis={"range": [0, 1]},
        yaxis={"range": [0, 1]},
        height=380,
    )
    return fig


def history_figure(history: list[dict]) -> go.Figure:
    """Loss and accuracy per epoch, training and validation, from a run's history rows."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    epochs = [int(r["epoch"]) for r in history]
    for col, metric in ((1, "loss"), (2, "accuracy")):
        for prefix, dash in (("", "solid"), ("val_", "dash")):
            key = prefix + metric
            ys = [r.get(key) for r in history]
            if any(y not in (None, "") for y in ys):
                fig.add_scatter(x=epochs, y=ys, name=key, line={"dash": dash}, row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=320, margin=dict(t=40))
    return fig


def class_balance_figure(counts: dict[str, dict[str, int]]) -> go.Figure:
    """Grouped bars of images per class for each split."""
    fig = go.Figure()
    classes = sorted({c for split in counts.values() for c in split})
    for c in classes:
        fig.add_bar(x=list(counts), y=[counts[s].get(c, 0) for s in counts], name=c, marker_color=COLORS.get(c))
    fig.update_layout(barmode="group", title="Images per class and split", height=340)
    return fig


def size_histogram(heights, widths) -> go.Figure:
    """Histogram of original image heights and widths."""
    fig = go.Figure()
    fig.add_histogram(x=list(widths), name="width", opacity=0.6)
    fig.add_histogram(x=list(heights), name="height", opacity=0.6)
    fig.update_layout(barmode="overlay", title="Original image sizes (pixels)", height=320)
    return fig


METHOD_COLORS = {"Grad-CAM": "#1f77b4", "Grad-CAM++": "#ff7f0e", "ScoreCAM": "#2ca02c", "LayerCAM": "#9467bd"}
BASELINE_STYLE = {"random": "dash", "centre": "dot"}


def faithfulness_curves(faithfulness: dict, *, kind: str = "deletion") -> go.Figure:
    """The mean deletion or insertion curve of each CAM method and baseline, from ``audit.faithfulness``.

    Args:
        faithfulness: the audit's ``faithfulness`` object.
        kind: ``deletion`` (lower is better) or ``insertion`` (higher is better).

    Raises:
        ValueError: another kind.
    """
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    fig = go.Figure()
    steps = faithfulness["steps"]
    x = [i / steps for i in range(steps + 1)]
    for name, r in faithfulness["methods"].items():
        flag = "" if r.get("better_than_random", True) else ", no better than random"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=r[f"{kind}_curve"],
                mode="lines",
                name=f"{name} (AUC {r[f'{kind}_auc']:.3f}{flag})",
                line={"color": METHOD_COLORS.get(name), "width": 2},
            )
        )
    for name, r in faithfulness["baselines"].items():
        fig.add_trace(
            go.Scatter(
                x=x,
                y=r[f"{kind}_curve"],
                mode="lines",
                name=f"{name} map (AUC {r[f'{kind}_auc']:.3f})",
                line={"color": "gray", "dash": BASELINE_STYLE.get(name, "dashdot")},
            )
        )
    verb = "removed (blurred), most salient first" if kind == "deletion" else "restored, most salient first"
    better = "lower is better" if kind == "deletion" else "higher is better"
    fig.update_layout(
        title=f"{kind.capitalize()} ({better})",
        xaxis_title=f"share of pixels {verb}",
        yaxis_title="probability of the predicted class",
        yaxis={"range": [0, 1]},
        xaxis={"tickformat": ".0%"},
        height=380,
        legend={"font": {"size": 11}},
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return fig


def shortcut_bars(shortcut: dict) -> go.Figure:
    """Accuracy and recall per class on the full image, the borders only and the thorax only, with chance.

    Args:
        shortcut: the audit's ``shortcut`` object.
    """
    inputs = {"full": "full image", "borders_only": "borders only", "thorax_only": "thorax only"}
    names = list(shortcut["full"]["recall"])
    fig = go.Figure()
    for key, label in inputs.items():
        r = shortcut[key]
        values = [r["accuracy"], *[r["recall"][c] for c in names]]
        fig.add_trace(
            go.Bar(
                x=["accuracy", *[f"recall {c}" for c in names]],
                y=values,
                name=label,
                text=["–" if v is None else f"{v:.0%}" for v in values],
                textposition="outside",
            )
        )
    fig.add_hline(
        y=shortcut["chance"], line={"dash": "dot", "color": "gray"}, annotation_text=f"chance {shortcut['chance']:.0%}"
    )
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%", fixedrange=True)
    fig.update_layout(barmode="group", height=360, title="What the model gets right from each part of the film")
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10))
    return fig
