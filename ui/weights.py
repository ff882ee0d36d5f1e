"""The ImageNet weights beside the Training page's "Initial weights": at hand or not, and a copy uploaded."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from radiology import pretrained
from radiology.errors import ModelLoadError

UPLOAD_MB = 100  # the file is about 59 MB


@st.cache_data(ttl=60, show_spinner="Checking for the ImageNet weights…", max_entries=4)
def _availability(path: str, stamp: tuple) -> pretrained.Availability:
    """``pretrained.availability()``, cached for a minute per state of the file (asking the network takes seconds)."""
    return pretrained.availability()


def _stamp(path: Path) -> tuple:
    try:
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns
    except OSError:
        return ()


def imagenet_panel(key: str) -> bool:
    """Says whether a run can start from the ImageNet weights; when they cannot be had, offers the ways out.

    When the file is neither in the Keras cache nor downloadable, a warning says so and names the two ways
    out: weights ``none``, or uploading the file, which is checked (its MD5) and saved where Keras looks.

    Args:
        key: a prefix for the widgets' keys.

    Returns:
        whether a run starting from ImageNet gets its weights.
    """
    for message in st.session_state.pop(f"{key}_saved", []):
        st.success(message)
    path = pretrained.imagenet_path()
    found = _availability(str(path), _stamp(path))
    if found.usable:
        st.caption(found.message())
        return True
    st.warning(found.message(), icon=":material/cloud_off:")
    upload = st.file_uploader(
        f"Upload `{pretrained.IMAGENET_FILE}`",
        type=["h5"],
        max_upload_size=UPLOAD_MB,
        key=f"{key}_upload_{st.session_state.get(f'{key}_uploads', 0)}",  # a new key empties it after saving
        help="Checked against the MD5 Keras expects, then saved where Keras looks for it.",
    )
    if upload is None:
        return False
    try:
        saved = pretrained.install_imagenet(upload.getvalue())
    except ModelLoadError as exc:
        st.error(str(exc))
        return False
    except OSError as exc:
        st.error(f"cannot save the weights to {path}: {exc}")
        return False
    st.session_state[f"{key}_saved"] = [f"Saved the ImageNet weights to {saved}: runs can start from them."]
    st.session_state[f"{key}_uploads"] = st.session_state.get(f"{key}_uploads", 0) + 1
    st.rerun()
