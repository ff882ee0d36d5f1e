"""Tests for radiology.ood: input checks, the Mahalanobis statistics, their storage in the model file, the CLI."""

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from radiology import ood
from radiology.errors import ModelLoadError
from radiology.images import decode_with_colour
from radiology.model import load_model
from radiology.preprocess import PreprocessSpec, resize
from tests.factories import png_bytes, xray

ROOT = Path(__file__).resolve().parent.parent
SPEC = PreprocessSpec()


def _photo_bytes() -> bytes:
    """scikit-learn's sample photograph of a Chinese temple, as JPEG."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    buf = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buf, format="JPEG")
    return buf.getvalue()


def _reason(gray, colour=None):
    return ood.input_reason(gray.shape, resize(gray, SPEC), colourfulness=colour)


def test_colour_photograph_is_flagged_by_the_input_check():
    """A colour photograph fails the colour check, whatever the model; its grayscale decode alone would not show it."""
    gray, colour = decode_with_colour(_photo_bytes())
    assert colour > 30
    result = ood.assess(gray, resize(gray, SPEC), None, None, colourfulness=colour)
    assert result.flag and result.reason.startswith("colour image: colourfulness")
    assert result.message.startswith("This does not look like a frontal chest X-ray (colour image")


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.full((300, 300), 128, np.uint8), "constant"),
        ((np.random.default_rng(0).random((400, 400)) * 255).astype(np.uint8), "looks like noise"),
        (xray(0, size=(60, 60)), "too small: 60x60 pixels"),
        (xray(0, size=(150, 600)), "aspect ratio 4.0:1"),
        (np.pad(xray(0, size=(40, 40)), 200, constant_values=255), "mostly blank"),
    ],
)
def test_input_checks_name_what_is_wrong(image, expected):
    """Flat, noisy, tiny, elongated and blank images are flagged before the model, with the measured value."""
    assert _reason(image).startswith(expected)


def test_an_xray_passes_the_input_checks():
    """A synthetic chest film passes every input check, also as RGB without colour."""
    assert _reason(xray(1, size=(300, 280)), 0.0) is None
    rgb = np.repeat(xray(1, size=(300, 280))[..., None], 3, axis=-1)
    gray, colour = decode_with_colour(png_bytes(rgb))
    assert colour == 0.0 and _reason(gray, colour) is None


def test_dicom_header_flags_other_modalities_and_lateral_views():
    """A CT slice or a lateral film is flagged by its DICOM header before any pixel check; CR and DX frontals pass."""
    from pydicom.data import get_testdata_file

    from radiology.images import DicomHeader, dicom_header

    ct = get_testdata_file("CT_small.dcm")
    gray = decode_with_colour(ct)[0]
    result = ood.assess(gray, resize(gray, SPEC), None, None, colourfulness=0.0, header=dicom_header(ct))
    assert result.flag and result.reason.startswith("DICOM header says CT")
    assert ood.header_reason(DicomHeader("DX", "LL")).startswith("DICOM header says view position LL: a lateral")
    assert ood.header_reason(DicomHeader("CR", "PA")) is None
    assert ood.header_reason(DicomHeader(None, None)) is None
    assert ood.header_reason(None) is None
    film = xray(1, size=(300, 280))
    assert _reason(film) is None
    assert ood.input_reason(film.shape, resize(film, SPEC), header=DicomHeader("MR", None)).startswith(
        "DICOM header says MR"
    )


def test_fit_stats_passes_the_percentile_and_flags_far_features():
    """On Gaussian features the threshold lets 99% of held-out points pass and flags a far-away point."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 16))
    labels = rng.integers(0, 3, 3000)
    feats = centres[labels] + rng.normal(0, 1, (3000, 16))
    stats = ood.fit_stats(feats[:2000], labels[:2000], feats[2000:], layer="pool")
    assert stats.threshold_split == "val" and stats.n_fit == 2000 and stats.n_threshold == 1000
    assert np.mean(stats.scores(feats[2000:]) <= 1) == pytest.approx(0.99, abs=0.002)
    assert stats.scores(centres[:1] + 8)[0] > 1
    # Mahalanobis, not Euclidean: a stretched dimension counts less
    stretched = feats * np.r_[10.0, np.ones(15)]
    s2 = ood.fit_stats(stretched[:2000], labels[:2000], stretched[2000:], layer="pool")
    step = np.zeros(16)
    step[0] = 8
    assert s2.scores(s2.means[:1] + step)[0] < 1 < s2.scores(s2.means[:1] + np.roll(step, 1))[0]
    with pytest.raises(ValueError, match="expected at least 2 training features"):
        ood.fit_stats(feats[:1], labels[:1], None, layer="pool")
    with pytest.raises(ValueError, match="percentile must be in"):
        ood.fit_stats(feats, labels, None, layer="pool", percentile=0)


