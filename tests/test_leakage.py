"""Tests for radiology.leakage: counts, unreadable files and duplicates across splits."""

import shutil

from radiology.cache import load_or_decode
from radiology.datasets import discover
from radiology.leakage import validate
from radiology.preprocess import PreprocessSpec
from tests.factories import make_dataset


def test_exact_and_near_duplicates_across_splits_are_reported(tmp_path):
    """A file copied from train into test is an exact duplicate; a re-encoded copy is a near one."""
    from PIL import Image

    make_dataset(tmp_path, per_class=4, splits=True)
    src = tmp_path / "train" / "covid" / "covid_0.png"
    shutil.copy(src, tmp_path / "test" / "covid" / "copy.png")
    Image.open(src).save(tmp_path / "val" / "covid" / "reencoded.jpg", quality=85)
    (tmp_path / "test" / "normal" / "bad.png").write_bytes(b"nope")
    ds = discover(tmp_path)
    decoded, _ = load_or_decode([s.path for s in ds.samples()], PreprocessSpec(height=32, width=32), None)
    report = validate(ds, decoded)
    kinds = {(d.split_a, d.split_b, d.kind) for d in report.duplicates}
    assert ("train", "test", "exact") in kinds and ("train", "val", "near") in kinds
    assert report.unreadable == {
        "test/normal/bad.png": "not an image: the content is no PNG, JPEG, BMP, TIFF, WebP, GIF or DICOM"
    }
    summary = report.summary()
    assert summary["unreadable"] == 1 and summary["exact_duplicates_across_splits"] >= 1
    assert summary["images"] == 4 * 9 + 3


def test_distinct_images_give_no_duplicates(tmp_path):
    """A dataset of distinct images reports no leakage."""
    make_dataset(tmp_path, per_class=6)
    ds = discover(tmp_path)
    decoded, _ = load_or_decode([s.path for s in ds.samples()], PreprocessSpec(height=32, width=32), None)
    assert validate(ds, decoded).duplicates == []
