"""Evaluation: evaluate or audit any run on a dataset in the background; its trust, metrics, curves and mistakes."""

import pandas as pd
import streamlit as st

import ui
from radiology import audit, calibration, charts, evaluation_job, registry
from radiology.errors import RadiologyError
from radiology.evaluation import SPLIT_NAMES as SPLITS
from radiology.evaluation import (
    accuracy_interval,
    by_source_note,
    by_source_rows,
    comparison_table,
    interval_text,
    macro_f1_interval_text,
    measured_on,
    misclassified,
    recall_intervals,
    summary_row,
)
from radiology.model import read_metadata

GALLERY = 12  # mistakes drawn at first, each a Grad-CAM; the rest are listed and can be drawn on request

ui.page_header("Evaluation")
runs = [r for r in registry.list_runs(ui.runs_dir()) if r.has_evaluations() or (r.state == "succeeded" and r.has_model)]
if not runs:
    st.info("No run with a model yet. Train one on the Training page, then evaluate it here.")
    st.stop()
active = registry.active_run(ui.runs_dir())
ids = [r.id for r in runs]
default = ids.index(active.id) if active is not None and active.id in ids else 0
labels = {r.id: f"{r.id}{' (active)' if active is not None and r.id == active.id else ''}" for r in runs}
chosen = st.selectbox("Run", ids, index=default, format_func=labels.get)
run = runs[ids.index(chosen)]

st.header("Evaluate on a dataset")
folder, split = None, "test"
if run.id == registry.BUNDLED_ID:
    st.caption("The bundled model's folder is read-only: promote or train a run to evaluate it on other data.")
elif run.has_model:
    folder = ui.dataset_picker("evaluate")
    split = st.selectbox("Images", list(SPLITS), format_func=SPLITS.get, key="evaluate_split")
    if folder is not None:
        try:
            meta = read_metadata(run.model_path)  # without building the model or taking a model-cache slot
            matches, note = ui.dataset_overlap(
                str(folder), meta.train_config, meta.data_fingerprint, split, ui.dataset_key(folder)
            )
            (st.info if matches is True and split == "test" else st.warning)(note[0].upper() + note[1:] + ".")
        except RadiologyError as exc:
            st.error(str(exc))
            folder = None
    if st.button("Evaluate", type="primary", disabled=folder is None or evaluation_job.is_running(run.dir)):
        try:
            evaluation_job.start(run, folder, split=split, cache_dir=ui.runs_dir() / ".cache")
        except RadiologyError as exc:
            st.error(str(exc))


@st.fragment(run_every=1.0)
def live_evaluation(run: registry.Run):
    """Re-reads the run's evaluation status every second; reruns the page when a job finishes."""
    status = evaluation_job.read_status(run.dir)
    key = f"_evaluating_{run.id}"
    if status is None:
        return
    what = {"audit": "trust audit", "fit-ood": "gate fit"}.get(status.get("kind"), "evaluation")
    if status["state"] in evaluation_job.LIVE_STATES:
        st.session_state[key] = True
        done, total = status.get("done", 0), status.get("total", 0)
        text = f"{status.get('phase', status['state'])}" + (f": {done} of {total}" if total else "")
        doing = {"trust audit": "Auditing", "gate fit": "Fitting the out-of-distribution gate"}.get(what, "Evaluating")
        st.progress(float(status.get("progress") or 0.0), text=f"{doing} on {status.get('data')}: {text}")
        return
    if st.session_state.pop(key, False):
        st.rerun()  # show the new results below
    if status["state"] == "failed":
        st.error(f"The last {what} failed: {status.get('error')}")
    elif what == "gate fit":  # a gate fit on the Classify page, which evaluates the test split too
        st.caption(f"Last job: fitted the out-of-distribution gate on {status.get('data')}")
    else:
        where = f"{SPLITS.get(status.get('split'), status.get('split'))} of {status.get('data')}"
        st.caption(f"Last {what}: {where}")


live_evaluation(run)