def _upright_film(seed: int) -> np.ndarray:
    """A synthetic film with a top and a bottom: lungs of random size, a bright belly below the diaphragm, at 64 px."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    img = np.full((64, 64), 170.0) + rng.normal(0, 8, (64, 64))
    top, bottom = rng.uniform(0.12, 0.22), rng.uniform(0.62, 0.72)
    for cx in (0.3 + rng.normal(0, 0.02), 0.7 + rng.normal(0, 0.02)):
        lung = ((xx - cx) / 0.15) ** 2 + ((yy - (top + bottom) / 2) / ((bottom - top) / 2)) ** 2 < 1
        img[lung & (yy < bottom)] = rng.uniform(60, 90)
    img[yy > bottom + 0.05] += 50
    return np.clip(img, 0, 255).astype(np.uint8)


def test_pixel_checks_flag_rotated_and_upside_down_films():
    """The thumbnail checks, fitted on upright films, pass 99% of held-out upright ones and flag turned ones."""
    films = np.stack([_upright_film(i) for i in range(700)])
    feats = np.random.default_rng(0).normal(size=(700, 8))
    labels = np.arange(700) % 3
    stats = ood.fit_stats(
        feats[:500], labels[:500], feats[500:], layer="pool", train_pixels=films[:500], threshold_pixels=films[500:]
    )
    held_out = stats.all_scores(feats[500:], films[500:])
    assert set(held_out) == {"features", "layout", "orientation"}
    passing = np.max(list(held_out.values()), axis=0) <= 1
    assert passing.mean() == pytest.approx(0.99, abs=0.006)  # the thresholds are set together
    assert np.mean(held_out["features"] <= 1) > 0.99  # each check alone passes more
    for turned in (films[500:, ::-1], np.rot90(films[500:], 1, (1, 2)), np.rot90(films[500:], 3, (1, 2))):
        assert np.mean(stats.pixels.scores(turned)["orientation"] > 1) > 0.95
    mirrored = films[500:, :, ::-1]  # left-right mirrored films are upright: training flips them too
    assert np.mean(stats.pixels.scores(mirrored)["orientation"] <= 1) > 0.9
    big = np.kron(films[500, ::-1], np.ones((4, 4), np.uint8))  # as uploaded, 256 px
    upside_down = ood.assess(big, films[500, ::-1], feats[500], stats)
    assert upside_down.flag and upside_down.reason == "it looks rotated or upside down" and upside_down.score > 1
    back = ood.FeatureStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    for k, v in back.all_scores(feats[500:], films[500:]).items():
        assert np.allclose(v, held_out[k], rtol=1e-5)


def test_a_smooth_gradient_is_flagged_by_the_input_check():
    """A gradient has no fine detail, unlike any film; a synthetic film passes."""
    yy, xx = np.mgrid[0:400, 0:400] / 399.0
    for gradient in (xx, (xx + yy) / 2, np.hypot(xx - 0.5, yy - 0.5)):
        assert _reason((gradient / gradient.max() * 255).astype(np.uint8)).startswith("too smooth, like a gradient")
    assert _reason(xray(3, size=(400, 400))) is None


def test_malformed_statistics_are_refused():
    """Statistics that are not what to_dict writes raise ModelLoadError naming the problem."""
    stats = ood.fit_stats(np.random.default_rng(0).normal(size=(50, 4)), np.arange(50) % 2, None, layer="pool")
    data = stats.to_dict()
    assert ood.FeatureStats.from_dict(json.loads(json.dumps(data))).threshold == stats.threshold
    with pytest.raises(ModelLoadError, match="unknown out-of-distribution method 'knn'"):
        ood.FeatureStats.from_dict({**data, "method": "knn"})
    with pytest.raises(ModelLoadError, match="inconsistent out-of-distribution statistics"):
        ood.FeatureStats.from_dict({**data, "precision": data["means"]})
    with pytest.raises(ModelLoadError, match="malformed"):
        ood.FeatureStats.from_dict({k: v for k, v in data.items() if k != "threshold"})
    films = np.stack([_upright_film(i) for i in range(50)])
    with_pixels = ood.fit_stats(
        stats.means[np.arange(50) % 2], np.arange(50) % 2, None, layer="pool", train_pixels=films
    )
    pixels = with_pixels.to_dict()["pixels"]
    with pytest.raises(ModelLoadError, match="inconsistent pixel statistics"):
        ood.FeatureStats.from_dict({**data, "pixels": {**pixels, "side": 8}})
    with pytest.raises(ModelLoadError, match="malformed"):
        ood.FeatureStats.from_dict({**data, "pixels": {k: v for k, v in pixels.items() if k != "mean"}})


def test_training_stores_the_statistics_in_the_model_file(tiny_run, tiny_model):
    """A training run fits the gate on its train split, sets the threshold on val, and the file carries it."""
    stats = ood.load_stats(tiny_model.metadata)
    assert stats is not None and stats.layer == "global_max_pool" and stats.means.shape == (3, 512)
    assert stats.pixels is not None and stats.pixels.mean.shape == (256,)
    assert stats.threshold_split == "val" and stats.n_threshold > 0 and stats.percentile == 99
    with zipfile.ZipFile(tiny_run / "model.keras") as zf:
        assert json.loads(zf.read("radiology.json"))["ood"]["method"] == "mahalanobis"
    gate = json.loads((tiny_run / "metrics.json").read_text())["ood"]
    assert gate["available"] and gate["n"] == json.loads((tiny_run / "metrics.json").read_text())["n"]
    assert {"in_distribution", "ood_score"} <= set(next(iter(_csv_rows(tiny_run / "predictions.csv"))))


def _csv_rows(path):
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_statistics_round_trip_through_save_and_load(tiny_model, tmp_path):
    """Stored statistics come back identical after a save and load, also in a float16 file, and score the same."""
    stats = ood.load_stats(tiny_model.metadata)
    feats = np.random.default_rng(0).random((5, 512)).astype(np.float32)
    for dtype in ("float32", "float16"):
        from radiology.model import save_model

        path = save_model(tiny_model.model, tmp_path / f"m-{dtype}.keras", tiny_model.metadata, weights_dtype=dtype)
        back = ood.load_stats(load_model(path).metadata)
        assert np.array_equal(back.means, stats.means) and np.array_equal(back.precision, stats.precision)
        assert back.threshold == stats.threshold and np.array_equal(back.scores(feats), stats.scores(feats))


def test_a_model_without_statistics_says_unavailable(tiny_model, tmp_path):
    """An older model still predicts and runs the input checks, and says the feature check is unavailable."""
    from dataclasses import replace

    from radiology.model import save_model

    path = save_model(tiny_model.model, tmp_path / "old.keras", replace(tiny_model.metadata, ood=None))
    old = load_model(path)
    assert ood.load_stats(old.metadata) is None
    probs, result = ood.predict_checked(old, xray(1, size=(300, 280)), colourfulness=0.0)
    assert probs.shape == (3,) and result == ood.OODResult(False, None, ood.UNAVAILABLE)
    gray, colour = decode_with_colour(_photo_bytes())
    assert ood.predict_checked(old, gray, colourfulness=colour)[1].flag


def test_dicom_header_flags_a_ct_slice_with_and_without_statistics(tiny_model, tmp_path):
    """pydicom's CT_small.dcm is flagged for its modality by a model with gate statistics and by one without."""
    from dataclasses import replace

    from pydicom.data import get_testdata_file

    from radiology.images import dicom_header
    from radiology.model import save_model

    old = load_model(save_model(tiny_model.model, tmp_path / "old.keras", replace(tiny_model.metadata, ood=None)))
    ct = get_testdata_file("CT_small.dcm")
    gray, colour = decode_with_colour(ct)
    for model in (tiny_model, old):
        _, result = ood.predict_checked(
            model, gray, colourfulness=colour, stats=ood.load_stats(model.metadata), header=dicom_header(ct)
        )
        assert result.flag and result.reason.startswith("DICOM header says CT"), result


