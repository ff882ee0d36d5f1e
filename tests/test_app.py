"""AppTest smoke tests: the home page and every page run without exceptions and show their headings."""

import csv
import json
import shutil
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from radiology import evaluation_job, registry
from tests.factories import make_dataset, png_bytes, xray

ROOT = Path(__file__).resolve().parent.parent

PAGES = {
    "streamlit_app.py": ["RadiologyAI", "Active model", "Pages"],
    "pages/home.py": ["RadiologyAI", "Active model", "Pages"],
    "pages/1_Classify.py": ["Classify"],
    "pages/2_Evaluation.py": [
        "Evaluation",
        "Summary",
        "Out-of-distribution gate",
        "Classification report",
        "Confusion matrix",
        "ROC and precision-recall",
        "Calibration",
        "Evaluate on a dataset",
        "Misclassified images",
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
    """Home names the promoted run and its accuracy, labelled by what it was measured on."""
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    values = {m.label: m.value for m in at.metric}
    assert "Model 20260102-000000-bbbb" in [s.value for s in at.subheader]
    assert values["Accuracy"].endswith("%")
    assert any(c.value.startswith("Measured on test split of ") and "at training time" in c.value for c in at.caption)


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


def test_training_page_defaults_are_the_configs(app_env):
    """Every setting of the launch form starts at TrainConfig's default, workers and class weights included."""
    from training.config import defaults

    at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
    d = defaults()
    numbers = {n.label: n.value for n in at.number_input}
    assert (
        numbers["Seed"] == d["seed"] and numbers["Epochs"] == d["epochs"] and numbers["Batch size"] == d["batch_size"]
    )
    assert numbers["Loader threads"] == d["workers"] and numbers["Plateau patience (epochs)"] == d["lr_patience"]
    assert (numbers["Validation %"], numbers["Test %"]) == (
        round(d["fractions"][1] * 100),
        round(d["fractions"][2] * 100),
    )
    assert {t.label: t.value for t in at.toggle}["Class weights"] is d["class_weights"]


def test_training_page_validates_the_dataset(app_env):
    """Choosing the dataset shows its counts and a clean leakage report."""
    at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
    assert {m.label: m.value for m in at.metric}["Images"] == "12"
    assert any("No exact or near-duplicate" in s.value for s in at.success)


def test_training_page_shows_the_estimate_and_offers_resume(app_env):
    """With an estimate stored for the form's settings, the page shows the duration and how it was measured;
    a cancelled run with a last checkpoint can be resumed; the image-size line names the Grad-CAM grid."""
    import json

    from training import estimate as estimate_module
    from training.config import TrainConfig

    runs = app_env / "runs"
    config = TrainConfig(data=str(app_env / "data" / "tiny"), runs_dir=str(runs))
    device = "TensorFlow on CPU (2 cores)"
    estimate = estimate_module.Estimate(8, 2, 2, 4.0, 12.0, 1.0, 5.0, "compute: float32", device, 8, 2, "t")
    path = estimate_module.estimate_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"state": "succeeded", "estimate": estimate.to_dict()}))
    stopped = runs / "20260103-000000-cccc"
    shutil.copytree(runs / "20260101-000000-aaaa", stopped)
    (stopped / "status.json").write_text(json.dumps({"state": "cancelled", "pid": 1}))
    (stopped / "last.keras").write_bytes(b"checkpoint")
    try:
        at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
        assert not at.exception, at.exception
        assert any("About **1 min 09 s** for 20 epochs" in i.value for i in at.info), [i.value for i in at.info]
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


def _run_with_mistakes(tiny_run, runs: Path, name: str, data_root: Path, paths: list[str]) -> None:
    """A copy of the tiny run whose metrics name ``data_root`` and whose predictions are all wrong."""
    run = runs / name
    shutil.copytree(tiny_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["data_root"] = str(data_root)
    (run / "metrics.json").write_text(json.dumps(metrics))
    with open(run / "predictions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "predicted", "source", "p_covid", "p_normal", "p_pneumonia"])
        writer.writeheader()
        for path in paths:
            writer.writerow(
                {
                    "path": path,
                    "label": "covid",
                    "predicted": "normal",
                    "source": "",
                    "p_covid": 0.1,
                    "p_normal": 0.8,
                    "p_pneumonia": 0.1,
                }
            )


def test_evaluation_never_reads_images_outside_the_data_root(tiny_run, tmp_path, monkeypatch):
    """Runs whose data root, '..' paths or symlinks lead outside the data root show a refusal and read no file there."""
    from radiology import images

    root = tmp_path / "data"
    (root / "ds" / "covid").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes(xray()))
    (root / "ds" / "covid" / "link.png").symlink_to(outside / "secret.png")
    runs = tmp_path / "runs"
    runs.mkdir()
    _run_with_mistakes(tiny_run, runs, "20260101-000000-away", outside, ["secret.png"])
    _run_with_mistakes(
        tiny_run, runs, "20260102-000000-escape", root / "ds", ["../../outside/secret.png", "covid/link.png"]
    )
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(runs))
    monkeypatch.setenv("RADIOLOGY_DATA_ROOT", str(root))
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "no-bundle")
    read = []
    decode = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda source: read.append(str(source)) or decode(source))

    at = AppTest.from_file(str(ROOT / "pages/2_Evaluation.py"), default_timeout=120).run()
    at.selectbox[0].select("20260101-000000-away").run()
    assert not at.exception, at.exception
    assert any("outside the data root" in w.value for w in at.warning)
    assert not at.image
    at.selectbox[0].select("20260102-000000-escape").run()
    assert not at.exception, at.exception
    warnings = [w.value for w in at.warning]
    assert any("'..' is not allowed" in w for w in warnings) and any(
        "link.png" in w and "outside the data root" in w for w in warnings
    )
    assert not at.image
    assert read == []