st.header("Trust")
st.caption(
    "How far to believe this model's explanations, and whether it reads the lungs or the hospital: the trust audit "
    "(`python -m radiology audit`)."
)
if folder is not None:
    n_audit = st.number_input(
        "Images for the faithfulness curves",
        min_value=3,
        max_value=3000,
        value=audit.N_IMAGES,
        step=3,
        help=f"a sample stratified by class; each image costs {audit.inputs_per_image()} model inputs for its "
        f"curves and {audit.SCORECAM_INPUTS} for its ScoreCAM, and the shortcuts predict the whole split 4 times more",
    )
    if st.button(
        f"Audit on the {SPLITS[split]} of {folder.name}",
        disabled=evaluation_job.is_running(run.dir),
        help="runs in the background, as an evaluation does; one at a time per run",
    ):
        try:
            evaluation_job.start(
                run, folder, split=split, cache_dir=ui.runs_dir() / ".cache", kind="audit", n=int(n_audit)
            )
        except RadiologyError as exc:
            st.error(str(exc))
trust = audit.latest_audit(run.dir, card=run.card)
if trust is None:
    st.info(
        "This model has not been audited yet"
        + (": pick a dataset above and audit it." if run.id != registry.BUNDLED_ID else ".")
    )
else:
    ui.show_audit(trust)

records = run.evaluations()
if not records:
    st.info("This run has no evaluation yet: pick a dataset above and evaluate it.")
    st.stop()

st.header("Evaluations of this run")
st.dataframe(
    pd.DataFrame(
        [
            {
                "evaluation": e.id,
                "measured on": measured_on(e.metrics),
                "accuracy": e.metrics.get("accuracy"),
                "macro F1": e.metrics.get("macro_f1"),
                "ECE": (e.metrics.get("calibration") or {}).get("ece"),
            }
            for e in records
        ]
    ),
    hide_index=True,
)
by_id = {e.id: e for e in records}
newest = 1 if len(records) > 1 and records[0].id == "training" else 0  # the latest evaluation first
record = by_id[
    st.selectbox("Show", list(by_id), index=newest, format_func=lambda i: f"{i}: {measured_on(by_id[i].metrics)}")
]
m = record.metrics
names = m["class_names"]
where = measured_on(m)
split_name = SPLITS.get(m.get("split"), m.get("split") or "unknown split")

st.header("Summary")
st.caption(f"Measured on {where} · {m.get('split_method', '')}")
ci, ci_method = accuracy_interval(m)
cols = st.columns(4)
cols[0].metric(
    "Accuracy",
    f"{m['accuracy']:.1%}",
    help=f"on {where}; 95% confidence interval below: a bootstrap, or the Wilson interval on fewer than 30 images "
    "or where the bootstrap collapses to one value",
)
cols[0].caption(f"95% CI {ci[0]:.1%} – {ci[1]:.1%}" + (" (Wilson)" if ci_method == "Wilson" else ""))
cols[1].metric("Macro F1", f"{m['macro_f1']:.3f}", help=f"on {where}")
cols[1].caption(macro_f1_interval_text(m))
cols[2].metric("ECE", f"{m['calibration']['ece']:.3f}", help=f"expected calibration error, 10 bins, on {where}")
cols[3].metric("Images", m["n"], help=split_name)
if m.get("training_overlap"):
    safe = m.get("split_matches_training") is True and m.get("split") == "test"
    (st.info if safe else st.warning)(m["training_overlap"][0].upper() + m["training_overlap"][1:] + ".")

st.subheader("Out-of-distribution gate")
gate = m.get("ood")
if gate is None:
    st.caption(
        "This run was evaluated before the gate existed. Fit it with **Fit the gate** on the Classify page (for "
        f"the active model) or `python -m radiology fit-ood --model {run.dir} --data DIR`; either adds its share here."
    )
else:
    col, note = st.columns([1, 3])
    col.metric(
        f"Images of the {split_name} flagged",
        f"{gate['flagged_share']:.1%}",
        help="flagged as not looking like a chest X-ray; the threshold lets 99% of validation X-rays pass",
    )
    reasons = ", ".join(f"{k}: {v}" for k, v in gate["by_reason"].items()) or "none"
    note.caption(
        f"{gate['flagged']} of {gate['n']} images of the {split_name} flagged (by reason: {reasons}). "
        + ("" if gate["available"] else "The model had no gate statistics: only size and texture were checked. ")
        + "Colour cannot be checked here: the evaluation reads grayscale images from the decode cache."
    )