def test_gate_uses_the_prediction_features(tiny_model):
    """predict_checked's probabilities equal the plain prediction's and its score is that of its own features."""
    from radiology.model import predict_images

    stats = ood.load_stats(tiny_model.metadata)
    gray = xray(2, size=(256, 256))
    probs, result = ood.predict_checked(tiny_model, gray, colourfulness=0.0, stats=stats)
    assert np.allclose(probs, predict_images(tiny_model, [gray])[0], atol=1e-5)
    _, feats = ood.predict_with_features(tiny_model, resize(gray, tiny_model.metadata.preprocess)[None])
    scores = stats.all_scores(feats, resize(gray, tiny_model.metadata.preprocess)[None])
    assert scores["features"][0] == pytest.approx(float(stats.scores(feats)[0]))
    assert result.score == pytest.approx(max(float(v[0]) for v in scores.values()))
    assert result.flag == (result.score > 1)


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_predict_cli_reports_the_gate(tiny_run, tmp_path):
    """predict --json carries ood {flag, score, reason} per file; the text output marks the flagged file."""
    photo = tmp_path / "temple.jpg"
    photo.write_bytes(_photo_bytes())
    film = tmp_path / "film.png"
    film.write_bytes(png_bytes(xray(1, size=(300, 280))))
    out = _python("-m", "radiology", "predict", str(photo), str(film), "--model", str(tiny_run), "--json")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert set(lines[0]["ood"]) == {"flag", "score", "reason"}
    assert lines[0]["ood"]["flag"] is True and lines[0]["ood"]["reason"].startswith("colour image")
    assert isinstance(lines[0]["ood"]["score"], float) and isinstance(lines[1]["ood"]["flag"], bool)
    text = _python("-m", "radiology", "predict", str(photo), "--model", str(tiny_run))
    assert "OUT OF DISTRIBUTION: This does not look like a frontal chest X-ray (colour image" in text.stdout


