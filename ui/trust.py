"""The Trust section of the Evaluation page: a stored audit as a verdict, tables and curves."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from radiology import audit, charts


def show_audit(result: dict) -> None:
    """Shows an audit (``radiology.audit``): the verdict, the faithfulness table and curves, the shortcuts."""
    f, s = result["faithfulness"], result["shortcut"]
    st.caption(f"Audited on {audit.described(result)}.")
    lines = audit.verdict(result)
    borders_above_chance = "it uses more than the lungs" in lines[0]
    (st.warning if borders_above_chance else st.success)(lines[0])
    st.markdown("\n".join(f"- {line}" for line in lines[1:]))

    st.subheader("Faithfulness of the explanations")
    st.caption(
        f"Deletion: the pixels of the model input are replaced by a blurred copy (σ {f['blur_sigma_px']:g} px), "
        f"most salient first, in {f['steps']} steps, tracking {f['tracked']}; the area under that curve is lower "
        "for a map that found what the prediction rests on. Insertion restores them from the blurred image: "
        "higher is better. A method is no better than random when its insertion − deletion, paired image by "
        "image, is not above the random map's by a bootstrap 95% interval (Petsiuk et al., RISE, 2018)."
    )
    st.dataframe(pd.DataFrame(audit.faithfulness_rows(f)), hide_index=True)
    c1, c2 = st.columns(2)
    c1.plotly_chart(charts.faithfulness_curves(f, kind="deletion"), key="trust-deletion")
    c2.plotly_chart(charts.faithfulness_curves(f, kind="insertion"), key="trust-insertion")
    cost = f["cost"]
    st.caption(
        f"Cost: {cost['map_seconds']:.0f} s for the maps and {cost['curve_seconds']:.0f} s for the curves, "
        f"{cost['model_inputs']:,} model inputs in {cost['model_calls']:,} calls "
        f"({cost['calls_per_image']:.1f} per image: every curve of an image is batched together)."
    )

    st.subheader("Shortcuts")
    box = s["box"]
    st.caption(
        f"The thorax box covers rows {box['top']:.0%}–{box['bottom']:.0%} and columns {box['left']:.0%}–"
        f"{box['right']:.0%} of the film ({box['area']:.0%} of it), where the lung fields of a frontal film lie. "
        f"Borders only: the box replaced by {box['fill']}; thorax only: everything outside it. Chance is "
        f"{s['chance']:.0%}; always answering the most frequent class scores {s['majority']:.0%}."
    )
    st.dataframe(pd.DataFrame(audit.shortcut_rows(s)), hide_index=True)
    st.plotly_chart(charts.shortcut_bars(s), key="trust-shortcut")
    st.markdown("**Where the Grad-CAM falls** (the map of the predicted class, for the images of each class)")
    st.dataframe(pd.DataFrame(audit.cam_rows(s)), hide_index=True)
    st.markdown("**The source collection in the model's own features** (cross-validated logistic regression)")
    if s.get("source_from_features"):
        st.dataframe(pd.DataFrame(audit.source_rows(s["source_from_features"])), hide_index=True)
    else:
        st.caption("Not measured: fewer than two sources with 20 images or more (a manifest.csv names them).")
