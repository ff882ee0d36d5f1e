"""Checked splits: from a dataset folder to its splits, decoded through the cache and validated.

This is the one path from a folder to data that training, evaluation, the command line and the
app's dataset reports all take, so they agree on which image sits in which split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from radiology.cache import DecodedImages, load_or_decode
from radiology.datasets import DEFAULT_FRACTIONS, Dataset, discover
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
    seed: int = 42,
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
