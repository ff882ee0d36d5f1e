"""Classify: upload X-rays, get class probabilities and Grad-CAM overlays."""

import pandas as pd
import streamlit as st

import ui
from radiology import audit, calibration, charts, confidence
from radiology.errors import RadiologyError
from radiology.explain import METHOD_HELP, METHODS, finer_layers, grid_note, jet_colorscale, layer_grid, overlay

IMAGE_UPLOAD_MB = 50  # a large uncompressed DICOM; the server allows more for model files

ui.page_header("Classify")
try:
    run, model = ui.active_model()
except RadiologyError as exc:
    st.error(str(exc))
    st.stop()
if run is None:
    st.info(
        "No model is active yet. Import one on the **Home** page (the notebook's `best_model.h5` works), "
        "or train one on the **Training** page and promote it."
    )
    st.stop()
loaded = model.loaded
names = loaded.metadata.class_names
st.caption(
    f"Model: **{run.id}** · Grad-CAM layer `{loaded.metadata.gradcam_layer}` · "
    f"probabilities {calibration.describe(loaded.metadata.temperature)}"
)
ui.gate_panel(run, loaded)

files = st.file_uploader(
    "X-ray images: PNG, JPEG or DICOM (files without an extension are fine)",
    accept_multiple_files=True,
    max_upload_size=IMAGE_UPLOAD_MB,
    help="Files stay in memory and are never written to disk.",
)
left, middle, right = st.columns(3)
trust = audit.latest_audit(run.dir, card=run.card)
ordered, unfaithful = audit.ranked_methods(trust, METHODS)
method = left.selectbox(
    "Explanation method",
    ordered,
    format_func=lambda m: m + (" (no better than random)" if m in unfaithful else ""),
    help="\n\n".join(f"**{m}**: {METHOD_HELP[m]}" for m in METHODS),
)
left.caption(METHOD_HELP[method])
left.caption(audit.method_order_note(trust))
layers = [loaded.metadata.gradcam_layer, *finer_layers(loaded)]
layer = middle.selectbox(
    "Layer",
    layers,
    format_func=lambda name: (
        f"{name}, {'×'.join(map(str, layer_grid(loaded, name)))} cells"
        + (" (the model's)" if name == layers[0] else "")
    ),
    disabled=len(layers) == 1,
    help="An earlier layer has more cells, so a finer map, but its features are less specific to the class: "
    "it may light up edges and texture rather than the finding.",
)
middle.caption(grid_note(layer_grid(loaded, layer), loaded.metadata.preprocess.input_shape))
alpha = right.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05)

if not files:
    st.stop()

results, errors = [], []
progress = st.progress(0.0, text="Classifying…")
for i, f in enumerate(files):
    try:
        chosen = None if layer == layers[0] else layer
        gray, ex, seconds = ui.explain_cached(run, f.getvalue(), method, layer=chosen, upload_id=f.file_id)
        results.append((f, gray, ex, seconds))
    except RadiologyError as exc:
        errors.append((f.name, str(exc)))
    progress.progress((i + 1) / len(files), text=f"Classified {i + 1} of {len(files)}")
progress.empty()

for name, message in errors:
    st.error(f"**{name}**: {message}")

if len(results) > 1:
    st.subheader("Results")
    flagged = sum(ex.ood.flag for _, _, ex, _ in results)
    confident = [confidence.assess(ex.probs, names).confident for _, _, ex, _ in results]
    reveal_all = flagged and st.toggle(
        "Show the prediction of the image that does not look like a chest X-ray"
        if flagged == 1
        else f"Show the predictions of the {flagged} images that do not look like chest X-rays",
        key="reveal-all",
    )
    table = pd.DataFrame(
        [
            {
                "image": ui.upload_thumbnail(upload.file_id, gray),
                "file": upload.name,
                "in_distribution": not ex.ood.flag,
                "prediction": (
                    "hidden: not a chest X-ray?"
                    if ex.ood.flag and not reveal_all
                    else names[ex.label]
                    if sure
                    else "no confident prediction"
                ),
                **{c: float(p) if not ex.ood.flag or reveal_all else None for c, p in zip(names, ex.probs)},
                "ood_score": ex.ood.score,
                "ood_reason": ex.ood.reason,
            }
            for (upload, gray, ex, _), sure in zip(results, confident)
        ]
    )
    st.dataframe(
        table,
        column_config={
            "image": st.column_config.ImageColumn("image"),
            "in_distribution": st.column_config.CheckboxColumn("in_distribution", help="passed the chest X-ray gate"),
            "ood_score": st.column_config.NumberColumn("ood_score", format="%.2f", help="above 1: out of distribution"),
            **{c: st.column_config.ProgressColumn(c, min_value=0.0, max_value=1.0, format="%.3f") for c in names},
        },
        hide_index=True,
    )
    # the download keeps every prediction; in_distribution says which ones to distrust
    csv = table.drop(columns="image").assign(
        prediction=[names[ex.label] for _, _, ex, _ in results],
        confident=confident,
        **{c: [float(ex.probs[i]) for _, _, ex, _ in results] for i, c in enumerate(names)},
    )
    st.download_button("Download CSV", csv.to_csv(index=False), "predictions.csv", "text/csv")

for i, (upload, gray, ex, seconds) in enumerate(results):
    name = upload.name
    verdict = confidence.assess(ex.probs, names)
    label = f"**{names[ex.label]}** ({ex.probs[ex.label]:.1%})" if verdict.confident else "no confident prediction"
    shown = True
    if ex.ood.flag:
        st.subheader(f"{name}: not a chest X-ray?")
        st.warning(ex.ood.message, icon=":material/block:")  # an emoji may be missing from the browser's fonts
        shown = st.checkbox("show the prediction anyway", key=f"reveal-{i}-{name}")
    elif verdict.confident:
        st.subheader(f"{name}: {names[ex.label]} ({ex.probs[ex.label]:.1%})")
    else:
        st.subheader(f"{name}: no confident prediction")
    if not shown:
        st.image(gray, caption="uploaded image", clamp=True, width=320)
        continue
    if ex.ood.flag:
        st.caption(f"Prediction despite the warning: {label}")
    if not verdict.confident:
        st.info(f"The model does not settle on a class: {verdict.reason}.", icon=":material/help:")
    c1, c2, c3 = st.columns([2, 2, 3])
    c1.image(gray, caption="uploaded image" if ex.ood.flag else "X-ray", clamp=True)
    if verdict.confident:
        c2.image(overlay(gray, ex.cam, alpha=alpha), caption=f"{ex.method} overlay, {ex.layer or layer}")
        c2.plotly_chart(
            charts.cam_colour_bar(
                jet_colorscale(), label=f"relevance to {names[ex.label]}, scaled to this image's highest"
            ),
            key=f"scale-{name}-{id(ex)}",
        )
    else:
        c2.caption(f"No {ex.method} overlay: without a confident prediction there is no class to explain.")
    c3.plotly_chart(
        charts.probability_bars(ex.probs, names, threshold=confidence.MIN_TOP_PROBABILITY), key=f"bars-{name}-{id(ex)}"
    )
    c3.caption(
        f"{ex.method} computed in {seconds * 1000:.0f} ms"
        if seconds is not None
        else f"{ex.method} from cache: no model call"
    )
