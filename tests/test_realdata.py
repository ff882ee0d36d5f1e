"""Real-data suite on ../shared/data/cxr3 (select with -m realdata; skips when the folder is absent)."""

import pytest

from radiology.cache import load_or_decode
from radiology.datasets import discover
from radiology.leakage import validate
from radiology.preprocess import PreprocessSpec
from tests.conftest import SHARED_DATA

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is not on this machine"),
]


@pytest.fixture(scope="module")
def cxr3():
    return discover(SHARED_DATA)


@pytest.fixture(scope="module")
def decoded(cxr3, tmp_path_factory):
    return load_or_decode([s.path for s in cxr3.samples()], PreprocessSpec(), tmp_path_factory.mktemp("cache"))[0]


def test_discovery_matches_the_manifest(cxr3):
    """All 11,602 images are found in class folders, with the README's counts per class and sources."""
    import csv

    with open(SHARED_DATA / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    counts = cxr3.counts()
    per_class = {c: sum(counts[s][c] for s in counts) for c in ("covid", "normal", "pneumonia")}
    assert per_class == {"covid": 3081, "normal": 4281, "pneumonia": 4240}
    assert len(cxr3.samples()) == len(rows) == 11602
    assert cxr3.layout == "classes" and "patient group" in cxr3.split_method and not cxr3.warnings
    assert sum(s.source == "raddb" for s in cxr3.samples() if s.label == "covid") == 2663


def test_every_file_decodes(decoded):
    """Every image of cxr3 decodes without error."""
    assert decoded.ok.all(), list(decoded.errors.items())[:5]
    assert decoded.sizes.min() >= 64


def test_patient_split_has_no_leakage(cxr3, decoded):
    """The group split leaves no exact or near-duplicate image in two splits, and no group in two splits."""
    report = validate(cxr3, decoded)
    assert report.summary()["exact_duplicates_across_splits"] == 0
    assert report.summary()["near_duplicates_across_splits"] == 0
    where = {}
    for split, samples in cxr3.splits.items():
        for s in samples:
            if s.group:
                assert where.setdefault(s.group, split) == split


def test_source_is_predictable_from_pixels(cxr3, decoded):
    """The paediatric Kermany films are recognisable from 32x32 thumbnails: the shortcut the README warns of."""
    from radiology.confounding import source_predictability

    found = source_predictability(cxr3.samples(), decoded)
    assert found["balanced_accuracy"] > 2 * found["chance"]
    assert found["sources"]["kermany"]["recall"] > 0.9
