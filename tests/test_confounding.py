"""Tests for radiology.confounding: predicting the source collection from pixels."""

from radiology.cache import decode_files
from radiology.confounding import source_predictability
from radiology.datasets import Sample
from radiology.preprocess import PreprocessSpec
from tests.factories import png_bytes, xray


def _samples(tmp_path, marked: bool):
    samples = []
    for i in range(60):
        img = xray(i, size=(64, 64), level=90)
        source = "hospital-a" if i % 2 else "hospital-b"
        if marked and source == "hospital-a":
            img[:8, :8] = 255  # a burned-in corner marker
        path = tmp_path / f"{i}.png"
        path.write_bytes(png_bytes(img))
        samples.append(Sample(str(path), "covid" if i % 3 else "normal", f"p{i}", source))
    return samples


def test_marked_source_is_predictable_and_unmarked_is_not(tmp_path):
    """A corner marker on one source's images makes the source predictable; without it, about chance."""
    spec = PreprocessSpec(height=64, width=64)
    (tmp_path / "m").mkdir()
    (tmp_path / "p").mkdir()
    marked, plain = _samples(tmp_path / "m", True), _samples(tmp_path / "p", False)
    high = source_predictability(marked, decode_files([s.path for s in marked], spec))
    low = source_predictability(plain, decode_files([s.path for s in plain], spec))
    assert high["balanced_accuracy"] > 0.9 and high["chance"] == 0.5
    assert low["balanced_accuracy"] < 0.75
    assert set(high["sources"]) == {"hospital-a", "hospital-b"} and high["sources"]["hospital-a"]["n"] == 30


def test_one_source_gives_none(tmp_path):
    """With a single source there is nothing to predict."""
    samples = [Sample(s.path, s.label, s.group, "only") for s in _samples(tmp_path, False)]
    assert (
        source_predictability(samples, decode_files([s.path for s in samples], PreprocessSpec(height=64, width=64)))
        is None
    )


def test_unmeasured_reason_says_what_the_folder_lacks(tmp_path):
    """Without manifest.csv, with one lacking sources, with one source, or with small sources, the reason says so."""
    from radiology.confounding import unmeasured_reason

    spec = PreprocessSpec(height=64, width=64)
    samples = _samples(tmp_path, False)
    decoded = decode_files([s.path for s in samples], spec)
    assert unmeasured_reason(tmp_path, samples, decoded).startswith(
        "this folder has no manifest.csv with a source column"
    )
    (tmp_path / "manifest.csv").write_text("file,patient\n0.png,p0\n")
    unsourced = [Sample(s.path, s.label, s.group, None) for s in samples]
    assert unmeasured_reason(tmp_path, unsourced, decoded).startswith("manifest.csv gives no source")
    single = [Sample(s.path, s.label, s.group, "only") for s in samples]
    assert "comes from only: there is no second source" in unmeasured_reason(tmp_path, single, decoded)
    assert unmeasured_reason(tmp_path, samples[:10], decoded) == (
        "fewer than two sources have 20 or more readable images: hospital-b (5), hospital-a (5)"
    )
