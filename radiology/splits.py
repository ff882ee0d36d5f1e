"""Checked splits: from a dataset folder to its splits, decoded through the cache and validated.

This is the one path from a folder to data that training, evaluation, the command line and the
app's dataset reports all take, so they agree on which image sits in which split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from radiology.cache import DecodedImages, load_or_decode
from radiology.datasets import DEFAULT_FRACTIONS, DEFAULT_SEED, Dataset, discover
from radiology.leakage import ValidationReport, validate
from radiology.preprocess import PreprocessSpec


@dataclass
class CheckedSplits:
    """A dataset with its decoded images and validation report.

    Attributes:
        dataset: the discovered dataset and its splits.
        decoded: the decoded images of every sample, at the spec's input size.
        report: counts, unreadable files and duplicates across splits.
        from_cache: whether the decoded images came from the decode cache.
    """

    dataset: Dataset
    decoded: DecodedImages
    report: ValidationReport
    from_cache: bool = False

    def summary(self) -> dict:
        """The validation report as plain data: layout, split method, fingerprint, counts, problems.

        Returns:
            a JSON-ready dict with ``root``, ``layout``, ``split_method``, ``fingerprint``, ``counts``,
            the headline numbers of ``ValidationReport.summary`` under ``summary``, ``warnings``,
            ``unreadable`` (relative path to reason) and ``duplicates`` (one dict per pair).
        """
        ds = self.dataset
        return {
            "root": str(ds.root),
            "layout": ds.layout,
            "split_method": ds.split_method,
            "fingerprint": ds.fingerprint(),
            "counts": self.report.counts,
            "summary": self.report.summary(),
            "warnings": self.report.warnings,
            "unreadable": self.report.unreadable,
            "duplicates": [vars(d) for d in self.report.duplicates],
        }


def check_splits(
    root: str | Path,
    *,
    seed: int = DEFAULT_SEED,
    fractions=DEFAULT_FRACTIONS,
    spec: PreprocessSpec | None = None,
    cache_dir: str | Path | None = None,
    progress=None,
) -> CheckedSplits:
    """Discovers a dataset, decodes every image through the decode cache and validates the splits.

    Args:
        root: the dataset folder, in either layout ``datasets.discover`` accepts.
        seed: seed of the split where the layout needs one.
        fractions: train/val/test fractions where the layout needs them.
        spec: the preprocessing to decode to; the notebook's by default.
        cache_dir: the decode cache folder, or None to decode without caching.
        progress: optional callable ``progress(done, total)`` while decoding; it may raise to stop.

    Returns:
        the dataset, its decoded images and its validation report.

    Raises:
        DatasetError: the folder is missing, has no usable layout, or the fractions are invalid.
    """
    dataset = discover(root, fractions=tuple(fractions), seed=seed)
    decoded, cached = load_or_decode(
        [s.path for s in dataset.samples()], spec or PreprocessSpec(), cache_dir, progress=progress
    )
    return CheckedSplits(dataset, decoded, validate(dataset, decoded), cached)


def training_split(train_config: dict, *, seed: int | None = None) -> tuple[int, tuple[float, float, float]]:
    """The seed and fractions a model's training data was split with, so evaluation splits the same way.

    Args:
        train_config: the config the model was trained with (``ModelMetadata.train_config``); may be empty.
        seed: a seed the user chose explicitly; it wins over the model's.

    Returns:
        (seed, fractions): the explicit seed, else the model's, else ``DEFAULT_SEED``; the model's fractions,
        else the defaults.
    """
    chosen = seed if seed is not None else train_config.get("seed", DEFAULT_SEED)
    fractions = tuple(float(f) for f in train_config.get("fractions") or DEFAULT_FRACTIONS)
    return int(chosen), fractions


def training_overlap(model_fingerprint: str | None, dataset: Dataset, split: str) -> tuple[bool | None, str]:
    """Whether a dataset and its split are the ones a model was trained on, and what that means for a split.

    Args:
        model_fingerprint: the model's ``data_fingerprint``, or None when it carries none.
        dataset: the dataset to evaluate on, split as it will be evaluated.
        split: ``train``, ``val``, ``test`` or ``all``.

    Returns:
        (matches, message): True when the fingerprints are equal, False when they differ, None when
        the model carries no fingerprint; and the meaning for the evaluated images, in plain words.
    """
    if not model_fingerprint:
        return None, (
            "the model carries no fingerprint of its training data, so it cannot be known whether "
            "these images were used to train it"
        )
    if model_fingerprint != dataset.fingerprint():
        return False, (
            f"this dataset or its split differs from the one the model was trained on (fingerprint "
            f"{dataset.fingerprint()}, the model's {model_fingerprint}): some of these images may still "
            "have been used in training"
        )
    if split == "test":
        return True, "this is the model's own dataset, split as in training: only the test split is unseen"
    what = "all of it" if split == "all" else f"its {split} split"
    return True, (
        f"this is the model's own dataset, split as in training: {what} includes images used in training "
        "(train to fit, val to choose the checkpoint), so these numbers are optimistic; only the test split is unseen"
    )


def dataset_overlap(
    root: str | Path, *, train_config: dict, data_fingerprint: str | None, split: str
) -> tuple[bool | None, str]:
    """Discovers a dataset split as a model's training data was, and says how it overlaps that data.

    Args:
        root: the dataset folder to evaluate on.
        train_config: the model's training config (seed and fractions), possibly empty.
        data_fingerprint: the model's training data fingerprint, or None.
        split: ``train``, ``val``, ``test`` or ``all``.

    Returns:
        as ``training_overlap``.

    Raises:
        DatasetError: the folder has no usable layout.
    """
    seed, fractions = training_split(train_config)
    return training_overlap(data_fingerprint, discover(root, seed=seed, fractions=fractions), split)