def test_evaluation_shows_the_share_flagged(app_env):
    """The evaluation page shows the share of test images the out-of-distribution gate flagged."""
    at = AppTest.from_file(str(ROOT / "pages/2_Evaluation.py"), default_timeout=120).run()
    values = {m.label: m.value for m in at.metric}
    assert values["Images of the test split flagged"].endswith("%")
    assert any("images of the test split flagged (by reason" in c.value for c in at.caption)


def test_dataset_page_measures_source_predictability(app_env):
    """The shortcut-risk button runs; a dataset without sources says there is nothing to measure."""
    at = AppTest.from_file(str(ROOT / "pages/4_Dataset.py"), default_timeout=120).run()
    at.button[0].click().run()
    assert not at.exception
    assert any("Fewer than two sources" in i.value for i in at.info)


def test_session_explanations_are_bounded_by_bytes(tiny_run, tmp_path, monkeypatch):
    """The per-session explanation cache evicts the least recently used result beyond its byte bound."""
    import ui

    # one 96x96 image and its 224x224 float32 CAM take about 210 kB: the bound holds one result
    monkeypatch.setattr(ui, "SESSION_CACHE_BYTES", 300_000)
    script = tmp_path / "page.py"
    uploads = [png_bytes(xray(i)) for i in range(3)]
    script.write_text(
        "import ui\n"
        "from radiology import registry\n"
        f"run = registry.load_run({str(tiny_run)!r})\n"
        f"for data in {uploads!r}:\n"
        "    ui.explain_cached(run, data, 'Grad-CAM')\n"
    )
    monkeypatch.syspath_prepend(str(ROOT))
    at = AppTest.from_file(str(script), default_timeout=120).run()
    assert not at.exception, at.exception
    cache = at.session_state["_explanations"]
    assert len(cache) == 1 and 0 < cache.bytes <= 300_000


def status_job(run_dir: Path) -> str:
    """The job id of a run's last background evaluation."""
    return evaluation_job.read_status(run_dir)["job"]


def test_evaluation_page_evaluates_a_run_in_the_background(app_env):
    """The page warns that another dataset may overlap training, starts a job, then shows its results."""
    run_dir = app_env / "runs" / "20260101-000000-aaaa"
    at = AppTest.from_file(str(ROOT / "pages/2_Evaluation.py"), default_timeout=120).run()
    at.selectbox[0].select("20260101-000000-aaaa").run()
    at.selectbox(key="evaluate_split").select("all").run()
    assert any("differs from the one the model was trained on" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Evaluate").click().run()
    assert not at.exception, at.exception
    assert evaluation_job.read_status(run_dir)["data"] == str((app_env / "data" / "tiny").resolve())
    deadline = time.monotonic() + 400
    while evaluation_job.is_running(run_dir) and time.monotonic() < deadline:
        time.sleep(1)
    assert evaluation_job.read_status(run_dir)["state"] == "succeeded", evaluation_job.read_status(run_dir)
    at.run()
    assert any(str((app_env / "data" / "tiny").resolve()) in c.value for c in at.caption)
    assert {m.label: m.value for m in at.metric}["Images"] == "12"
    assert any(c.value.startswith("Measured on all images of ") for c in at.caption)
    listed = at.dataframe[0].value  # the run's evaluations: the training-time test kept, the new one beside it
    assert list(listed["evaluation"]) == ["training", status_job(run_dir)]
    assert "at training time" in listed["measured on"][0] and "all images of" in listed["measured on"][1]


def test_training_page_report_uses_the_chosen_split(app_env):
    """The leakage report splits with the seed and fractions chosen on the page, not seed 42."""
    at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
    next(n for n in at.number_input if n.label == "Seed").set_value(7).run()
    next(n for n in at.number_input if n.label == "Test %").set_value(30).run()
    assert not at.exception, at.exception
    assert any("stratified 50%/20%/30% split, seed 7" in c.value for c in at.caption), [c.value for c in at.caption]


def test_home_without_model_offers_import_first(tmp_path, monkeypatch):
    """With no model, home offers importing a model file before anything else."""
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "none")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception
    assert [s.value for s in at.subheader][:1] == ["Import a model"]
    assert "best_model.h5" in at.info[0].value


def test_home_describes_an_imported_active_model(tmp_path, monkeypatch):
    """An imported active model is shown by its source file, SHA-256 and assumed class order, not as trained."""
    import keras

    from radiology.imports import import_model

    inp = keras.Input((32, 32, 3))
    x = keras.layers.GlobalMaxPooling2D()(keras.layers.Conv2D(4, 3, name="my_conv")(inp))
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x)).save(tmp_path / "colleague.keras")
    run = import_model(tmp_path / "colleague.keras", runs_dir=tmp_path / "runs")
    registry.set_active(run, tmp_path / "runs")
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "none")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception
    assert "Imported" in [m.label for m in at.metric] and "Trained" not in [m.label for m in at.metric]
    text = " ".join(m.value for m in at.markdown)
    assert "Imported from `colleague.keras`" in text and "assumed: the notebook's alphabetical order" in text
    assert "Grad-CAM on `my_conv`" in text and "Trained on" not in text
