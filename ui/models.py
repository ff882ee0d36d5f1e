"""The model cache: cached model loaders, explanations per session and image views across reruns."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import streamlit as st
from PIL import Image

from radiology import registry
from radiology.settings import data_root, runs_dir

if TYPE_CHECKING:
    from radiology.explain import Explainer
    from radiology.model import LoadedModel

DISPLAY_SIDE = 1024
# Per session: a display-size image (at most 1 MiB) and its explanation each; idle results go after an hour.
SESSION_CACHE_BYTES = 64 * 2**20
SESSION_CACHE_AGE_S = 3600


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


def explain_cached(
    run: registry.Run, data: bytes, method: str, *, layer: str | None = None, upload_id: str | None = None
):
    """Decodes and explains an uploaded file, once per (model, upload, method, layer) per session.

    ``layer`` is the convolution layer to explain on; None for the model's Grad-CAM layer. ``upload_id`` is
    the upload's Streamlit ``file_id``: with it a rerun (a slider move) finds the result without hashing the
    file; without it the file's SHA-256 is the key.

    Returns:
        (the image at display size, at most ``DISPLAY_SIDE`` pixels, Explanation with the
        out-of-distribution verdict in ``.ood``, seconds the model took or None when it came from the cache).

    Raises:
        RadiologyError: the file cannot be decoded.
    """
    import ui  # the bounds are read on the package, where tests set them (monkeypatch), as before the split
    from radiology.images import decode_with_colour, dicom_header
    from radiology.lru import LRUCache
    from radiology.preprocess import fit_within

    if not isinstance(st.session_state.get("_explanations"), LRUCache):
        st.session_state["_explanations"] = LRUCache(max_bytes=ui.SESSION_CACHE_BYTES, max_age_s=ui.SESSION_CACHE_AGE_S)
    cache = st.session_state["_explanations"]
    upload = ("upload", upload_id) if upload_id else ("sha256", hashlib.sha256(data).hexdigest())
    key = (str(run.model_path), run.model_path.stat().st_mtime_ns, upload, method, layer)
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


THUMBNAILS_KEPT = 256  # about 5 kB each


def upload_thumbnail(upload_id: str, gray: np.ndarray) -> str:
    """:func:`thumbnail_uri` of an upload, encoded once per upload (its ``file_id``) in this session."""
    kept = st.session_state.setdefault("_thumbnails", {})
    if upload_id not in kept:
        kept[upload_id] = thumbnail_uri(gray)
        while len(kept) > THUMBNAILS_KEPT:
            del kept[next(iter(kept))]  # the oldest upload first
    return kept[upload_id]


def thumbnail_uri(gray: np.ndarray, size: int = 72) -> str:
    """A PNG data URI of a small thumbnail, for image columns in tables."""
    image = Image.fromarray(gray)
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


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


@st.cache_data(max_entries=128, ttl=3600, show_spinner=False)
def file_view_plain(image_path: str) -> np.ndarray:
    """A decoded image file from disk as a 256-pixel thumbnail, cached across reruns."""
    from radiology.images import decode_image

    image = Image.fromarray(decode_image(image_path))
    image.thumbnail((256, 256))
    return np.asarray(image)


@st.cache_resource
def cached_device() -> str:
    """The Keras backend and device the runs train on, in words, found once per app process."""
    from training.compute import device_description

    other = os.environ.get("RADIOLOGY_TRAINING_BACKEND")
    if other:
        return f"the {other} backend (RADIOLOGY_TRAINING_BACKEND); each run and estimate names its device"
    return device_description()


@st.cache_resource
def cached_device_count(backend: str) -> int:
    """The devices a run launched from the app trains on with ``backend`` (several on JAX: data-parallel)."""
    from training.distribute import device_count

    return device_count(backend)
