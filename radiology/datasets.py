"""Dataset discovery and splitting: point at a folder, get train/val/test back.

Two layouts are accepted:

* split folders ``train``/``val``/``test`` (``validation`` and ``valid`` too), each holding class folders;
* class folders only, split here in a stratified, seeded way that keeps each patient in one split
  when a manifest CSV gives patient or group ids.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radiology import CLASS_NAMES
from radiology.errors import DatasetError
from radiology.images import IMAGE_SUFFIXES

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
CLASS_ALIASES = {
    "covid": "covid",
    "covid19": "covid",
    "normal": "normal",
    "pneumonia": "pneumonia",
    "viralpneumonia": "pneumonia",
    "bacterialpneumonia": "pneumonia",
    "bacterial": "pneumonia",
    "viral": "pneumonia",
}
DEFAULT_FRACTIONS = (0.7, 0.2, 0.1)
DEFAULT_SEED = 42  # the split seed of every split made without one (training, evaluation, the pages)


@dataclass(frozen=True)
class Sample:
    """One labelled image file.

    Attributes:
        path: absolute path of the file.
        label: class name, one of ``CLASS_NAMES``.
        group: patient or group id from a manifest, or None.
        source: the collection the image came from, from a manifest, or None.
    """

    path: str
    label: str
    group: str | None = None
    source: str | None = None


@dataclass
class Dataset:
    """A dataset split into train/val/test.

    Attributes:
        root: the dataset folder.
        layout: ``"splits"`` for split folders, ``"classes"`` for class folders split here.
        splits: samples per split name.
        warnings: what was ignored or assumed, for the user to read.
        split_method: how the splits were made, in words.
    """

    root: Path
    layout: str
    splits: dict[str, list[Sample]]
    warnings: list[str] = field(default_factory=list)
    split_method: str = ""

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names in model output order."""
        return CLASS_NAMES

    def samples(self) -> list[Sample]:
        """Every sample of every split, in split order."""
        return [s for name in SPLITS for s in self.splits.get(name, [])]

    def counts(self) -> dict[str, dict[str, int]]:
        """Returns the number of images per split and class, zeros included."""
        return {name: {c: sum(s.label == c for s in self.splits.get(name, [])) for c in CLASS_NAMES} for name in SPLITS}

    def fingerprint(self) -> str:
        """A short hash of the file list, labels and split assignment."""
        h = hashlib.sha256()
        for name in SPLITS:
            for s in self.splits.get(name, []):
                h.update(f"{name}\0{Path(s.path).relative_to(self.root)}\0{s.label}\n".encode())
        return h.hexdigest()[:16]


def resolve_in_root(path: str | Path, root: str | Path) -> Path:
    """Resolves a user-given dataset path and checks that it stays inside the data root.

    Args:
        path: absolute, or relative to ``root``.
        root: the configured data root.

    Returns:
        the resolved absolute path, symlinks followed.

    Raises:
        DatasetError: the path uses ``..``, or resolves (through symlinks too) outside ``root``.
    """
    root = Path(root).resolve()
    given = Path(str(path).strip())
    if ".." in given.parts:
        raise DatasetError(f"'..' is not allowed in a dataset path: {path}")
    resolved = (given if given.is_absolute() else root / given).resolve()
    if resolved != root and root not in resolved.parents:
        raise DatasetError(f"{path} is outside the data root {root}")
    return resolved


def class_for_folder(name: str) -> str | None:
    """Maps a folder name to a class name, case-insensitively and through aliases, or None."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return CLASS_ALIASES.get(key)


def _list_images(folder: Path) -> list[Path]:
    # The Kaggle COVID-19 Radiography Database keeps images/ beside masks/ in each class folder.
    if (folder / "images").is_dir():
        folder = folder / "images"
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and (p.suffix.lower() in IMAGE_SUFFIXES or p.suffix == "")
        and "masks" not in p.relative_to(folder).parts
    )


def _class_folders(folder: Path, warnings: list[str]) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = defaultdict(list)
    unknown = []
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = class_for_folder(child.name)
        if label is None:
            unknown.append(child.name)
        else:
            files[label].extend(_list_images(child))
    if unknown:
        where = folder.name
        warnings.append(f"ignored folders in {where} that match no class: {', '.join(unknown)}")
    return files


def read_manifest(root: Path) -> dict[str, dict[str, str]]:
    """Reads ``manifest.csv`` in ``root``, if any, keyed by the file's path relative to ``root``.

    Returns:
        a dict from relative path to its row; empty without a manifest.

    Raises:
        DatasetError: the manifest exists but has no ``file`` column.
    """
    path = root / "manifest.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "file" not in reader.fieldnames:
            raise DatasetError(f"{path.name} needs a 'file' column, found: {reader.fieldnames}")
        return {row["file"].replace("\\", "/"): row for row in reader}


def discover(root: str | Path, *, fractions=DEFAULT_FRACTIONS, seed: int = DEFAULT_SEED) -> Dataset:
    """Finds the images of a dataset folder and splits them.

    Args:
        root: the dataset folder, in either accepted layout.
        fractions: train/val/test fractions for a class-folders layout.
        seed: seed of the split for a class-folders layout.

    Returns:
        the dataset with its splits and warnings.

    Raises:
        DatasetError: the folder does not exist or holds no class folder with images.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise DatasetError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    manifest = read_manifest(root)
    split_dirs = _split_folders(root)
    if split_dirs:
        dataset = _discover_split_folders(root, split_dirs, manifest, fractions=fractions, seed=seed)
    else:
        dataset = _discover_class_folders(root, manifest, fractions=fractions, seed=seed)
    _check(dataset)
    return dataset


