"""Tests for radiology.datasets: layouts, class aliases, manifests and splits."""

import csv

import pytest

from radiology.datasets import Sample, class_for_folder, discover, split_samples
from radiology.errors import DatasetError
from tests.factories import make_dataset, png_bytes, xray


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("COVID", "covid"),
        ("COVID-19", "covid"),
        ("covid19", "covid"),
        ("NORMAL", "normal"),
        ("PNEUMONIA", "pneumonia"),
        ("Viral Pneumonia", "pneumonia"),
        ("bacterial", "pneumonia"),
        ("viral", "pneumonia"),
        ("Lung_Opacity", None),
    ],
)
def test_class_aliases(name, label):
    """Folder names map to classes case-insensitively through aliases."""
    assert class_for_folder(name) == label


def test_class_folders_are_split_stratified_and_seeded(tmp_path):
    """Class folders are split 70/20/10 per class, the same way for the same seed."""
    make_dataset(tmp_path, per_class=20)
    a, b = discover(tmp_path, seed=1), discover(tmp_path, seed=1)
    counts = a.counts()
    assert all(counts["train"][c] == 14 and counts["val"][c] == 4 and counts["test"][c] == 2 for c in counts["train"])
    assert [s.path for s in a.splits["test"]] == [s.path for s in b.splits["test"]]
    assert a.layout == "classes" and a.fingerprint() == b.fingerprint()
    assert [s.path for s in discover(tmp_path, seed=2).splits["test"]] != [s.path for s in a.splits["test"]]


def test_split_folders_with_aliases_and_unknown_folders(tmp_path):
    """train/validation/test folders are read as given; unknown class folders are warned about."""
    make_dataset(tmp_path, per_class=3, splits=True)
    (tmp_path / "train" / "Lung_Opacity").mkdir()
    (tmp_path / "train" / "Lung_Opacity" / "a.png").write_bytes(png_bytes(xray()))
    ds = discover(tmp_path)
    assert ds.layout == "splits"
    assert ds.counts()["train"] == {"covid": 3, "normal": 3, "pneumonia": 3}
    assert any("Lung_Opacity" in w for w in ds.warnings)


def test_missing_val_folder_is_carved_from_train(tmp_path):
    """With only train and test folders, a validation split is carved out of train."""
    make_dataset(tmp_path, per_class=10, splits=True)
    import shutil

    shutil.rmtree(tmp_path / "val")
    ds = discover(tmp_path)
    assert sum(ds.counts()["val"].values()) > 0
    assert sum(ds.counts()["test"].values()) == 30
    assert any("carved" in w for w in ds.warnings)


def test_kaggle_radiography_layout_uses_images_not_masks(tmp_path):
    """Class folders with images/ and masks/ (the Kaggle COVID-19 Radiography Database) use images/ only."""
    for name in ("COVID", "Normal", "Viral Pneumonia"):
        for sub in ("images", "masks"):
            (tmp_path / name / sub).mkdir(parents=True)
            for i in range(5):
                (tmp_path / name / sub / f"{i}.png").write_bytes(png_bytes(xray(i)))
    ds = discover(tmp_path)
    assert sum(sum(c.values()) for c in ds.counts().values()) == 15
    assert all("masks" not in s.path for s in ds.samples())


def test_manifest_groups_keep_patients_in_one_split(tmp_path):
    """Images of one patient group, from manifest.csv, never straddle two splits."""
    make_dataset(tmp_path, per_class=12)
    rows = []
    for f in sorted(tmp_path.rglob("*.png")):
        rel = f.relative_to(tmp_path).as_posix()
        i = int(f.stem.split("_")[-1])
        rows.append(
            {
                "file": rel,
                "label": f.parent.name,
                "source": "synthetic",
                "patient_id": "",
                "group_id": f"{f.parent.name}-{i // 3}",
            }
        )
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ds = discover(tmp_path, seed=3)
    where = {}
    for split, samples in ds.splits.items():
        for s in samples:
            assert where.setdefault(s.group, split) == split
    assert "patient group" in ds.split_method and all(s.source == "synthetic" for s in ds.samples())


def test_split_samples_groups_go_whole():
    """split_samples assigns each group to exactly one split."""
    samples = [Sample(f"/x/{i}", "covid", f"g{i // 4}") for i in range(40)]
    splits = split_samples(samples, seed=0)
    groups = {name: {s.group for s in v} for name, v in splits.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])


def test_errors(tmp_path):
    """A missing folder or one without class folders raises DatasetError."""
    with pytest.raises(DatasetError, match="not found"):
        discover(tmp_path / "nope")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        discover(tmp_path)
    with pytest.raises(DatasetError, match="fractions"):
        discover(tmp_path, fractions=(0.5, 0.5, 0.5))


def test_paths_stay_inside_the_data_root(tmp_path):
    """'..', absolute paths elsewhere and symlinks out of the root are refused."""
    from radiology.datasets import resolve_in_root

    root = tmp_path / "root"
    (root / "ds").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert resolve_in_root("ds", root) == (root / "ds").resolve()
    assert resolve_in_root(str(root / "ds"), root) == (root / "ds").resolve()
    for bad, match in (("../secret", "not allowed"), (str(outside), "outside the data root"), ("link", "outside")):
        with pytest.raises(DatasetError, match=match):
            resolve_in_root(bad, root)


def test_symlinked_files_out_of_the_dataset_are_ignored(tmp_path):
    """A class folder entry that links to a file outside the dataset is skipped with a warning."""
    make_dataset(tmp_path / "ds", per_class=3)
    (tmp_path / "private.png").write_bytes(png_bytes(xray()))
    (tmp_path / "ds" / "covid" / "sneaky.png").symlink_to(tmp_path / "private.png")
    ds = discover(tmp_path / "ds")
    assert not any("sneaky" in s.path for s in ds.samples())
    assert any("symlinks to outside" in w for w in ds.warnings)
