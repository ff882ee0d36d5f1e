"""Validation of a dataset: counts, unreadable files and images shared across splits (leakage)."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from radiology.cache import DecodedImages
from radiology.datasets import SPLITS, Dataset

NEAR_DUPLICATE_BITS = 20  # of 256; see cache.perceptual_hash


@dataclass
class DuplicatePair:
    """Two files in different splits that hold the same or nearly the same image."""

    split_a: str
    path_a: str
    split_b: str
    path_b: str
    kind: str  # "exact" or "near"
    distance: int


@dataclass
class ValidationReport:
    """What a user should know about a dataset before training on it."""

    counts: dict[str, dict[str, int]]
    unreadable: dict[str, str]
    duplicates: list[DuplicatePair] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Number of images found, readable or not."""
        return sum(sum(c.values()) for c in self.counts.values())

    def summary(self) -> dict:
        """Headline numbers as plain data."""
        exact = sum(d.kind == "exact" for d in self.duplicates)
        return {
            "images": self.total,
            "unreadable": len(self.unreadable),
            "exact_duplicates_across_splits": exact,
            "near_duplicates_across_splits": len(self.duplicates) - exact,
        }


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between every packed hash of ``a`` (rows) and of ``b`` (columns).

    Counting through a matrix product, |a| + |b| - 2 a.b, keeps it one BLAS call per block.
    """
    bits_a = np.unpackbits(a, axis=1).astype(np.float32)
    bits_b = np.unpackbits(b, axis=1).astype(np.float32)
    return np.rint(bits_a.sum(1)[:, None] + bits_b.sum(1)[None, :] - 2 * bits_a @ bits_b.T).astype(np.int32)


def find_cross_split_duplicates(
    dataset: Dataset, decoded: DecodedImages, *, max_bits: int = NEAR_DUPLICATE_BITS, chunk: int = 256
) -> list[DuplicatePair]:
    """Finds exact (same bytes) and near (perceptual hash within ``max_bits``) duplicates across splits.

    Args:
        dataset: the dataset whose splits are compared.
        decoded: its decoded images, holding the hashes.
        max_bits: largest perceptual-hash distance that counts as a near duplicate.
        chunk: rows compared at a time, bounding memory.

    Returns:
        one entry per pair of files in different splits.
    """
    index = decoded.index()
    rows = {name: [index[s.path] for s in dataset.splits.get(name, []) if decoded.ok[index[s.path]]] for name in SPLITS}
    pairs = []
    for a, b in combinations(SPLITS, 2):
        ia, ib = np.asarray(rows[a], dtype=int), np.asarray(rows[b], dtype=int)
        if not len(ia) or not len(ib):
            continue
        hb = decoded.phash[ib]
        for start in range(0, len(ia), chunk):
            block = ia[start : start + chunk]
            dist = _hamming(decoded.phash[block], hb)
            for r, c in zip(*np.nonzero(dist <= max_bits)):
                pa, pb = decoded.paths[block[r]], decoded.paths[ib[c]]
                exact = decoded.sha256[block[r]] == decoded.sha256[ib[c]]
                pairs.append(DuplicatePair(a, pa, b, pb, "exact" if exact else "near", int(dist[r, c])))
    return pairs


def validate(dataset: Dataset, decoded: DecodedImages) -> ValidationReport:
    """Builds the validation report of a dataset from its decoded images."""
    unreadable = {str(Path(p).relative_to(dataset.root)): err for p, err in decoded.errors.items()}
    return ValidationReport(
        counts=dataset.counts(),
        unreadable=unreadable,
        duplicates=find_cross_split_duplicates(dataset, decoded),
        warnings=list(dataset.warnings),
    )