st.header("Classification report")
report = pd.DataFrame({k: v for k, v in m["report"].items() if isinstance(v, dict)}).T
recalls = recall_intervals(m)
report["recall 95% CI"] = [interval_text(*recalls[i]) if i in recalls else "" for i in report.index]
st.dataframe(
    report,
    column_config={
        "support": st.column_config.NumberColumn(format="%d"),
        "recall 95% CI": st.column_config.TextColumn(
            help="bootstrap; (Wilson) where the class has fewer than 30 images or the bootstrap collapses"
        ),
    },
)
st.subheader("Accuracy per source")
why_not = by_source_note(m)
if why_not:
    st.caption(why_not)
else:
    st.dataframe(pd.DataFrame(by_source_rows(m["by_source"])), hide_index=True)

st.header("Confusion matrix")
c1, c2 = st.columns(2)
c1.plotly_chart(charts.confusion_heatmap(m["confusion"]), key="cm")
c2.plotly_chart(charts.confusion_heatmap(m["confusion"], normalized=True), key="cm-norm")

st.header("ROC and precision-recall")
c1, c2 = st.columns(2)
c1.plotly_chart(charts.roc_figure(m["curves"]), key="roc")
c2.plotly_chart(charts.pr_figure(m["curves"]), key="pr")

st.header("Calibration")
temperature = m.get("temperature")
if temperature:
    st.markdown(f"Probabilities {calibration.describe(temperature['temperature'] if temperature['fitted'] else None)}.")
    st.dataframe(calibration.report_rows(temperature), hide_index=True)
else:
    st.caption("This evaluation predates calibration: the probabilities below are the softmax as trained.")
st.plotly_chart(charts.reliability_figure(m["calibration"]), key="rel")

st.header("Misclassified images")
wrong = misclassified(record.predictions(), names, limit=None)
root = refusal = None
if wrong:
    try:
        root = ui.run_data_root(m)
    except RadiologyError as exc:
        refusal = exc
if not wrong:
    st.success("No misclassified images.")
elif root is None or not root.is_dir():
    if refusal is not None:
        st.warning(f"The images are not shown: {refusal}. Set `RADIOLOGY_DATA_ROOT` to a folder holding it.")
    elif root is not None:
        st.info(f"The dataset `{root}` is not on this machine, so the images cannot be shown.")
    st.caption(f"{len(wrong)} mistakes are listed in the run's predictions.")
    st.dataframe(pd.DataFrame(wrong)[["path", "label", "predicted", "confidence"]], hide_index=True)
else:
    shown = len(wrong)
    if len(wrong) > GALLERY:
        shown = st.slider(
            f"Mistakes drawn, most confident first, of all {len(wrong)}",
            GALLERY,
            len(wrong),
            GALLERY,
            help="each one draws its Grad-CAM; every mistake is listed below",
        )
    st.caption(
        f"Showing the {shown} most confident of {len(wrong)} mistakes."
        if shown < len(wrong)
        else f"All {len(wrong)} mistakes, most confident first."
    )
    show_cam = st.toggle("Show Grad-CAM of each mistake", value=True)
    grid = st.columns(4)
    for i, row in enumerate(wrong[:shown]):
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
    if shown < len(wrong):
        with st.expander(f"All {len(wrong)} mistakes"):
            st.dataframe(pd.DataFrame(wrong)[["path", "label", "predicted", "confidence"]], hide_index=True)

st.header("Compare runs")
evaluated = [r for r in runs if r.metrics]
others = [r.id for r in evaluated if r.id != chosen]
if not others:
    st.caption("No other run has a training-time test evaluation to compare with.")
else:
    other_id = st.selectbox("Compare with (its training-time test)", others, format_func=labels.get)
    other = next(r for r in evaluated if r.id == other_id)
    pair = ((run.id, m), (other.id, other.metrics))
    st.dataframe(pd.DataFrame(comparison_table([summary_row(i, metrics) for i, metrics in pair])), hide_index=True)
    c1, c2 = st.columns(2)
    for col, (i, metrics) in zip((c1, c2), pair):
        col.markdown(f"**{i}**: {measured_on(metrics)}")
        col.plotly_chart(charts.confusion_heatmap(metrics["confusion"], normalized=True), key=f"cmp-{i}")
        col.plotly_chart(charts.reliability_figure(metrics["calibration"]), key=f"cmp-rel-{i}")
