"""Dataset widgets: the folder picker, the cached validation and source reports, and their display."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from radiology.errors import RadiologyError
from radiology.settings import data_root, runs_dir
from ui.forms import MEMORY, remembered


def dataset_picker(key: str) -> Path | None:
    """A dataset folder chooser limited to the data root; shows the refusal for paths outside it.

    The choice lasts the session (``ui.forms.remembered``): coming back to the page finds the same folder.
    """
    from radiology.datasets import resolve_in_root

    root = data_root()
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    st.caption(f"Data root: `{root}`. Put dataset folders there (set `RADIOLOGY_DATA_ROOT` to change it).")
    choice = st.selectbox(
        "Dataset folder",
        found,
        **remembered(f"{key}_choice", found[0] if found else None, options=found),
        placeholder="no folders in the data root",
    )
    typed = st.text_input(
        "…or a path inside the data root", **remembered(f"{key}_typed", ""), placeholder="e.g. cxr3 or /data/cxr3"
    )
    wanted = typed.strip() or choice
    if not wanted:
        return None
    try:
        return resolve_in_root(wanted, root)
    except RadiologyError as exc:
        st.error(str(exc))
        return None


@st.cache_data(show_spinner="Reading and checking every image (cached after the first time)…", max_entries=4)
def dataset_report(path: str, seed: int, fractions: tuple[float, float, float], fingerprint_key: str, image_size: int):
    """Discovers, decodes (through the decode cache) and validates a dataset, split with ``seed`` and ``fractions``.

    Images are decoded at ``image_size``, the size a training of them would use, so that the run then finds
    them in the decode cache and the cache holds one entry rather than two.

    Returns:
        plain data: ``CheckedSplits.summary()`` plus image sizes per class and sample paths per class.
    """
    from radiology.splits import check_splits

    checked = check_splits(
        path, seed=seed, fractions=fractions, spec=_square(image_size), cache_dir=runs_dir() / ".cache"
    )
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


def run_data_root(metrics: dict) -> Path | None:
    """The dataset folder an evaluation (its metrics) was measured on, or None when they do not name one.

    Raises:
        DatasetError: the folder is outside the app's data root, so the app must not read it.
    """
    from radiology.datasets import resolve_in_root

    stored = metrics.get("data_root")
    return resolve_in_root(stored, data_root()) if stored else None


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


@st.cache_data(show_spinner="Fitting a source classifier on thumbnails…", max_entries=4)
def source_report(
    path: str, seed: int, fractions: tuple[float, float, float], fingerprint_key: str, image_size: int
) -> dict:
    """Images per source and class, how well the source can be predicted from the pixels, and why not if it cannot.

    Decodes at ``image_size``, through the same decode cache entry as :func:`dataset_report`.
    """
    from radiology.confounding import source_predictability, unmeasured_reason
    from radiology.datasets import source_counts
    from radiology.splits import check_splits

    checked = check_splits(
        path, seed=seed, fractions=fractions, spec=_square(image_size), cache_dir=runs_dir() / ".cache"
    )
    samples = checked.dataset.samples()
    found = source_predictability(samples, checked.decoded, seed=seed)
    return {
        "by_class": {c: dict(n) for c, n in source_counts(checked.dataset).items()},
        "predictability": found,
        "unmeasured": None if found else unmeasured_reason(checked.dataset.root, samples, checked.decoded),
    }


def _square(image_size: int):
    from radiology.preprocess import PreprocessSpec

    return PreprocessSpec(height=int(image_size), width=int(image_size))


def report_image_size() -> int:
    """The size the dataset reports decode at: the Training form's image size, as set in this session or its default."""
    from training.config import defaults

    chosen = st.session_state.get("train_image_size") or st.session_state.get(MEMORY, {}).get("train_image_size")
    return int(chosen or defaults()["image_size"])
