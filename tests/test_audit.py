"""Tests for radiology.audit: deletion and insertion faithfulness, the shortcut audit, ranking and verdicts."""

import json

import numpy as np
import pytest

from radiology import audit
from radiology.audit import (
    THORAX_BOX,
    Box,
    auc,
    borders_only,
    cam_share_inside,
    centre_map,
    curves,
    ranked_methods,
    saliency_ranks,
    stratified_sample,
    summarise,
    thorax_mask,
    thorax_only,
    verdict,
)
from radiology.explain import METHODS
from radiology.preprocess import to_model_input
from tests.factories import CORNER, corner_loaded, corner_xray


@pytest.fixture(scope="module")
def corner():
    """The corner model with its metadata."""
    return corner_loaded()


def _films(classes, per_class: int, seed: int = 0):
    pixels = np.stack([corner_xray(k, seed + 100 * k + i) for k in classes for i in range(per_class)])
    return pixels, np.repeat(list(classes), per_class)


def _evidence_map() -> np.ndarray:
    m = np.zeros((64, 64), np.float32)
    m[:CORNER, :CORNER] = 1
    return m


def _curves_of(corner, maps: dict, pixels, seed: int = 0):
    """Deletion and insertion curves of named maps (arrays of shape (N, H, W)) on corner films."""
    predict = audit._predictor(corner)
    x = to_model_input(pixels, corner.metadata.preprocess)
    blur = audit.blurred(x, sigma=audit.BLUR_SIGMA * 64)
    rng = np.random.default_rng(seed)
    deletion = {name: [] for name in maps}
    insertion = {name: [] for name in maps}
    for i in range(len(x)):
        label = int(predict(x[i : i + 1]).argmax())
        d, s, _ = curves(predict, x[i], blur[i], [m[i] for m in maps.values()], label, steps=10, rng=rng)
        for k, name in enumerate(maps):
            deletion[name].append(d[k])
            insertion[name].append(s[k])
    return summarise({k: np.array(v) for k, v in deletion.items()}, {k: np.array(v) for k, v in insertion.items()})


def test_the_true_evidence_beats_the_random_map(corner):
    """A map equal to the model's evidence (the corner) has a lower deletion and a higher insertion AUC than
    random, and is marked better than random."""
    pixels, _ = _films((1, 2), 6)
    rng = np.random.default_rng(1)
    maps = {
        "evidence": np.repeat(_evidence_map()[None], len(pixels), 0),
        "random": np.stack([audit.random_map((64, 64), (64, 64), rng) for _ in pixels]),
    }
    scores = _curves_of(corner, maps, pixels)
    evidence, random = scores["evidence"], scores["random"]
    assert evidence["deletion_auc"] < random["deletion_auc"] - 0.3
    assert evidence["insertion_auc"] > random["insertion_auc"]
    assert evidence["better_than_random"] is True and evidence["vs_random"]["score_ci"][0] > 0
    assert evidence["n"] == 12 and len(evidence["deletion_curve"]) == 11


def test_a_map_that_ignores_the_corner_is_no_better_than_random(corner):
    """For the corner model, the centre prior (which removes the corner last) is no better than random."""
    pixels, _ = _films((1, 2), 6)
    rng = np.random.default_rng(2)
    maps = {
        "centre": np.repeat(centre_map((64, 64))[None], len(pixels), 0),
        "random": np.stack([audit.random_map((64, 64), (64, 64), rng) for _ in pixels]),
    }
    scores = _curves_of(corner, maps, pixels)
    assert scores["centre"]["better_than_random"] is False
    assert scores["centre"]["deletion_auc"] >= scores["random"]["deletion_auc"]


def test_curves_start_and_end_at_the_full_and_blurred_image(corner):
    """Deletion runs from the full image's probability to the blurred one's, insertion the other way, in few calls."""
    pixels, _ = _films((2,), 1)
    predict = audit._predictor(corner)
    x = to_model_input(pixels, corner.metadata.preprocess)
    blur = audit.blurred(x, sigma=1.5)
    maps = [_evidence_map(), centre_map((64, 64))]
    d, s, calls = curves(predict, x[0], blur[0], maps, 2, steps=20, rng=np.random.default_rng(0), batch_size=64)
    full, empty = predict(x)[0, 2], predict(blur)[0, 2]
    assert d.shape == s.shape == (2, 21)
    assert np.allclose(d[:, 0], full, atol=1e-5) and np.allclose(d[:, -1], empty, atol=1e-5)
    assert np.allclose(s[:, 0], empty, atol=1e-5) and np.allclose(s[:, -1], full, atol=1e-5)
    assert calls == 2  # 2 + 2 maps x 2 curves x 19 inner steps = 78 copies in batches of 64
    with pytest.raises(ValueError, match="2 steps or more, got 1"):
        curves(predict, x[0], blur[0], maps, 2, steps=1, rng=np.random.default_rng(0))


