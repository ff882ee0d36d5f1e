"""Tests of radiology.splits: one path from a dataset folder to its checked splits."""

import pytest

from radiology.datasets import discover
from radiology.errors import DatasetError
from radiology.splits import check_splits, training_overlap, training_split


def test_check_splits_decodes_and_validates_every_sample(dataset_dir, tmp_path):
    """Every sample is decoded, the report counts them, and a second call reads the decode cache."""
    (dataset_dir / "normal" / "broken.png").write_bytes(b"not an image")
    checked = check_splits(dataset_dir, seed=3, cache_dir=tmp_path / "cache")
    paths = sorted(s.path for s in checked.dataset.samples())
    assert checked.decoded.paths == paths and not checked.from_cache
    assert checked.report.total == 31
    summary = checked.summary()
    assert summary["unreadable"] == {
        "normal/broken.png": checked.decoded.errors[str(dataset_dir / "normal" / "broken.png")]
    }
    assert summary["summary"]["images"] == 31 and summary["layout"] == "classes"
    assert summary["fingerprint"] == checked.dataset.fingerprint()
    assert check_splits(dataset_dir, seed=3, cache_dir=tmp_path / "cache").from_cache


def test_check_splits_uses_the_seed_and_fractions_given(dataset_dir):
    """The splits are the ones discover makes with the same seed and fractions, not seed 42's."""
    fractions = (0.5, 0.25, 0.25)
    checked = check_splits(dataset_dir, seed=7, fractions=fractions)
    expected = discover(dataset_dir, seed=7, fractions=fractions)
    assert checked.dataset.fingerprint() == expected.fingerprint()
    assert checked.dataset.fingerprint() != discover(dataset_dir).fingerprint()
    assert len(checked.dataset.splits["test"]) == len(expected.splits["test"]) > 3


def test_check_splits_refuses_bad_fractions(dataset_dir):
    """Fractions that do not sum to 1 are refused, naming them."""
    with pytest.raises(DatasetError, match=r"summing to 1, got \(0\.5, 0\.5, 0\.5\)"):
        check_splits(dataset_dir, fractions=(0.5, 0.5, 0.5))


def test_training_split_defaults_to_the_models_own():
    """The model's seed and fractions are used unless a seed is given; an empty config gives the defaults."""
    config = {"seed": 7, "fractions": [0.6, 0.2, 0.2]}
    assert training_split(config) == (7, (0.6, 0.2, 0.2))
    assert training_split(config, seed=3) == (3, (0.6, 0.2, 0.2))
    assert training_split({}) == (42, (0.7, 0.2, 0.1))


def test_training_overlap_says_what_each_split_means(dataset_dir):
    """Equal fingerprints: only test is unseen; different ones: may overlap; none: cannot be known."""
    ds = discover(dataset_dir, seed=7)
    assert training_overlap(ds.fingerprint(), ds, "test") == (
        True,
        "this is the model's own dataset, split as in training: only the test split is unseen",
    )
    matches, message = training_overlap(ds.fingerprint(), ds, "all")
    assert matches is True and "all of it includes images used in training" in message
    matches, message = training_overlap(discover(dataset_dir).fingerprint(), ds, "test")
    assert matches is False and "differs" in message
    assert training_overlap(None, ds, "test")[0] is None