def _sample(path: Path, label: str, root: Path, manifest: dict[str, dict[str, str]]) -> Sample:
    """A sample with the group and source its manifest row gives, if any."""
    row = manifest.get(path.relative_to(root).as_posix(), {})
    group = row.get("group_id") or row.get("patient_id") or None
    return Sample(str(path), label, group, row.get("source") or None)


def _split_folders(root: Path) -> dict[str, Path]:
    """The split folders directly in ``root`` by split name; the first alias found wins."""
    split_dirs: dict[str, Path] = {}
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        split = SPLIT_ALIASES.get(child.name.lower())
        if split and split not in split_dirs:
            split_dirs[split] = child
    return split_dirs


def _discover_split_folders(
    root: Path, split_dirs: dict[str, Path], manifest: dict, *, fractions, seed: int
) -> Dataset:
    """The split-folders layout: splits as given, a missing val or test carved out of train."""
    warnings: list[str] = []
    splits = {}
    for split, folder in split_dirs.items():
        files = _class_folders(folder, warnings)
        splits[split] = [_sample(p, label, root, manifest) for label in CLASS_NAMES for p in files.get(label, [])]
    missing = [s for s in SPLITS if s not in splits]
    method = "split folders as given"
    if missing:
        # Carve what is missing out of train, so the user still gets a validation and a test set.
        pool = splits.pop("train", [])
        if not pool:
            raise DatasetError(f"split folders found ({', '.join(split_dirs)}) but no train folder with images")
        wanted = {"train": 1.0, "val": fractions[1], "test": fractions[2]}
        parts = [wanted[s] if s in missing or s == "train" else 0.0 for s in SPLITS]
        parts[0] = 1 - sum(parts[1:])
        carved = split_samples(pool, fractions=tuple(parts), seed=seed)
        for s in ["train", *missing]:
            splits[s] = carved[s]
        warnings.append(f"no {' or '.join(missing)} folder: carved {' and '.join(missing)} out of train")
        method += f"; {', '.join(missing)} carved out of train (seed {seed})"
    return Dataset(root, "splits", {s: splits.get(s, []) for s in SPLITS}, warnings, method)


def _discover_class_folders(root: Path, manifest: dict, *, fractions, seed: int) -> Dataset:
    """The class-folders layout: a stratified, seeded split that keeps each manifest group in one split."""
    warnings: list[str] = []
    files = _class_folders(root, warnings)
    pool = [_sample(p, label, root, manifest) for label in CLASS_NAMES for p in files.get(label, [])]
    if not pool:
        raise DatasetError(
            f"no class folders with images in {root}: expected covid/normal/pneumonia folders, "
            "optionally inside train/val/test folders"
        )
    grouped = any(s.group for s in pool)
    splits = split_samples(pool, fractions=fractions, seed=seed)
    method = f"stratified {fractions[0]:.0%}/{fractions[1]:.0%}/{fractions[2]:.0%} split, seed {seed}" + (
        ", each patient group in one split (manifest.csv)" if grouped else ""
    )
    return Dataset(root, "classes", splits, warnings, method)


def _check(dataset: Dataset) -> None:
    """Drops files that escape the root and warns about empty classes and splits, whatever the layout.

    Raises:
        DatasetError: no training images remain.
    """
    root, warnings = dataset.root, dataset.warnings
    outside = _drop_outside(dataset, root)
    if outside:
        warnings.append(f"ignored {outside} files that are symlinks to outside {root}")
    empty = [c for c in CLASS_NAMES if not any(s.label == c for s in dataset.samples())]
    if empty:
        warnings.append(f"no images for class: {', '.join(empty)}")
    if not dataset.splits["train"]:
        raise DatasetError(f"no training images found in {root}")
    for name in ("val", "test"):
        if not dataset.splits[name]:
            warnings.append(
                f"the {name} split is empty: add images, or a run cannot be "
                + ("validated" if name == "val" else "evaluated")
            )


def _drop_outside(dataset: Dataset, root: Path) -> int:
    """Removes samples whose real path lies outside ``root``; returns how many."""
    dropped = 0
    for name, samples in dataset.splits.items():
        kept = [s for s in samples if root in Path(s.path).resolve().parents]
        dropped += len(samples) - len(kept)
        dataset.splits[name] = kept
    return dropped


def split_samples(
    samples: list[Sample], *, fractions=DEFAULT_FRACTIONS, seed: int = DEFAULT_SEED
) -> dict[str, list[Sample]]:
    """Splits samples stratified by class, keeping each group in one split.

    Groups are assigned whole, per class of their first sample, each to the split that is furthest
    below its target share. Samples without a group are groups of their own.

    Args:
        samples: the samples to split.
        fractions: train/val/test fractions.
        seed: seed of the shuffle.

    Returns:
        samples per split name, in the input order within each split.
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[s.group or f"\0{i}"].append(i)
    by_class: dict[str, list[str]] = defaultdict(list)
    for key, members in groups.items():
        by_class[samples[members[0]].label].append(key)
    target = np.asarray(fractions, dtype=float)
    assignment = np.zeros(len(samples), dtype=int)
    for label in sorted(by_class):
        keys = by_class[label]
        order = rng.permutation(len(keys))
        total = sum(len(groups[k]) for k in keys)
        filled = np.zeros(3)
        for j in order:
            members = groups[keys[j]]
            deficit = target * total - filled
            split = int(np.argmax(deficit))
            filled[split] += len(members)
            assignment[members] = split
    return {name: [s for s, a in zip(samples, assignment) if a == k] for k, name in enumerate(SPLITS)}


def source_counts(dataset: Dataset) -> dict[str, Counter]:
    """Counts images per source collection for each class, for datasets with a manifest."""
    out: dict[str, Counter] = {c: Counter() for c in CLASS_NAMES}
    for s in dataset.samples():
        out[s.label][s.source or "unknown"] += 1
    return out
