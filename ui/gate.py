"""The out-of-distribution gate on Classify: whether the active model has one, and fitting it in the background."""

from __future__ import annotations

import streamlit as st

from radiology import evaluation_job, registry
from radiology.errors import RadiologyError
from radiology.jobs import LIVE_STATES
from radiology.model import LoadedModel
from radiology.ood import load_stats
from radiology.settings import runs_dir
from ui.datasets import dataset_key, dataset_overlap, dataset_picker


def _fitting_key(run: registry.Run) -> str:
    """The session key that marks a gate fit this session saw running, so its end is announced once."""
    return f"_fitting_gate_{run.id}"


def gate_panel(run: registry.Run, loaded: LoadedModel) -> None:
    """Says when the model has no gate statistics, and offers **Fit the gate**: a background job on a dataset.

    While the job runs, its phase and progress show; when it succeeds the page reruns, loads the model file
    with its new statistics, says that the gate is active, and shows nothing more.
    """
    status = evaluation_job.read_status(run.dir) or {}
    is_fit = status.get("kind") == "fit-ood"
    if is_fit and status.get("state") == "succeeded" and st.session_state.pop(_fitting_key(run), False):
        st.success(
            f"The out-of-distribution gate of {run.id} is fitted on {status.get('data')} and active: every image "
            "on this page now passes it."
        )
    fitting = is_fit and status.get("state") in LIVE_STATES
    if load_stats(loaded.metadata) is not None and not fitting:
        return
    st.caption(
        "The out-of-distribution check is unavailable for this model: only colour, size and texture are checked, "
        "so an image that is no chest X-ray may still get a label. **Fit the gate** below to turn it on."
    )
    with st.expander("Fit the gate", expanded=fitting):
        if run.dir == registry.BUNDLED_DIR:
            st.caption("The bundled model's folder is read-only: import or train a run to fit its gate.")
            return
        st.caption(
            "Fits the gate on the training split of a dataset, best the one the model was trained on (split with "
            "the model's own seed and fractions), sets its thresholds so that 99% of the validation split passes, "
            "and stores it in the model file. Every image passes through the model once: minutes on a CPU for a "
            "few thousand images. It runs in the background; you can leave this page."
        )
        folder = dataset_picker("gate")
        if folder is not None:
            _overlap_note(folder, loaded)
        if st.button("Fit the gate", type="primary", disabled=folder is None or evaluation_job.is_running(run.dir)):
            try:
                evaluation_job.start_gate_fit(run, folder, cache_dir=runs_dir() / ".cache")
            except RadiologyError as exc:
                st.error(str(exc))
        _progress(run)


def _overlap_note(folder, loaded: LoadedModel) -> None:
    """Whether the chosen dataset is the model's training data, by fingerprint, in plain words."""
    meta = loaded.metadata
    try:
        matches, _ = dataset_overlap(
            str(folder), meta.train_config, meta.data_fingerprint, "train", dataset_key(folder)
        )
    except RadiologyError as exc:
        st.error(str(exc))
        return
    if matches is True:
        st.info(
            "This is the model's own dataset, split as in training: the gate learns what its training films look like."
        )
    elif matches is False:
        st.warning(
            "This dataset or its split differs from the one the model was trained on: the gate then learns what "
            "these films look like, and may flag films like the model's own training data."
        )
    else:
        st.caption("The model carries no fingerprint of its training data: choose the dataset it was trained on.")


@st.fragment(run_every=1.0)
def _progress(run: registry.Run) -> None:
    """Re-reads the run's job status every second; when a gate fit ends, reruns the page to load the new model."""
    status = evaluation_job.read_status(run.dir)
    if not status or status.get("kind") != "fit-ood":
        return
    key = _fitting_key(run)
    if status["state"] in LIVE_STATES:
        st.session_state[key] = True
        done, total = status.get("done", 0), status.get("total", 0)
        text = status.get("phase", status["state"]) + (f": {done} of {total}" if total else "")
        st.progress(float(status.get("progress") or 0.0), text=f"Fitting the gate on {status.get('data')}: {text}")
        return
    if status["state"] == "succeeded" and st.session_state.get(key):
        st.rerun()  # the page reloads the model file, now with its statistics, and says so once
    st.session_state.pop(key, None)
    if status["state"] == "failed":
        st.error(f"Fitting the gate failed: {status.get('error')}")