def test_fit_ood_cli_fits_an_older_run(tiny_run, tmp_path):
    """fit-ood fits a run saved without statistics on its own split, stores them, and stores its test-split
    numbers as an evaluation of their own instead of merging them into the training-time metrics.json."""
    from dataclasses import replace

    from radiology.model import save_model
    from radiology.registry import load_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    old = load_model(run / "model.keras")
    save_model(old.model, run / "model.keras", replace(old.metadata, ood=None))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("ood")
    (run / "metrics.json").write_text(json.dumps(metrics))
    data = json.loads((run / "config.json").read_text())["data"]
    out = _python("-m", "radiology", "fit-ood", "--model", str(run), "--data", data)
    assert out.returncode == 0, out.stderr
    assert "th percentile of" in out.stdout and "on the test split" in out.stdout
    fitted = ood.load_stats(load_model(run / "model.keras").metadata)
    assert np.allclose(fitted.means, ood.load_stats(old.metadata).means, atol=1e-4)
    assert "ood" not in json.loads((run / "metrics.json").read_text())  # the training-time evaluation is kept
    (record,) = [e for e in load_run(run).evaluations() if e.id != "training"]
    assert record.metrics["source"] == "fit-ood" and record.metrics["ood"]["available"]
    assert record.metrics["split"] == "test" and record.metrics["evaluated"]
