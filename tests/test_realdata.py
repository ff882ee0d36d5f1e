"""Real-data suite on ../shared/data/cxr3 (select with -m realdata; skips when the folder is absent)."""

from pathlib import Path

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


def _realdata_model():
    """The model to measure the gate with: $RADIOLOGY_REALDATA_MODEL, else the bundled one, else None."""
    import os
    from pathlib import Path

    from radiology import registry

    wanted = os.environ.get("RADIOLOGY_REALDATA_MODEL")
    path = Path(wanted) if wanted else registry.BUNDLED_DIR / "model.keras"
    return path / "model.keras" if path.is_dir() else path


def _gate_files(loaded, stats, items):
    """The gate's verdicts, the predictions and each check's scores for (name, bytes or path) items, in batches."""
    import numpy as np

    from radiology import ood
    from radiology.images import decode_with_colour
    from radiology.preprocess import resize

    decoded = [decode_with_colour(source) for _, source in items]
    small = np.stack([resize(gray, loaded.metadata.preprocess) for gray, _ in decoded])
    probs, feats = ood.predict_with_features(loaded, small, layer=stats.layer)
    results = [
        ood.assess(gray, s, f, stats, colourfulness=colour) for (gray, colour), s, f in zip(decoded, small, feats)
    ]
    return results, probs, stats.all_scores(feats, small)


@pytest.mark.timeout(3600)
@pytest.mark.skipif(not _realdata_model().is_file(), reason="no model: set RADIOLOGY_REALDATA_MODEL to a run or file")
def test_ood_gate_on_cxr3(cxr3, tmp_path):
    """The gate passes >= 98% of cxr3's test split and flags >= 95% of every non-X-ray group of the corpus."""
    import json
    import os
    import shutil

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from radiology import ood
    from radiology.model import load_model
    from tests.ood_corpus import corpus

    source = _realdata_model()
    shutil.copy(source, tmp_path / "model.keras")  # fitting writes into the file: never into the original
    loaded = load_model(tmp_path / "model.keras")
    trained = loaded.metadata.train_config
    fractions = tuple(trained.get("fractions", (0.7, 0.2, 0.1)))
    dataset = discover(SHARED_DATA, fractions=fractions, seed=trained.get("seed", 42))  # the model's own split
    names = list(loaded.metadata.class_names)
    if ood.load_stats(loaded.metadata) is None:
        cache = os.environ.get("RADIOLOGY_REALDATA_CACHE", tmp_path / "cache")  # a decode cache to reuse
        decoded = load_or_decode([s.path for s in dataset.samples()], loaded.metadata.preprocess, cache)[0]
        index = decoded.index()

        def split(name):
            kept = [s for s in dataset.splits[name] if decoded.ok[index[s.path]]]
            labels = np.array([names.index(s.label) for s in kept])
            return np.stack([decoded.pixels[index[s.path]] for s in kept]), labels

        x_train, y_train = split("train")
        loaded = ood.store_stats(
            loaded, tmp_path / "model.keras", ood.fit_for_model(loaded, x_train, y_train, split("val")[0])
        )
    stats = ood.load_stats(loaded.metadata)
    test = dataset.splits["test"]
    real, probs, real_scores = _gate_files(loaded, stats, [(s.path, s.path) for s in test])
    accuracy = float(np.mean(probs.argmax(1) == np.array([names.index(s.label) for s in test])))
    from radiology.images import decode_image

    films = [(f"test{i}", decode_image(s.path)) for i, s in enumerate(test[::6])]
    gated = {name: _gate_files(loaded, stats, items) for name, items in corpus(films).items()}
    pooled = [r for rs, _, _ in gated.values() for r in rs]
    truth = [0] * len(real) + [1] * len(pooled)

    def auroc(check):
        return float(
            roc_auc_score(truth, np.concatenate([real_scores[check], *[s[check] for _, _, s in gated.values()]]))
        )

    def rates(results, scores):
        return {
            "flagged": float(np.mean([r.flag for r in results])),
            "by_input_checks": float(np.mean([r.flag and r.reason not in ood.REASONS.values() for r in results])),
            **{f"by_{k}": float(np.mean(v > 1)) for k, v in scores.items()},
        }

    report = {
        "model": str(source),
        "test_accuracy": accuracy,
        "thresholds": {
            "features": stats.threshold,
            **(
                {"layout": stats.pixels.layout_threshold, "orientation": stats.pixels.orientation_threshold}
                if stats.pixels
                else {}
            ),
        },
        "test_passing": float(np.mean([not r.flag for r in real])),
        "test": rates(real, real_scores),
        "auroc_feature_score": auroc("features"),
        "auroc_gate_score": float(roc_auc_score(truth, [r.score for r in real] + [r.score for r in pooled])),
        "groups": {name: {"n": len(rs), **rates(rs, scores)} for name, (rs, _, scores) in gated.items()},
    }
    print(json.dumps(report, indent=2))
    from pathlib import Path

    artifacts = Path(__file__).resolve().parent.parent / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "ood-realdata.json").write_text(json.dumps(report, indent=2))
    assert report["test_passing"] >= 0.98, report
    missed = {k: v["flagged"] for k, v in report["groups"].items() if v["flagged"] < 0.95}
    assert not missed, report


