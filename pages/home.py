"""Home: the active model, the research-demo notice, and what to do next."""

import streamlit as st

import ui
from radiology import CLASS_NAMES, calibration
from radiology.errors import RadiologyError
from radiology.evaluation import by_source_rows, measured_on
from radiology.imports import import_record

ui.page_header("RadiologyAI")
st.markdown(
    f"Chest X-ray classification into **{' / '.join(CLASS_NAMES)}** with a VGG16 transfer model, "
    "explained with Grad-CAM. Built for students, researchers and clinicians to explore how such a model "
    "behaves — **research demo, not for diagnosis**."
)

st.header("Active model")
ui.import_messages("home_import")
try:
    run, model = ui.active_model()
except RadiologyError as exc:
    run, model = None, None
    st.error(str(exc))

if run is None:
    st.info(
        "No model yet. The quickest way to a working **Classify** page: import a model you already have, "
        "such as the notebook's `best_model.h5`, below. Or train one:\n\n"
        f"1. Put a dataset folder into the data root `{ui.data_root()}` "
        "(class folders `covid/`, `normal/`, `pneumonia/`, or `train/val/test` folders holding them).\n"
        "2. Open **Training**, pick the folder and launch a run (or run `python -m training --data DIR`).\n"
        "3. When it finishes, **Promote** it: it becomes the model that **Classify** uses."
    )
    st.subheader("Import a model")
    ui.import_model_panel("home_import", promote_default=True)
elif model is not None:
    loaded = model.loaded
    meta = loaded.metadata
    cfg = meta.train_config
    st.subheader(f"Model {run.id}")
    record = import_record(run)
    cols = st.columns(3)
    if record:
        cols[0].metric("Imported", record["imported"][:16].replace("T", " "))
    else:
        cols[0].metric("Trained", (meta.created or "unknown")[:16].replace("T", " "))
    shown = run.evaluations()[:1]  # the training-time test when there is one, else the newest evaluation
    metrics = shown[0].metrics if shown else {}
    acc = metrics.get("accuracy")
    where = measured_on(metrics) if shown else "no evaluation yet"
    cols[1].metric("Accuracy", f"{acc:.1%}" if acc is not None else "not evaluated", help=f"on {where}")
    if acc is not None:
        cols[1].caption("95% CI " + " – ".join(f"{v:.1%}" for v in metrics["ci"]["accuracy"]))
    cols[2].metric("Images evaluated", metrics.get("n", "—"), help=where)
    if shown:
        st.caption(f"Measured on {where}.")
    card = run.card
    if card:
        st.markdown(f"**Data:** {card['data']}.  \n**Recipe:** {card['recipe']}.")
    else:
        trained = (
            f"Trained on `{cfg.get('data', 'unknown data')}` "
            f"(data fingerprint `{meta.data_fingerprint or 'unknown'}`); "
            f"epochs: {run.epochs_summary() or '?'}; initial weights: `{cfg.get('weights', '?')}`. "
            if cfg or not record  # a file imported without its training config: nothing to say
            else ""
        )
        st.markdown(f"{trained}Probabilities {calibration.describe(meta.temperature)}.")
    st.markdown(
        f"Classes in output order: {', '.join(meta.class_names)}; "
        f"input {meta.preprocess.height}×{meta.preprocess.width}."
    )
    if len(metrics.get("by_source") or {}) > 1:
        st.markdown("**Accuracy per source collection**")
        st.table(by_source_rows(metrics["by_source"]))
    if card:
        st.markdown("**Limits**\n" + "\n".join(f"- {line}" for line in card["limits"]))
    if record:
        st.markdown(
            f"Imported from `{record['source_file']}` (SHA-256 `{record['sha256'][:16]}…`); class order "
            f"{record['class_order']}; Grad-CAM on `{meta.gradcam_layer or 'no layer'}`. Evaluate it on a dataset "
            "to see its accuracy."
        )
    st.caption(f"Inference precision: {model.precision}")
    for warning in loaded.warnings:
        st.warning(warning)
    card_file = run.dir / "MODEL_CARD.md"
    if card_file.is_file():
        with st.expander("The whole model card", expanded=False):
            st.markdown(card_file.read_text())

if run is not None:
    with st.expander("Import another model (.keras or Keras 2 .h5)"):
        ui.import_model_panel("home_import")

st.header("Pages")
st.markdown(
    "- **Classify**: upload PNG, JPEG or DICOM images; get class probabilities and a Grad-CAM overlay.\n"
    "- **Evaluation**: metrics with confidence intervals, confusion matrices, ROC/PR, calibration, errors.\n"
    "- **Training**: retrain the model on a dataset folder and watch it live; promote the result.\n"
    "- **Dataset**: class balance, sample images, image sizes and the leakage report of a dataset."
)
