"""AppTest smoke tests: the home page and every page run without exceptions and show their headings."""

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from radiology import registry
from tests.factories import make_dataset

ROOT = Path(__file__).resolve().parent.parent

PAGES = {
    "streamlit_app.py": ["RadiologyAI", "Active model", "Pages"],
    "pages/home.py": ["RadiologyAI", "Active model", "Pages"],
    "pages/1_Classify.py": ["Classify"],
    "pages/2_Evaluation.py": [
        "Evaluation",
        "Summary",
        "Classification report",
        "Confusion matrix",
        "ROC and precision-recall",
        "Calibration",
        "Misclassified test images",
        "Compare runs",
    ],
    "pages/3_Training.py": ["Training", "Dataset", "Launch", "Current run", "Runs"],
    "pages/4_Dataset.py": [
        "Dataset",
        "Class balance",
        "Sample images",
        "Image sizes",
        "Validation and leakage",
        "Shortcut risk",
    ],
}


@pytest.fixture(scope="module")
def app_env(tiny_run, tmp_path_factory, monkeypatch_module):
    """A runs folder holding two copies of the tiny run, one promoted, and a data root with a dataset."""
    base = tmp_path_factory.mktemp("app")
    runs = base / "runs"
    runs.mkdir()
    for name in ("20260101-000000-aaaa", "20260102-000000-bbbb"):
        shutil.copytree(tiny_run, runs / name)
    registry.set_active(registry.load_run(runs / "20260102-000000-bbbb"), runs)
    make_dataset(base / "data" / "tiny", per_class=4)
    monkeypatch_module.setenv("RADIOLOGY_RUNS_DIR", str(runs))
    monkeypatch_module.setenv("RADIOLOGY_DATA_ROOT", str(base / "data"))
    monkeypatch_module.setattr(registry, "BUNDLED_DIR", base / "no-bundle")
    return base


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _texts(at):
    return [e.value for e in at.title] + [e.value for e in at.header] + [e.value for e in at.subheader]


@pytest.mark.parametrize("page", list(PAGES))
def test_page_runs_and_shows_headings(app_env, page):
    """Each page runs without an exception and shows its headings and the research-demo notice."""
    at = AppTest.from_file(str(ROOT / page), default_timeout=120).run()
    assert not at.exception, at.exception
    texts = _texts(at)
    for heading in PAGES[page]:
        assert heading in texts, (heading, texts)
    assert any("not for diagnosis" in w.value for w in at.warning)


def test_home_shows_the_active_model(app_env):
    """Home names the promoted run and its test accuracy."""
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    values = {m.label: m.value for m in at.metric}
    assert "Model 20260102-000000-bbbb" in [s.value for s in at.subheader]
    assert values["Test accuracy"].endswith("%")


def test_home_without_model_says_what_to_do(tmp_path, monkeypatch):
    """With no run and no bundled model, home explains the next steps."""
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "none")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception
    assert any("No model yet" in i.value for i in at.info)


def test_training_page_refuses_paths_outside_the_data_root(app_env):
    """Typing a path outside the data root shows the refusal and disables launch."""
    at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
    at.text_input(key="train_typed").input("../../etc").run()
    assert any("not allowed" in e.value for e in at.error)
    at.text_input(key="train_typed").input("/etc").run()
    assert any("outside the data root" in e.value for e in at.error)


def test_training_page_validates_the_dataset(app_env):
    """Choosing the dataset shows its counts and a clean leakage report."""
    at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
    assert {m.label: m.value for m in at.metric}["Images"] == "12"
    assert any("No exact or near-duplicate" in s.value for s in at.success)


def test_training_page_shows_the_estimate_and_offers_resume(app_env):
    """With an estimate stored for the form's settings, the page shows the duration and how it was measured;
    a cancelled run with a last checkpoint can be resumed; the image-size line names the Grad-CAM grid."""
    import json

    from training import clock
    from training.config import TrainConfig

    runs = app_env / "runs"
    config = TrainConfig(data=str(app_env / "data" / "tiny"), runs_dir=str(runs))
    device = "TensorFlow on CPU (2 cores)"
    estimate = clock.Estimate(8, 2, 2, 4.0, 12.0, 1.0, 5.0, "compute: float32", device, 8, 2, "t")
    path = clock.estimate_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"state": "done", "estimate": estimate.to_dict()}))
    stopped = runs / "20260103-000000-cccc"
    shutil.copytree(runs / "20260101-000000-aaaa", stopped)
    (stopped / "status.json").write_text(json.dumps({"state": "cancelled", "pid": 1}))
    (stopped / "last.keras").write_bytes(b"checkpoint")
    try:
        at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
        assert not at.exception, at.exception
        assert any("About **1 min 08 s** for 20 epochs" in i.value for i in at.info), [i.value for i in at.info]
        assert any("How: timed 2 real training steps" in c.value for c in at.caption)
        assert any("14×14 cells" in c.value for c in at.caption)
        assert any("TensorFlow on CPU" in c.value for c in at.caption)
        resume = next(s for s in at.selectbox if s.label == "Run to resume")
        assert resume.options == ["20260103-000000-cccc"]
    finally:
        shutil.rmtree(stopped)
        path.unlink()


def test_evaluation_compares_runs(app_env):
    """The evaluation page shows accuracy with its CI and a comparison table of two runs."""
    at = AppTest.from_file(str(ROOT / "pages/2_Evaluation.py"), default_timeout=120).run()
    assert any("95% CI" in c.value for c in at.caption)
    assert len(at.dataframe) >= 2


def test_dataset_page_measures_source_predictability(app_env):
    """The shortcut-risk button runs; a dataset without sources says there is nothing to measure."""
    at = AppTest.from_file(str(ROOT / "pages/4_Dataset.py"), default_timeout=120).run()
    at.button[0].click().run()
    assert not at.exception
    assert any("Fewer than two sources" in i.value for i in at.info)
