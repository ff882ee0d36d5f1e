"""App-side glue that needs Streamlit: settings, cached loaders and widgets shared by the pages.

The pages import this module; the library (``radiology``, ``training``) never imports Streamlit.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402
from PIL import Image  # noqa: E402

from radiology import DISCLAIMER, registry  # noqa: E402
from radiology.errors import RadiologyError  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent
DISPLAY_SIDE = 1024


def runs_dir() -> Path:
    """The runs folder: ``$RADIOLOGY_RUNS_DIR`` or ``runs/`` in the project."""
    return Path(os.environ.get("RADIOLOGY_RUNS_DIR", PROJECT_ROOT / "runs")).resolve()


def data_root() -> Path:
    """The data root that dataset paths must stay inside: ``$RADIOLOGY_DATA_ROOT`` or ``data/``."""
    return Path(os.environ.get("RADIOLOGY_DATA_ROOT", PROJECT_ROOT / "data")).resolve()


def page_header(title: str) -> None:
    """Page config, title and the research-demo notice every page carries."""
    st.set_page_config(page_title=f"{title} · RadiologyAI", page_icon="🩻", layout="wide")
    st.title(title)
    st.warning(DISCLAIMER, icon="⚠️")


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def _load(path: str, mtime_ns: int, bf16_agreement: float | None):
    from radiology.explain import Explainer
    from radiology.inference import choose_precision
    from radiology.model import load_model

    loaded = load_model(path)
    fast, precision = choose_precision(loaded, bf16_agreement)
    return loaded, Explainer(fast, vis_model=loaded), threading.Lock(), precision


def load_run_model(run: registry.Run):
    """Loads a run's model once per file version; returns (LoadedModel, Explainer, lock, precision).

    The explainer predicts in bfloat16 where that is faster and agreed with float32 on the run's test
    split (``precision`` says which and why). The lock serialises explanations of one model across
    sessions: the explainer builds its sub-models lazily and tf-keras-vis is not thread-safe.
    """
    return _load(str(run.model_path), run.model_path.stat().st_mtime_ns, (run.metrics or {}).get("bf16_agreement"))


def active_model():
    """The active run and its loaded model, or (None, None) when there is none.

    Raises:
        RadiologyError: the active model file cannot be loaded.
    """
    run = registry.active_run(runs_dir())
    if run is None:
        return None, None
    return run, load_run_model(run)


def explain_cached(run: registry.Run, data: bytes, method: str):
    """Decodes and explains an uploaded file, once per (model, file content, method) per session.

    Returns:
        (the image at display size, at most ``DISPLAY_SIDE`` pixels, Explanation, seconds the model
        took or None when it came from the cache).

    Raises:
        RadiologyError: the file cannot be decoded.
    """
    from radiology.images import decode_image
    from radiology.preprocess import fit_within

    cache = st.session_state.setdefault("_explanations", {})
    digest = hashlib.sha256(data).hexdigest()
    key = (str(run.model_path), run.model_path.stat().st_mtime_ns, digest, method)
    if key in cache:
        gray, explanation = cache[key]
        return gray, explanation, None
    gray = decode_image(data)
    _, explainer, lock, _ = load_run_model(run)
    start = time.perf_counter()
    with lock:
        explanation = explainer.explain(gray, method=method)
    seconds = time.perf_counter() - start
    # Only the display-size image is kept: overlays and reruns then cost the same for a 4000-pixel film.
    cache[key] = (fit_within(gray, DISPLAY_SIDE), explanation)
    return cache[key][0], explanation, seconds


def thumbnail_uri(gray: np.ndarray, size: int = 72) -> str:
    """A PNG data URI of a small thumbnail, for image columns in tables."""
    image = Image.fromarray(gray)
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def dataset_picker(key: str) -> Path | None:
    """A dataset folder chooser limited to the data root; shows the refusal for paths outside it."""
    from radiology.datasets import resolve_in_root

    root = data_root()
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    st.caption(f"Data root: `{root}`. Put dataset folders there (set `RADIOLOGY_DATA_ROOT` to change it).")
    choice = st.selectbox(
        "Dataset folder",
        found,
        index=0 if found else None,
        key=f"{key}_choice",
        placeholder="no folders in the data root",
    )
    typed = st.text_input("…or a path inside the data root", key=f"{key}_typed", placeholder="e.g. cxr3 or /data/cxr3")
    wanted = typed.strip() or choice
    if not wanted:
        return None
    try:
        return resolve_in_root(wanted, root)
    except RadiologyError as exc:
        st.error(str(exc))
        return None


@st.cache_data(show_spinner="Reading and checking every image (cached after the first time)…", max_entries=4)
def dataset_report(path: str, seed: int, fractions: tuple[float, float, float], fingerprint_key: str):
    """Discovers, decodes (through the decode cache) and validates a dataset, split with ``seed`` and ``fractions``.

    Returns:
        plain data: ``CheckedSplits.summary()`` plus image sizes per class and sample paths per class.
    """
    from radiology.splits import check_splits

    checked = check_splits(path, seed=seed, fractions=fractions, cache_dir=runs_dir() / ".cache")
    decoded = checked.decoded
    index = decoded.index()
    readable = [(s, index[s.path]) for s in checked.dataset.samples() if decoded.ok[index[s.path]]]
    return {
        **checked.summary(),
        "sizes": {
            "label": [s.label for s, _ in readable],
            "height": [int(decoded.sizes[i, 0]) for _, i in readable],
            "width": [int(decoded.sizes[i, 1]) for _, i in readable],
        },
        "samples": {c: [s.path for s, _ in readable if s.label == c][:8] for c in checked.dataset.class_names},
    }


def dataset_key(path: Path) -> str:
    """A cheap key that changes when files are added or removed, for caching reports."""
    try:
        return str(sum(1 for _ in path.rglob("*"))) + str(path.stat().st_mtime_ns)
    except OSError:
        return "missing"


def show_error(exc: Exception) -> None:
    """Shows a library error as a message, never a stack trace."""
    st.error(str(exc))


@st.cache_data(max_entries=256, show_spinner=False)
def _file_view(model_path: str, mtime_ns: int, agreement: float | None, image_path: str, with_cam: bool) -> np.ndarray:
    from radiology.explain import overlay
    from radiology.images import decode_image
    from radiology.preprocess import fit_within

    gray = decode_image(image_path)
    view = fit_within(gray, DISPLAY_SIDE)
    if not with_cam:
        return view
    _, explainer, lock, _ = _load(model_path, mtime_ns, agreement)
    with lock:
        return overlay(view, explainer.explain(gray).cam, alpha=0.4)


def file_view(run: registry.Run, image_path: Path, *, with_cam: bool) -> np.ndarray:
    """An image file from disk, with the run's Grad-CAM over it when asked; cached across reruns.

    Raises:
        RadiologyError: the file cannot be decoded or the model cannot be loaded.
    """
    agreement = (run.metrics or {}).get("bf16_agreement")
    return _file_view(str(run.model_path), run.model_path.stat().st_mtime_ns, agreement, str(image_path), with_cam)


def show_validation(report: dict) -> None:
    """The dataset validation summary: counts, warnings, unreadable files and cross-split duplicates."""
    import pandas as pd

    s = report["summary"]
    cols = st.columns(4)
    cols[0].metric("Images", s["images"])
    cols[1].metric("Unreadable", s["unreadable"])
    cols[2].metric("Exact duplicates across splits", s["exact_duplicates_across_splits"])
    cols[3].metric("Near duplicates across splits", s["near_duplicates_across_splits"])
    st.caption(f"Layout: {report['layout']} · {report['split_method']}")
    counts = pd.DataFrame(report["counts"]).T
    counts["total"] = counts.sum(axis=1)
    st.dataframe(counts)
    for w in report["warnings"]:
        st.warning(w)
    if report["unreadable"]:
        with st.expander(f"{len(report['unreadable'])} unreadable files (skipped in training)"):
            st.dataframe(pd.DataFrame(list(report["unreadable"].items()), columns=["file", "reason"]), hide_index=True)
    if report["duplicates"]:
        with st.expander(f"{len(report['duplicates'])} images shared across splits (leakage)", expanded=True):
            st.dataframe(pd.DataFrame(report["duplicates"]), hide_index=True)
    else:
        st.success("No exact or near-duplicate images across splits.")


@st.cache_data(max_entries=128, show_spinner=False)
def file_view_plain(image_path: str) -> np.ndarray:
    """A decoded image file from disk as a 256-pixel thumbnail, cached across reruns."""
    from radiology.images import decode_image

    image = Image.fromarray(decode_image(image_path))
    image.thumbnail((256, 256))
    return np.asarray(image)


@st.cache_data(show_spinner="Fitting a source classifier on thumbnails…", max_entries=4)
def source_report(path: str, seed: int, fractions: tuple[float, float, float], fingerprint_key: str) -> dict:
    """Images per source and class, and how well the source can be predicted from the pixels."""
    from radiology.confounding import source_predictability
    from radiology.datasets import source_counts
    from radiology.splits import check_splits

    checked = check_splits(path, seed=seed, fractions=fractions, cache_dir=runs_dir() / ".cache")
    return {
        "by_class": {c: dict(n) for c, n in source_counts(checked.dataset).items()},
        "predictability": source_predictability(checked.dataset.samples(), checked.decoded, seed=seed),
    }


@st.cache_resource
def cached_device() -> str:
    """The Keras backend and device the runs train on, in words, found once per app process."""
    from training.compute import device_description

    other = os.environ.get("RADIOLOGY_TRAINING_BACKEND")
    if other:
        return f"the {other} backend (RADIOLOGY_TRAINING_BACKEND); each run and estimate names its device"
    return device_description()
