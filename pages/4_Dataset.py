"""Dataset: class balance, sample images, image sizes and the leakage report of a dataset folder."""

from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from radiology import charts
from radiology.datasets import DEFAULT_FRACTIONS, DEFAULT_SEED
from radiology.errors import RadiologyError

ui.page_header("Dataset")
folder = ui.dataset_picker("explore")
if folder is None:
    st.info("Pick a dataset folder inside the data root.")
    st.stop()
try:
    report = ui.dataset_report(
        str(folder), DEFAULT_SEED, DEFAULT_FRACTIONS, ui.dataset_key(folder), ui.report_image_size()
    )
except RadiologyError as exc:
    st.error(str(exc))
    st.stop()

st.header("Class balance")
st.plotly_chart(charts.class_balance_figure(report["counts"]), key="balance")

st.header("Sample images")
for label, paths in report["samples"].items():
    st.subheader(label)
    if not paths:
        st.caption("no images")
        continue
    cols = st.columns(8)
    for col, path in zip(cols, paths):
        try:
            col.image(ui.file_view_plain(path), width="stretch", caption=Path(path).name)
        except RadiologyError as exc:
            col.caption(str(exc))

st.header("Image sizes")
sizes = pd.DataFrame(report["sizes"])
if sizes.empty:
    st.caption("No readable images.")
else:
    st.plotly_chart(charts.size_histogram(sizes["height"], sizes["width"]), key="sizes")
    st.dataframe(sizes.groupby("label")[["height", "width"]].describe().round(1))

st.header("Validation and leakage")
ui.show_validation(report)

st.header("Shortcut risk")
st.markdown(
    "If one class comes mostly from one hospital or one age group, a model can learn the source instead of the "
    "disease. With a `manifest.csv` that has a `source` column, this measures how well a linear model on 32×32 "
    "thumbnails tells the sources apart (cross-validated, patients kept within one fold)."
)
if st.button("Measure source predictability"):
    try:
        sources = ui.source_report(
            str(folder), DEFAULT_SEED, DEFAULT_FRACTIONS, ui.dataset_key(folder), ui.report_image_size()
        )
    except RadiologyError as exc:
        st.error(str(exc))
        st.stop()
    st.dataframe(pd.DataFrame(sources["by_class"]).fillna(0).astype(int))
    found = sources["predictability"]
    if found is None:
        st.info(f"Nothing to measure: {sources['unmeasured']}.")
    else:
        st.metric(
            "Balanced accuracy predicting the source",
            f"{found['balanced_accuracy']:.0%}",
            help=f"chance: {found['chance']:.0%}; {found['n']} images",
        )
        st.dataframe(pd.DataFrame(found["sources"]).T)
