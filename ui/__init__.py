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
from typing import TYPE_CHECKING, NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402
from PIL import Image  # noqa: E402

from radiology import DISCLAIMER, registry  # noqa: E402
from radiology.errors import RadiologyError  # noqa: E402
from radiology.settings import data_root, runs_dir  # noqa: E402, F401  (the pages' settings)

if TYPE_CHECKING:
    from radiology.explain import Explainer
    from radiology.model import LoadedModel

DISPLAY_SIDE = 1024
# Per session: a display-size image (at most 1 MiB) and its explanation each; idle results go after an hour.
SESSION_CACHE_BYTES = 64 * 2**20
SESSION_CACHE_AGE_S = 3600


# (file, title, icon, URL path): the app's pages, in navigation order; the first is the default.
PAGES = (
    ("pages/home.py", "Home", ":material/home:", "home"),
    ("pages/1_Classify.py", "Classify", ":material/radiology:", "Classify"),
    ("pages/2_Evaluation.py", "Evaluation", ":material/monitoring:", "Evaluation"),
    ("pages/3_Training.py", "Training", ":material/model_training:", "Training"),
    ("pages/4_Dataset.py", "Dataset", ":material/folder_open:", "Dataset"),
)


def navigation():
    """Declares the app's pages with ``st.navigation`` and returns the page to run."""
    return st.navigation(
        [
            st.Page(path, title=title, icon=icon, url_path=url, default=i == 0)
            for i, (path, title, icon, url) in enumerate(PAGES)
        ]
    )