def test_auc_is_the_mean_height_by_trapezoids():
    """A flat curve's AUC is its height, a straight fall from 1 to 0 gives 0.5; one point is refused."""
    assert auc([0.7] * 21) == pytest.approx(0.7)
    assert auc(np.linspace(1, 0, 11)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="two points or more, got 1"):
        auc([1.0])


def test_ties_are_broken_at_random_not_in_raster_order():
    """A flat map removes pixels in a random order; a ranked map removes its highest first."""
    ranks = saliency_ranks(np.zeros((8, 8)), np.random.default_rng(0))
    assert sorted(ranks.ravel()) == list(range(64)) and ranks[0, 0] != 0
    ramp = np.arange(64, dtype=float).reshape(8, 8)
    assert saliency_ranks(ramp, np.random.default_rng(0))[7, 7] == 0


def test_borders_and_thorax_only_fill_with_the_image_mean():
    """Borders-only fills the documented box with each image's mean, thorax-only the strips outside it."""
    pixels = np.random.default_rng(0).integers(0, 256, (2, 50, 40)).astype(np.uint8)
    inside = thorax_mask(50, 40)
    assert inside.sum() == 40 * 32 and not inside[:5].any() and not inside[:, :4].any()
    b, t = borders_only(pixels), thorax_only(pixels)
    means = np.round(pixels.reshape(2, -1).mean(1))
    assert (b[:, inside] == means[:, None]).all() and (b[:, ~inside] == pixels[:, ~inside]).all()
    assert (t[:, ~inside] == means[:, None]).all() and (t[:, inside] == pixels[:, inside]).all()
    assert THORAX_BOX.area == pytest.approx(0.64)
    with pytest.raises(ValueError, match="top < bottom"):
        thorax_mask(10, 10, box=Box(0.5, 0.2, 0.1, 0.9))


def test_a_corner_model_reads_the_borders(corner):
    """The corner model keeps its accuracy from the borders alone, falls to chance on the thorax alone, and its
    Grad-CAM lies outside the box."""
    pixels, labels = _films((0, 1, 2), 8)
    found = audit.shortcut(corner, pixels, labels)
    assert found["full"]["accuracy"] == 1.0 and found["borders_only"]["accuracy"] == 1.0
    assert found["thorax_only"]["accuracy"] == pytest.approx(1 / 3)
    assert found["thorax_only"]["recall"] == {"covid": 1.0, "normal": 0.0, "pneumonia": 0.0}
    assert found["chance"] == pytest.approx(1 / 3) and found["box"]["area"] == pytest.approx(0.64)
    for name in ("normal", "pneumonia"):  # the classes with a checkerboard to explain
        assert found["cam_inside_thorax"][name] < 0.1
    assert found["source_from_features"] is None  # no sources given
    assert verdict({"shortcut": found, "faithfulness": _faithfulness()})[0].startswith(
        "From the borders alone this model still gets 100% right (chance 33%"
    )


def test_cam_share_inside_counts_mass_in_the_box():
    """A map all inside the box has share 1, a border map 0, a flat one the box's area; an empty map is NaN."""
    inside = thorax_mask(20, 20).astype(float)
    shares = cam_share_inside(np.stack([inside, 1 - inside, np.ones((20, 20)), np.zeros((20, 20))]))
    assert shares[:3] == pytest.approx([1, 0, 0.64]) and np.isnan(shares[3])


def test_source_from_features_overall_and_within_class():
    """Features that carry the source predict it well, within each class too; without two sources, None."""
    rng = np.random.default_rng(0)
    n = 120
    sources = ["a" if i % 2 else "b" for i in range(n)]
    labels = np.array([i % 3 for i in range(n)])
    features = rng.normal(0, 1, (n, 8))
    features[:, 0] += np.where(np.array(sources) == "a", 3, -3)
    found = audit.source_from_features(features, sources, [f"p{i}" for i in range(n)], labels, ["x", "y", "z"])
    assert found["balanced_accuracy"] > 0.9 and found["chance"] == 0.5
    assert set(found["within_class"]) == {"x", "y", "z"} and found["within_class"]["x"]["balanced_accuracy"] > 0.9
    assert audit.source_from_features(features, ["a"] * n, [str(i) for i in range(n)], labels, "xyz") is None


def test_stratified_sample_balances_the_classes():
    """90 of three classes gives 30 each; a small class gives all it has; n at least N gives everything."""
    labels = np.array([0] * 200 + [1] * 100 + [2] * 12)
    pick = stratified_sample(labels, 90, seed=1)
    assert np.bincount(labels[pick]).tolist() == [39, 39, 12]
    assert np.bincount(labels[stratified_sample(labels[:300], 90)]).tolist() == [45, 45]
    assert len(stratified_sample(labels, 1000)) == len(labels)
    with pytest.raises(ValueError, match="1 image or more, got n=0"):
        stratified_sample(labels, 0)


