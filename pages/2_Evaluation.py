"""Evaluation: metrics, confusion matrices, ROC/PR, calibration and mistakes of a run's test split."""

from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from radiology import charts, registry
from radiology.errors import RadiologyError
from radiology.evaluation import misclassified, summary_row
from radiology.ood import UNAVAILABLE

ui.page_header("Evaluation")
runs = [r for r in registry.list_runs(ui.runs_dir()) if r.metrics]
if not runs:
    st.info("No evaluated run yet. A training run evaluates its model on its test split when it finishes.")
    st.stop()
active = registry.active_run(ui.runs_dir())
ids = [r.id for r in runs]
default = ids.index(active.id) if active is not None and active.id in ids else 0
labels = {r.id: f"{r.id}{' (active)' if active is not None and r.id == active.id else ''}" for r in runs}
chosen = st.selectbox("Run", ids, index=default, format_func=labels.get)
run = runs[ids.index(chosen)]
m = run.metrics
names = m["class_names"]

st.header("Summary")
ci = m["ci"]["accuracy"]
cols = st.columns(4)
cols[0].metric("Accuracy", f"{m['accuracy']:.1%}", help="95% bootstrap confidence interval below")
cols[0].caption(f"95% CI {ci[0]:.1%} – {ci[1]:.1%}")
cols[1].metric("Macro F1", f"{m['macro_f1']:.3f}")
cols[1].caption("95% CI " + " – ".join(f"{v:.3f}" for v in m["ci"]["macro_f1"]))
cols[2].metric("ECE", f"{m['calibration']['ece']:.3f}", help="expected calibration error, 10 bins")
cols[3].metric("Test images", m["n"])
st.caption(f"Split: {m.get('split_method', m.get('split', 'test'))}. Data: `{m.get('data_root', 'unknown')}`.")

st.subheader("Out-of-distribution gate")
gate = m.get("ood")
if gate is None:
    st.caption(
        "This run was evaluated before the gate existed. Fit it with "
        f"`python -m radiology fit-ood --model {run.dir} --data DIR`, which also adds its share here."
    )
else:
    col, note = st.columns([1, 3])
    col.metric(
        "Test images flagged",
        f"{gate['flagged_share']:.1%}",
        help="flagged as not looking like a chest X-ray; the threshold lets 99% of validation X-rays pass",
    )
    reasons = ", ".join(f"{k}: {v}" for k, v in gate["by_reason"].items()) or "none"
    note.caption(
        f"{gate['flagged']} of {gate['n']} test images flagged (by reason: {reasons}). "
        + ("" if gate["available"] else f"The {UNAVAILABLE}: only size and texture were checked. ")
        + "Colour cannot be checked here: the evaluation reads grayscale images from the decode cache."
    )

st.header("Classification report")
report = pd.DataFrame({k: v for k, v in m["report"].items() if isinstance(v, dict)}).T
report["recall 95% CI"] = [
    " – ".join(f"{v:.3f}" for v in m["ci"]["recall"][i]) if i in m["ci"]["recall"] else "" for i in report.index
]
st.dataframe(report, column_config={"support": st.column_config.NumberColumn(format="%d")})
if m.get("by_source") and len(m["by_source"]) > 1:
    st.subheader("Accuracy per source")
    st.dataframe(pd.DataFrame(m["by_source"]).T)

st.header("Confusion matrix")
c1, c2 = st.columns(2)
c1.plotly_chart(charts.confusion_heatmap(m["confusion"]), key="cm")
c2.plotly_chart(charts.confusion_heatmap(m["confusion"], normalized=True), key="cm-norm")

st.header("ROC and precision-recall")
c1, c2 = st.columns(2)
c1.plotly_chart(charts.roc_figure(m["curves"]), key="roc")
c2.plotly_chart(charts.pr_figure(m["curves"]), key="pr")

st.header("Calibration")
st.plotly_chart(charts.reliability_figure(m["calibration"]), key="rel")

st.header("Misclassified test images")
wrong = misclassified(run.predictions(), names)
root = Path(m.get("data_root", ""))
if not wrong:
    st.success("No misclassified test images.")
elif not root.is_dir():
    st.info(
        f"The dataset `{root}` is not on this machine, so the images cannot be shown. "
        f"{len(wrong)} mistakes are listed in the run's predictions."
    )
    st.dataframe(pd.DataFrame(wrong)[["path", "label", "predicted", "confidence"]], hide_index=True)
else:
    show_cam = st.toggle("Show Grad-CAM of each mistake", value=True)
    grid = st.columns(4)
    for i, row in enumerate(wrong):
        cell = grid[i % 4]
        try:
            image = ui.file_view(run, root / row["path"], with_cam=show_cam and run.has_model)
        except RadiologyError as exc:
            cell.warning(f"{row['path']}: {exc}")
            continue
        cell.image(
            image,
            caption=f"{row['path']} · true {row['label']}, predicted {row['predicted']} ({row['confidence']:.0%})",
        )

st.header("Compare runs")
others = [i for i in ids if i != chosen]
if not others:
    st.caption("Only one evaluated run so far.")
else:
    other_id = st.selectbox("Compare with", others, format_func=labels.get)
    other = runs[ids.index(other_id)]
    st.dataframe(pd.DataFrame([summary_row(run.id, m), summary_row(other.id, other.metrics)]).set_index("run").T)
    c1, c2 = st.columns(2)
    for col, r in ((c1, run), (c2, other)):
        col.markdown(f"**{r.id}**")
        col.plotly_chart(charts.confusion_heatmap(r.metrics["confusion"], normalized=True), key=f"cmp-{r.id}")
        col.plotly_chart(charts.reliability_figure(r.metrics["calibration"]), key=f"cmp-rel-{r.id}")