def _leave_pages_directory_mode() -> None:
    """Replaces Streamlit's automatic page list from ``pages/`` with the app's navigation.

    Streamlit starts every server in its old "pages directory" mode when a ``pages/`` folder sits beside
    the main script, and leaves it only when a script calls ``st.navigation``. So when the first visitor
    opens a deep link such as ``/Classify``, Streamlit runs that page file directly, without
    ``streamlit_app.py``, and shows its own list of the folder (streamlit PR 10276 discusses this). The
    page then declares the real navigation, which also ends that mode for the whole process, and
    reruns: the rerun goes through ``streamlit_app.py`` to the same URL path.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        navigation()
        st.rerun()


def page_header(title: str) -> None:
    """Page config, title and the research-demo notice every page carries."""
    _leave_pages_directory_mode()
    st.set_page_config(page_title=f"{title} · RadiologyAI", page_icon="🩻", layout="wide")
    st.title(title)
    st.warning(DISCLAIMER, icon=":material/warning:")  # Material Symbols ship with Streamlit; emoji fonts may not


class RunModel(NamedTuple):
    """A run's model as the app holds it.

    Attributes:
        loaded: the float32 model and its metadata.
        explainer: predicts and explains, in bfloat16 where that was chosen.
        lock: serialises the explainer's use across sessions.
        precision: which precision the explainer predicts in, and why.
    """

    loaded: LoadedModel
    explainer: Explainer
    lock: threading.Lock
    precision: str


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def _load(path: str, mtime_ns: int, bf16_agreement: float | None) -> RunModel:
    from radiology.explain import Explainer
    from radiology.inference import choose_precision
    from radiology.model import load_model

    loaded = load_model(path)
    fast, precision = choose_precision(loaded, bf16_agreement)
    return RunModel(loaded, Explainer(fast, vis_model=loaded), threading.Lock(), precision)


def load_run_model(run: registry.Run) -> RunModel:
    """Loads a run's model once per file version.

    The explainer predicts in bfloat16 where that is faster and agreed with float32 on the run's test
    split (``precision`` says which and why). The lock serialises explanations of one model across
    sessions: the explainer builds its sub-models lazily and tf-keras-vis is not thread-safe.
    """
    return _load(str(run.model_path), run.model_path.stat().st_mtime_ns, run.bf16_agreement)


def active_model():
    """The active run and its :class:`RunModel`, or (None, None) when there is none.

    Raises:
        RadiologyError: the active model file cannot be loaded.
    """
    run = registry.active_run(runs_dir())
    if run is None:
        return None, None
    return run, load_run_model(run)


def explain_cached(run: registry.Run, data: bytes, method: str, *, layer: str | None = None):
    """Decodes and explains an uploaded file, once per (model, file content, method, layer) per session.

    ``layer`` is the convolution layer to explain on; None for the model's Grad-CAM layer.

    Returns:
        (the image at display size, at most ``DISPLAY_SIDE`` pixels, Explanation with the
        out-of-distribution verdict in ``.ood``, seconds the model took or None when it came from the cache).

    Raises:
        RadiologyError: the file cannot be decoded.
    """
    from radiology.images import decode_with_colour, dicom_header
    from radiology.lru import LRUCache
    from radiology.preprocess import fit_within

    if not isinstance(st.session_state.get("_explanations"), LRUCache):
        st.session_state["_explanations"] = LRUCache(max_bytes=SESSION_CACHE_BYTES, max_age_s=SESSION_CACHE_AGE_S)
    cache = st.session_state["_explanations"]
    digest = hashlib.sha256(data).hexdigest()
    key = (str(run.model_path), run.model_path.stat().st_mtime_ns, digest, method, layer)
    hit = cache.get(key)
    if hit is not None:
        gray, explanation = hit
        return gray, explanation, None
    gray, colour = decode_with_colour(data)
    header = dicom_header(data)  # a CT slice or a lateral film is flagged by its header, whatever the model
    model = load_run_model(run)
    start = time.perf_counter()
    with model.lock:
        explanation = model.explainer.explain(gray, method=method, colourfulness=colour, header=header, layer=layer)
    seconds = time.perf_counter() - start
    # Only the display-size image is kept: overlays and reruns then cost the same for a 4000-pixel film.
    view = fit_within(gray, DISPLAY_SIDE)
    cache.put(key, (view, explanation))
    return view, explanation, seconds


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


@st.cache_data(show_spinner="Comparing the dataset with the model's training data…", max_entries=16)
def dataset_overlap(
    path: str, train_config: dict, data_fingerprint: str | None, split: str, fingerprint_key: str
) -> tuple[bool | None, str]:
    """``radiology.splits.dataset_overlap``, cached: discovering a large dataset takes seconds."""
    from radiology.splits import dataset_overlap as overlap

    return overlap(path, train_config=train_config, data_fingerprint=data_fingerprint, split=split)


def dataset_key(path: Path) -> str:
    """A cheap key that changes when files are added or removed, for caching reports."""
    try:
        return str(sum(1 for _ in path.rglob("*"))) + str(path.stat().st_mtime_ns)
    except OSError:
        return "missing"


def show_error(exc: Exception) -> None:
    """Shows a library error as a message, never a stack trace."""
    st.error(str(exc))


# Up to 3 MiB per image: the twelve mistakes of a run with and without Grad-CAM, for two runs, for an hour.
@st.cache_data(max_entries=48, ttl=3600, show_spinner=False)
def _file_view(model_path: str, mtime_ns: int, agreement: float | None, image_path: str, with_cam: bool) -> np.ndarray:
    from radiology.explain import overlay
    from radiology.images import decode_image
    from radiology.preprocess import fit_within

    gray = decode_image(image_path)
    view = fit_within(gray, DISPLAY_SIDE)
    if not with_cam:
        return view
    model = _load(model_path, mtime_ns, agreement)
    with model.lock:
        return overlay(view, model.explainer.explain(gray).cam, alpha=0.4)


def run_data_root(metrics: dict) -> Path | None:
    """The dataset folder an evaluation (its metrics) was measured on, or None when they do not name one.

    Raises:
        DatasetError: the folder is outside the app's data root, so the app must not read it.
    """
    from radiology.datasets import resolve_in_root

    stored = metrics.get("data_root")
    return resolve_in_root(stored, data_root()) if stored else None


def file_view(run: registry.Run, image_path: Path, *, with_cam: bool) -> np.ndarray:
    """An image file from disk, with the run's Grad-CAM over it when asked; cached across reruns.

    Raises:
        DatasetError: the file is outside the app's data root (also through ``..`` or a symlink); it is not read.
        RadiologyError: the file cannot be decoded or the model cannot be loaded.
    """
    from radiology.datasets import resolve_in_root

    image_path = resolve_in_root(image_path, data_root())
    agreement = run.bf16_agreement
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


@st.cache_data(max_entries=128, ttl=3600, show_spinner=False)
def file_view_plain(image_path: str) -> np.ndarray:
    """A decoded image file from disk as a 256-pixel thumbnail, cached across reruns."""
    from radiology.images import decode_image

    image = Image.fromarray(decode_image(image_path))
    image.thumbnail((256, 256))
    return np.asarray(image)


@st.cache_data(show_spinner="Fitting a source classifier on thumbnails…", max_entries=4)
def source_report(path: str, seed: int, fractions: tuple[float, float, float], fingerprint_key: str) -> dict:
    """Images per source and class, how well the source can be predicted from the pixels, and why not if it cannot."""
    from radiology.confounding import source_predictability, unmeasured_reason
    from radiology.datasets import source_counts
    from radiology.splits import check_splits

    checked = check_splits(path, seed=seed, fractions=fractions, cache_dir=runs_dir() / ".cache")
    samples = checked.dataset.samples()
    found = source_predictability(samples, checked.decoded, seed=seed)
    return {
        "by_class": {c: dict(n) for c, n in source_counts(checked.dataset).items()},
        "predictability": found,
        "unmeasured": None if found else unmeasured_reason(checked.dataset.root, samples, checked.decoded),
    }


def import_messages(key: str) -> None:
    """Shows, once, the outcome of the last import made with ``import_model_panel(key)``."""
    for kind, message in st.session_state.pop(f"{key}_done", []):
        getattr(st, kind)(message)


def import_model_panel(key: str, *, promote_default: bool = False) -> None:
    """Upload a ``.keras`` or Keras 2 ``.h5`` model, check its class order, and import it as a run.

    The class order the file carries, or the notebook's order it is assumed to have, is shown and can be
    changed before importing. A successful import reruns the page so run lists include the new run; the page
    shows its outcome with :func:`import_messages`, outside any expander the panel sits in.
    """
    from radiology.imports import MAX_UPLOAD_MB, describe, import_model, import_record, parse_class_order

    upload = st.file_uploader(
        "Model file: `.keras`, or Keras 2 `.h5` such as the notebook's `best_model.h5`",
        type=["keras", "h5", "hdf5"],
        max_upload_size=MAX_UPLOAD_MB,
        key=f"{key}_file_{st.session_state.get(f'{key}_imports', 0)}",  # a new key empties it after an import
        help="Loaded with Keras safe mode: files with Lambda layers are refused. Stored only in the new run's folder.",
    )
    if upload is None:
        return
    data = upload.getvalue()
    described = st.session_state.get(f"{key}_described")
    try:
        if described is None or described[0] != upload.file_id:
            # checks every entry's checksum: once per upload, not on every rerun while it waits
            described = (upload.file_id, describe(data, upload.name))
            st.session_state[f"{key}_described"] = described
        info = described[1]
    except RadiologyError as exc:
        show_error(exc)
        return
    default = ", ".join(info.class_names)
    if info.has_metadata:
        st.info(f"`{upload.name}` carries its metadata. Class order (outputs 0, 1, 2…): **{default}**.")
    else:
        st.warning(
            f"`{upload.name}` carries no metadata: the notebook's alphabetical class order **{default}** is "
            "assumed for outputs 0, 1, 2. If the model was trained with another order, set it below."
        )
    with st.form(f"{key}_form"):
        order = st.text_input("Class order (output 0, 1, 2…)", value=default)
        name = st.text_input("Name", value=Path(upload.name).stem)
        promote = st.checkbox("Make it the active model", value=promote_default)
        submitted = st.form_submit_button("Import model", type="primary")
    if not submitted:
        return
    try:
        names = parse_class_order(order)
        with st.spinner("Checking and saving the model…"):
            run = import_model(
                data,
                filename=upload.name,
                runs_dir=runs_dir(),
                name=name.strip() or None,
                class_names=None if names == info.class_names else names,
            )
    except RadiologyError as exc:
        show_error(exc)
        return
    record = import_record(run) or {}
    done = [
        (
            "success",
            f"Imported {upload.name} as run {run.id}: classes {', '.join(record.get('class_names', []))} "
            f"({record.get('class_order')}).",
        )
    ]
    done += [("warning", w) for w in record.get("warnings", [])]
    if promote:
        registry.set_active(run, runs_dir())
        done.append(("success", f"{run.id} is now the active model. Classify uses it from now on."))
    st.session_state[f"{key}_done"] = done
    st.session_state[f"{key}_imports"] = st.session_state.get(f"{key}_imports", 0) + 1
    st.rerun()


@st.cache_resource
def cached_device() -> str:
    """The Keras backend and device the runs train on, in words, found once per app process."""
    from training.compute import device_description

    other = os.environ.get("RADIOLOGY_TRAINING_BACKEND")
    if other:
        return f"the {other} backend (RADIOLOGY_TRAINING_BACKEND); each run and estimate names its device"
    return device_description()