def test_faithfulness_scores_every_method_and_baseline(corner):
    """Every CAM method and both baselines get curves and AUCs on the same images; Grad-CAM, which follows
    the corner's evidence, beats the random map; the cost is measured."""
    pixels, _ = _films((1, 2), 4)
    found = audit.faithfulness(corner, pixels, steps=10)
    assert set(found["methods"]) == set(METHODS) and set(found["baselines"]) == {"random", "centre"}
    gradcam = found["methods"]["Grad-CAM"]
    assert gradcam["n"] == 8 and len(gradcam["insertion_curve"]) == 11
    assert gradcam["better_than_random"] is True
    assert gradcam["deletion_auc"] < found["baselines"]["random"]["deletion_auc"]
    assert found["baselines"]["centre"]["better_than_random"] is False
    assert sorted(found["ranking"]) == sorted(METHODS)
    assert found["full_probability"] > 0.9 and found["blurred_probability"] < 0.1
    cost = found["cost"]
    assert cost["model_inputs"] == 8 * (2 + 2 * 6 * 9) and cost["calls_per_image"] == 2
    assert cost["curve_seconds"] > 0 and gradcam["map_seconds_per_image"] > 0
    json.dumps(found)  # plain data


def _faithfulness(no_better=("ScoreCAM",)) -> dict:
    methods = {m: {"score": s, "better_than_random": m not in no_better} for m, s in zip(METHODS, (0.3, 0.1, 0.0, 0.5))}
    ranking = sorted(methods, key=lambda m: -methods[m]["score"])
    return {"methods": methods, "baselines": {"random": {"score": 0.05}}, "ranking": ranking}


def test_methods_are_ranked_by_score_and_marked():
    """The best-scoring method comes first and those no better than random are named; no audit keeps the order."""
    ordered, no_better = ranked_methods({"faithfulness": _faithfulness()}, METHODS)
    assert ordered == ["LayerCAM", "Grad-CAM", "Grad-CAM++", "ScoreCAM"] and no_better == {"ScoreCAM"}
    assert ranked_methods(None, METHODS) == (list(METHODS), set())
    note = audit.method_order_note({"faithfulness": {**_faithfulness(), "n": 90, "layer": "block5_conv3"}})
    assert note.startswith("Most faithful first, as measured for this model (insertion − deletion AUC on 90 images")
    assert note.endswith("No better than a random map: ScoreCAM.")
    assert audit.method_order_note(None).startswith("Not audited: the methods are in their usual order.")


def _shortcut(borders: float, ci_low: float) -> dict:
    scores = {"accuracy": 0.9, "accuracy_ci": [0.85, 0.94]}
    return {
        "chance": 1 / 3,
        "majority": 0.37,
        "box": {"area": 0.64},
        "full": scores,
        "borders_only": {"accuracy": borders, "accuracy_ci": [ci_low, borders + 0.05]},
        "thorax_only": {"accuracy": 0.8, "accuracy_ci": [0.75, 0.85]},
        "cam_inside_thorax": {"covid": 0.4, "normal": 0.7},
        "source_from_features": {"balanced_accuracy": 0.8, "chance": 0.25},
    }


def test_verdict_says_when_the_borders_carry_the_decision():
    """71% from the borders reads as using more than the lungs; 36% (below the majority class) does not."""
    lines = verdict({"shortcut": _shortcut(0.71, 0.66), "faithfulness": _faithfulness()})
    assert lines[0] == (
        "From the borders alone this model still gets 71% right (chance 33%, full image 90%): "
        "it uses more than the lungs."
    )
    text = " ".join(lines)
    assert "for covid the map falls outside the lungs" in text and "they encode the hospital" in text
    assert "Most faithful explanation: LayerCAM" in text and "No better than a random map: ScoreCAM." in text
    low = verdict({"shortcut": _shortcut(0.36, 0.31), "faithfulness": _faithfulness(())})
    assert low[0].startswith("From the borders alone it gets 36% right, no better than chance (33%)")
    assert "No better than a random map" not in " ".join(low)
    room = _faithfulness() | {"full_probability": 0.92, "blurred_probability": 0.71}
    lines = verdict({"shortcut": _shortcut(0.36, 0.31), "faithfulness": room})
    assert "only lowers the probability of the predicted class from 92% to 71%" in " ".join(lines)


def test_the_newest_audit_is_found_else_the_cards(tmp_path):
    """Audits are stored one folder each; the newest is read, and without one the model card's."""
    assert audit.latest_audit(tmp_path) is None
    assert audit.latest_audit(tmp_path, card={"trust": {"id": "card"}}) == {"id": "card"}
    audit.save_audit(tmp_path, "20260101-000000-aaaa", {"n": 1})
    folder = audit.save_audit(tmp_path, "20260102-000000-bbbb", {"n": 2})
    assert folder == tmp_path / "audits" / "20260102-000000-bbbb"
    assert audit.latest_audit(tmp_path, card={"trust": {"id": "card"}}) == {"n": 2, "id": "20260102-000000-bbbb"}