@pytest.fixture(scope="module")
def bundled_test_split(tmp_path_factory):
    """The shipped model and the cxr3 test split as the model was trained (its seed and fractions)."""
    from radiology import registry
    from radiology.model import load_model
    from radiology.splits import check_splits, training_split

    if not (registry.BUNDLED_DIR / "model.keras").is_file():
        pytest.skip("no bundled model in models/default")
    shipped = load_model(registry.BUNDLED_DIR / "model.keras")
    seed, fractions = training_split(shipped.metadata.train_config)
    checked = check_splits(
        SHARED_DATA,
        seed=seed,
        fractions=fractions,
        spec=shipped.metadata.preprocess,
        cache_dir=tmp_path_factory.mktemp("cache"),
    )
    return shipped, checked


def test_bundled_metrics_reproduce(bundled_test_split):
    """Re-evaluating the shipped model on the cxr3 test split reproduces models/default/metrics.json."""
    import json

    from radiology import registry
    from radiology.evaluation import evaluate_samples

    shipped, checked = bundled_test_split
    stored = json.loads((registry.BUNDLED_DIR / "metrics.json").read_text())
    result, _ = evaluate_samples(shipped, checked.dataset.splits["test"], checked.decoded, root=SHARED_DATA)
    assert result["n"] == stored["n"]
    assert result["confusion"]["matrix"] == stored["confusion"]["matrix"]
    for key in ("accuracy", "macro_f1"):
        assert result[key] == pytest.approx(stored[key], abs=1e-9)
    assert result["calibration"]["ece"] == pytest.approx(stored["calibration"]["ece"], abs=1e-4)
    assert result["ci"]["accuracy"] == pytest.approx(stored["ci"]["accuracy"], abs=1e-9)


def test_float16_agrees_with_float32(bundled_test_split):
    """The float16 weights give the float32 checkpoint's label (predicted_float32) on >= 99.5% of the test split."""
    import csv

    import numpy as np

    from radiology import registry
    from radiology.model import predict_images

    shipped, checked = bundled_test_split
    with open(registry.BUNDLED_DIR / "predictions.csv", newline="") as fh:
        reference = {r["path"]: r["predicted_float32"] for r in csv.DictReader(fh)}
    decoded, index = checked.decoded, checked.decoded.index()
    test = [s for s in checked.dataset.splits["test"] if decoded.ok[index[s.path]]]
    probs = predict_images(shipped, np.stack([decoded.pixels[index[s.path]] for s in test]))
    names = shipped.metadata.class_names
    labels = [names[int(i)] for i in probs.argmax(1)]
    expected = [reference[str(Path(s.path).relative_to(SHARED_DATA))] for s in test]
    assert len(test) == len(reference)
    assert np.mean([a == b for a, b in zip(labels, expected)]) >= 0.995
