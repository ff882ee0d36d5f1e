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
        "Trust",
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


def test_home_shows_the_bundled_card_summary(tiny_run, tmp_path, monkeypatch):
    """With no run, Home shows the bundled model's card summary: data, recipe, accuracy with CI, limits."""
    import json

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_run, bundle)
    card = {"data": "tiny: 24 films", "recipe": "one epoch", "limits": ["not for diagnosis: a test"], "targets": []}
    (bundle / "card.json").write_text(json.dumps(card))
    (bundle / "MODEL_CARD.md").write_text("# Model card: tiny")
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(registry, "BUNDLED_DIR", bundle)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert "Model bundled" in [s.value for s in at.subheader]
    text = " ".join(m.value for m in at.markdown)
    assert "**Data:** tiny: 24 films" in text and "not for diagnosis: a test" in text
    assert any(c.value.startswith("95% CI") for c in at.caption)
    assert [e.label for e in at.expander if "model card" in e.label]


def test_evaluation_shows_calibration_before_and_after(app_env):
    """Evaluation states the run's temperature and the test ECE and log-likelihood before and after it."""
    at = AppTest.from_file(str(ROOT / "pages/2_Evaluation.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert any("Probabilities calibrated with temperature T =" in m.value for m in at.markdown)
    tables = [d.value for d in at.dataframe if "measure" in d.value.columns]
    assert tables and list(tables[0]["measure"]) == ["expected calibration error", "negative log-likelihood"]


def test_evaluation_shows_the_shipped_models_metrics_without_data(tmp_path, monkeypatch):
    """On a fresh clone, Evaluation shows the shipped model's test metrics from its files, with no dataset."""
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("RADIOLOGY_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setattr(registry, "BUNDLED_DIR", ROOT / "models" / "default")
    at = AppTest.from_file(str(ROOT / "pages/2_Evaluation.py"), default_timeout=180).run()
    assert not at.exception, at.exception
    values = {m.label: m.value for m in at.metric}
    stored = json.loads((ROOT / "models" / "default" / "metrics.json").read_text())
    assert values["Accuracy"] == f"{stored['accuracy']:.1%}" and values["Images"] == str(stored["n"])
    assert any("Probabilities calibrated with temperature" in m.value for m in at.markdown)


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
    """The shortcut-risk button runs; a dataset without manifest.csv says that is why there is nothing to measure."""
    at = AppTest.from_file(str(ROOT / "pages/4_Dataset.py"), default_timeout=120).run()
    at.button[0].click().run()
    assert not at.exception
    assert any(
        i.value.startswith("Nothing to measure: this folder has no manifest.csv with a source column") for i in at.info
    ), [i.value for i in at.info]


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


class _Upload:
    """A stand-in for Streamlit's UploadedFile: AppTest cannot drive the file uploader itself."""

    def __init__(self, name: str, data: bytes):
        self.name, self._data = name, data
        self.file_id = f"upload-{name}"

    def getvalue(self) -> bytes:
        return self._data


def _classify(monkeypatch, files: dict[str, bytes]) -> AppTest:
    """Runs the Classify page with ``files`` as the uploader's answer."""
    import streamlit as st

    monkeypatch.setattr(st, "file_uploader", lambda *a, **k: [_Upload(n, d) for n, d in files.items()])
    at = AppTest.from_file(str(ROOT / "pages/1_Classify.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    return at


def test_classify_flags_a_ct_slice_by_its_dicom_header(app_env, monkeypatch):
    """pydicom's CT_small.dcm is flagged as "DICOM header says CT" on Classify, and its label is hidden."""
    from pydicom.data import get_testdata_file

    at = _classify(monkeypatch, {"CT_small.dcm": Path(get_testdata_file("CT_small.dcm")).read_bytes()})
    assert "CT_small.dcm: not a chest X-ray?" in [s.value for s in at.subheader]
    assert any("DICOM header says CT" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not any("Prediction despite the warning" in c.value for c in at.caption)


def _fake_explanations(monkeypatch, probs_by_file: dict[bytes, list[float]], *, flag: str = ""):
    """Makes ``ui.explain_cached`` answer with the given probabilities, a flat CAM and the gate's verdict."""
    import numpy as np

    import ui
    from radiology.explain import Explanation
    from radiology.ood import OODResult

    def explain(run, data, method, *, layer=None, upload_id=None):
        probs = np.asarray(probs_by_file[data], np.float32)
        cam = np.tile(np.linspace(0, 1, 224, dtype=np.float32), (224, 1))
        gate = OODResult(True, None, flag) if flag else OODResult(False, 0.5, "")
        return xray(0, size=(300, 280)), Explanation(probs, int(probs.argmax()), cam, method, ood=gate), 0.01

    monkeypatch.setattr(ui, "explain_cached", explain)


def test_classify_reruns_neither_hash_the_uploads_nor_encode_their_thumbnails(app_env, monkeypatch):
    """Moving the opacity slider finds each upload's explanation and thumbnail by its file_id: no upload is
    hashed and no thumbnail encoded again."""
    import hashlib

    import ui.models

    hashed, encoded = [], []
    real_thumbnail = ui.models.thumbnail_uri

    class CountingHashlib:
        @staticmethod
        def sha256(data=b""):
            hashed.append(len(data))
            return hashlib.sha256(data)

    monkeypatch.setattr(ui.models, "hashlib", CountingHashlib)
    monkeypatch.setattr(ui.models, "thumbnail_uri", lambda gray: encoded.append(gray.shape) or real_thumbnail(gray))
    at = _classify(monkeypatch, {"a.png": png_bytes(xray(7)), "b.png": png_bytes(xray(8))})
    assert len(at.dataframe) == 1 and len(encoded) == 2 and not hashed
    at.slider[0].set_value(0.7).run()
    assert not at.exception, at.exception
    assert len(at.dataframe) == 1 and len(encoded) == 2 and not hashed


def test_classify_shows_a_flat_prediction_as_no_confident_prediction(app_env, monkeypatch):
    """33.3/33.4/33.3 reads "no confident prediction" with the reason and no heatmap; a clear one keeps its label."""
    flat, sure = png_bytes(xray(1)), png_bytes(xray(2))
    _fake_explanations(monkeypatch, {flat: [0.333, 0.334, 0.333], sure: [0.05, 0.9, 0.05]})
    at = _classify(monkeypatch, {"flat.png": flat, "sure.png": sure})
    subheaders = [s.value for s in at.subheader]
    assert "flat.png: no confident prediction" in subheaders and "sure.png: normal (90.0%)" in subheaders
    assert any("normal, has 33.4%, below the 50%" in i.value for i in at.info), [i.value for i in at.info]
    assert any("No Grad-CAM overlay: without a confident prediction" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert list(table["prediction"]) == ["no confident prediction", "normal"]


def test_classify_reveals_a_photograph_as_an_uploaded_image(app_env, monkeypatch):
    """A flagged photograph shown anyway is captioned "uploaded image", not "X-ray"; the toggle for one flagged
    image says "the image", and the warning's icon is a Material Symbol, which the app's fonts have."""
    photo, film = png_bytes(xray(3)), png_bytes(xray(4))
    _fake_explanations(monkeypatch, {photo: [0.1, 0.8, 0.1], film: [0.1, 0.8, 0.1]})
    import ui

    answer = ui.explain_cached

    def flag_photo(run, data, method, **kwargs):
        gray, ex, seconds = answer(run, data, method, **kwargs)
        if data == photo:
            from radiology.ood import OODResult

            ex.ood = OODResult(True, None, "colour image: colourfulness 60")
        return gray, ex, seconds

    monkeypatch.setattr(ui, "explain_cached", flag_photo)
    at = _classify(monkeypatch, {"temple.jpg": photo, "film.png": film})
    assert [t.label for t in at.toggle] == ["Show the prediction of the image that does not look like a chest X-ray"]
    warning = next(w for w in at.warning if "colour image" in w.value)
    assert warning.proto.icon == ":material/block:"
    assert all(w.proto.icon.startswith(":material/") for w in at.warning)
    at.checkbox[0].check().run()
    assert not at.exception, at.exception
    captions = [c for image in at.image for c in image.captions]
    assert captions.count("uploaded image") == 1 and captions.count("X-ray") == 1, captions
    assert any("Prediction despite the warning: **normal** (80.0%)" in c.value for c in at.caption)


def test_classify_explains_the_cam_method_grid_and_scale(app_env, monkeypatch):
    """The chosen method's help text, the Grad-CAM grid in cells, and a colour bar beside each overlay are shown."""
    from radiology.explain import METHOD_HELP

    film = png_bytes(xray(5))
    _fake_explanations(monkeypatch, {film: [0.1, 0.8, 0.1]})
    at = _classify(monkeypatch, {"film.png": film})
    captions = [c.value for c in at.caption]
    assert METHOD_HELP["Grad-CAM"] in captions
    assert any("The map has 14×14 cells, each 16×16 pixels of the 224×224 model input." in c for c in captions)
    assert "Grad-CAM++" in at.selectbox[0].help and "Cost:" in at.selectbox[0].help
    assert len(at.get("plotly_chart")) == 2  # the overlay's colour bar and the probabilities
    at.selectbox[0].select("ScoreCAM").run()
    assert METHOD_HELP["ScoreCAM"] in [c.value for c in at.caption]


def test_classify_offers_a_finer_layer(app_env, monkeypatch):
    """The layer selector offers block4_conv3 (28×28) and block3_conv3 (56×56) besides block5_conv3, and the
    explanation is asked for the chosen layer."""
    film = png_bytes(xray(6))
    _fake_explanations(monkeypatch, {film: [0.1, 0.8, 0.1]})
    import ui

    asked = []
    answer = ui.explain_cached
    monkeypatch.setattr(
        ui, "explain_cached", lambda run, data, method, **kw: asked.append(kw["layer"]) or answer(run, data, method)
    )
    at = _classify(monkeypatch, {"film.png": film})
    layer = next(s for s in at.selectbox if s.label == "Layer")
    assert layer.options == [
        "block5_conv3, 14×14 cells (the model's)",
        "block4_conv3, 28×28 cells",
        "block3_conv3, 56×56 cells",
    ]
    layer.select("block4_conv3").run()
    assert not at.exception, at.exception
    assert asked[0] is None and asked[-1] == "block4_conv3"
    assert any(c.value.startswith("The map has 28×28 cells, each 8×8 pixels") for c in at.caption)


def test_evaluation_uses_wilson_on_small_samples_and_a_text_compare_table(app_env):
    """On a handful of images the recall intervals are Wilson's, not a collapsed bootstrap, and the compare
    table holds text only (no raw floats, nothing Arrow refuses)."""
    at = AppTest.from_file(str(ROOT / "pages/2_Evaluation.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    (report,) = [d.value for d in at.dataframe if "recall 95% CI" in d.value.columns]
    assert all(v.endswith("(Wilson)") for v in report.loc[["covid", "normal", "pneumonia"], "recall 95% CI"])
    assert any(c.value.startswith("95% CI") and c.value.endswith("(Wilson)") for c in at.caption)
    compare = at.dataframe[-1].value
    assert list(compare.columns)[0] == "metric" and all(compare[c].map(type).eq(str).all() for c in compare.columns)


def test_evaluation_says_how_many_mistakes_it_draws(tiny_run, tmp_path, monkeypatch):
    """With 14 mistakes the gallery says it shows the 12 most confident of 14 and lists them all."""
    root = tmp_path / "data"
    (root / "ds").mkdir(parents=True)
    runs = tmp_path / "runs"
    runs.mkdir()
    _run_with_mistakes(tiny_run, runs, "20260101-000000-many", root / "ds", [f"covid/{i}.png" for i in range(14)])
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(runs))
    monkeypatch.setenv("RADIOLOGY_DATA_ROOT", str(root))
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "no-bundle")
    at = AppTest.from_file(str(ROOT / "pages/2_Evaluation.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert any(c.value == "Showing the 12 most confident of 14 mistakes." for c in at.caption)
    assert len(at.dataframe[-1].value) == 14
    at.slider[0].set_value(14).run()
    assert any(c.value == "All 14 mistakes, most confident first." for c in at.caption)


def test_evaluation_says_why_accuracy_per_source_is_missing(app_env):
    """Without manifest.csv the Evaluation page keeps the per-source heading and says why it has no table."""
    at = AppTest.from_file(str(ROOT / "pages/2_Evaluation.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert "Accuracy per source" in [s.value for s in at.subheader]
    assert any("no manifest.csv with a source column" in c.value for c in at.caption), [c.value for c in at.caption]


def test_dataset_page_captions_samples(app_env):
    """Each sample image on the Dataset page carries its file name."""
    at = AppTest.from_file(str(ROOT / "pages/4_Dataset.py"), default_timeout=120).run()
    captions = [c for image in at.image for c in image.captions]
    assert captions and all(c.endswith(".png") for c in captions), captions


def _run_without_gate(tiny_run, runs: Path, name: str) -> Path:
    """A promoted copy of the tiny run whose model file carries no gate statistics, as a model fitted before
    the gate existed."""
    from dataclasses import replace

    from radiology.model import load_model, save_model

    run = runs / name
    shutil.copytree(tiny_run, run)
    old = load_model(run / "model.keras")
    save_model(old.model, run / "model.keras", replace(old.metadata, ood=None))
    registry.set_active(registry.load_run(run), runs)
    return run


def test_classify_fits_the_gate_in_the_background(tiny_run, tmp_path, monkeypatch):
    """A model without gate statistics says so in a full sentence and offers Fit the gate; the job runs in the
    background on the chosen folder, and when it ends the page loads the model with its gate and says so."""
    from radiology.model import read_metadata
    from radiology.ood import load_stats

    runs = tmp_path / "runs"
    run = _run_without_gate(tiny_run, runs, "20260101-000000-nogate")
    make_dataset(tmp_path / "data" / "tiny", per_class=8)  # a test split of 3 images, evaluated under the new gate
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(runs))
    monkeypatch.setenv("RADIOLOGY_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "no-bundle")
    at = AppTest.from_file(str(ROOT / "pages/1_Classify.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("The out-of-distribution check is unavailable for this model") for c in at.caption)
    assert any("differs from the one the model was trained on" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Fit the gate").click().run()
    assert not at.exception, at.exception
    status = evaluation_job.read_status(run)
    assert status["kind"] == "fit-ood" and status["data"] == str((tmp_path / "data" / "tiny").resolve())
    deadline = time.monotonic() + 400
    while evaluation_job.is_running(run) and time.monotonic() < deadline:
        time.sleep(1)
    status = evaluation_job.read_status(run)
    assert status["state"] == "succeeded", (status, (run / "evaluation_console.txt").read_text()[-2000:])
    assert load_stats(read_metadata(run / "model.keras")) is not None
    assert status["evaluation"] == status["job"] and (run / "evaluations" / status["job"] / "metrics.json").is_file()
    at.run()
    assert not at.exception, at.exception
    assert any("gate of 20260101-000000-nogate is fitted on" in s.value for s in at.success), at.success
    assert not any("unavailable" in c.value for c in at.caption)
    assert not [b for b in at.button if b.label == "Fit the gate"]


def _submit_estimate(at: AppTest, monkeypatch) -> list:
    """Clicks Estimate duration with launch.estimate replaced by a recorder; returns the configs it was given."""
    from training import launch

    asked = []
    monkeypatch.setattr(launch, "estimate", lambda config: asked.append(config) or {})
    next(b for b in at.button if b.label == "Estimate duration").click().run()
    assert not at.exception, at.exception
    return asked


def test_training_form_keeps_its_values_across_pages(app_env):
    """Going to another page and back, which makes Streamlit drop the form's widget values, finds the launch
    form as it was left, not at the config's defaults."""
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    at.switch_page("pages/3_Training.py").run()
    # AppTest registers no clicks after switch_page, so the values are put in as a submitted form leaves them
    for key, value in {"train_epochs": 3, "train_image_size": 64, "train_seed": 7, "train_weights": "none"}.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/4_Dataset.py").run()
    assert "train_epochs" not in at.session_state  # what made the form forget
    at.switch_page("pages/3_Training.py").run()
    assert not at.exception, at.exception
    numbers = {n.label: n.value for n in at.number_input}
    assert (numbers["Epochs"], numbers["Image size (px)"], numbers["Seed"]) == (3, 64, 7)
    assert next(s for s in at.selectbox if s.label == "Initial weights").value == "none"


def test_training_form_submits_and_keeps_the_chosen_run_as_initial_weights(app_env, monkeypatch):
    """The submitted values reach the estimate; a run that finishes meanwhile, which lengthens the list of
    initial weights, leaves the chosen one chosen."""
    runs = app_env / "runs"
    at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
    next(n for n in at.number_input if n.label == "Epochs").set_value(3)
    next(n for n in at.number_input if n.label == "Image size (px)").set_value(64)
    next(s for s in at.selectbox if s.label == "Initial weights").select("run 20260101-000000-aaaa")
    assert _submit_estimate(at, monkeypatch)[0].epochs == 3
    newer = runs / "20260104-000000-dddd"
    shutil.copytree(runs / "20260101-000000-aaaa", newer)
    try:
        at.run()
        assert not at.exception, at.exception
        weights = next(s for s in at.selectbox if s.label == "Initial weights")
        assert weights.value == "run 20260101-000000-aaaa" and "run 20260104-000000-dddd" in weights.options
        (config,) = _submit_estimate(at, monkeypatch)
        assert (config.epochs, config.image_size, config.weights) == (3, 64, str(runs / "20260101-000000-aaaa"))
    finally:
        shutil.rmtree(newer)


def test_training_page_takes_19_trainable_layers_and_sets_them_from_scratch(app_env, monkeypatch):
    """The trainable-layers field takes 0 to 19 and says why beside it; choosing weights none sets 19, and
    lowering it again gets a plain warning with the next estimate."""
    at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
    field = next(n for n in at.number_input if n.label == "Trainable VGG16 layers")
    assert (field.min, field.max) == (0, 19)
    assert any(c.value.startswith("0 to 19: VGG16 has 19 layers counting its input layer") for c in at.caption)
    next(s for s in at.selectbox if s.label == "Initial weights").select("none").run()
    assert next(n for n in at.number_input if n.label == "Trainable VGG16 layers").value == 19
    assert _submit_estimate(at, monkeypatch)[0].trainable_layers == 19
    assert not any("frozen at their random weights" in w.value for w in at.warning)
    next(n for n in at.number_input if n.label == "Trainable VGG16 layers").set_value(6)
    assert _submit_estimate(at, monkeypatch)[0].trainable_layers == 6
    assert any("leaves the first 12 of VGG16's 18 layers frozen at their random weights" in w.value for w in at.warning)


def test_training_page_offline_imagenet_says_so_and_takes_the_file(app_env, tmp_path, monkeypatch):
    """Offline without the ImageNet file, the page says so beside Initial weights and offers the upload; Estimate
    and Launch show that message, not a dead process or a raw URL error; an uploaded copy lands where Keras looks."""
    import hashlib

    import streamlit as st

    from radiology import pretrained

    (tmp_path / "keras-home").mkdir()  # as importing Keras makes it
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(pretrained, "can_download", lambda **_: False)
    before = sorted(p.name for p in (app_env / "runs").iterdir() if p.name[:1].isdigit())
    at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
    assert next(s for s in at.selectbox if s.label == "Initial weights").value == "imagenet"
    (warning,) = [w.value for w in at.warning if "ImageNet weights" in w.value]
    assert "not in the Keras cache" in warning and "weights none" in warning and "upload" in warning
    for button in ("Estimate duration", "Launch training"):
        next(b for b in at.button if b.label == button).click().run()
        assert not at.exception, at.exception
        assert any("cannot be downloaded" in e.value and "weights none" in e.value for e in at.error), at.error
        assert not any("died" in e.value or "URL fetch" in e.value for e in at.error)
    assert sorted(p.name for p in (app_env / "runs").iterdir() if p.name[:1].isdigit()) == before  # no run made
    stand_in = b"the weights file, as far as this test goes"
    monkeypatch.setattr(pretrained, "IMAGENET_MD5", hashlib.md5(stand_in).hexdigest())
    monkeypatch.setattr(  # the weights uploader gets the file; the page's other uploader (import a model) none
        st,
        "file_uploader",
        lambda label, *a, **k: (
            _Upload(pretrained.IMAGENET_FILE, stand_in) if pretrained.IMAGENET_FILE in label else None
        ),
    )
    at.run()
    assert not at.exception, at.exception
    assert (tmp_path / "keras-home" / "models" / pretrained.IMAGENET_FILE).read_bytes() == stand_in
    assert any(s.value.startswith("Saved the ImageNet weights to") for s in at.success)
    assert any("are in the Keras cache" in c.value for c in at.caption)


def _forms(node):
    """The form blocks under an AppTest node."""
    for child in getattr(node, "children", {}).values():
        if getattr(child, "type", None) == "form":
            yield child
        yield from _forms(child)


def test_training_page_shows_a_running_estimate_and_enter_does_not_submit(app_env):
    """While an estimate holds the training lock, the run panel says so (not "No training is running") and a
    launch is refused naming it; the launch form does not submit on Enter."""
    import subprocess

    from radiology import jobs
    from radiology.registry import TrainingLock

    runs = app_env / "runs"
    timer = subprocess.Popen(["sleep", "60"])
    record = runs / ".cache" / "estimates" / "0123456789abcdef.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    config = {"data": str(app_env / "data" / "tiny"), "image_size": 64, "batch_size": 8}
    jobs.update_status(record, "queued", job="e", restart=True, config=config)
    jobs.update_status(record, "running", job="e", pid=timer.pid, pid_start=jobs.process_start(timer.pid))
    jobs.update_status(record, job="e", phase="timing training steps")
    lock = TrainingLock(runs)
    assert lock.acquire()
    try:
        at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
        assert not at.exception, at.exception
        assert any(i.value.startswith("A duration estimate is running: timing training steps…") for i in at.info)
        assert "64 px, batch 8" in next(i.value for i in at.info if "duration estimate is running" in i.value)
        assert not any(c.value == "No training is running." for c in at.caption)
        next(s for s in at.selectbox if s.label == "Initial weights").select("none").run()  # nothing to download
        next(b for b in at.button if b.label == "Launch training").click().run()
        errors = [e.value for e in at.error]
        assert any("a duration estimate is running (timing training steps)" in e for e in errors), errors
        (form,) = [f.proto.form for f in _forms(at.main) if f.proto.form.form_id == "launch"]
        assert form.enter_to_submit is False
    finally:
        lock.release()
        timer.kill()
        timer.wait()
        record.unlink()


def test_promote_asks_before_a_worse_run_and_the_table_follows(app_env):
    """Promoting a run that measured worse on the active model's test images asks first, naming both accuracies;
    confirmed, it becomes active and the runs table ticks it at once. A run not worse is promoted directly."""
    runs = app_env / "runs"
    worse = runs / "20260105-000000-eeee"
    shutil.copytree(runs / "20260101-000000-aaaa", worse)
    metrics = json.loads((worse / "metrics.json").read_text())
    (worse / "metrics.json").write_text(json.dumps({**metrics, "accuracy": metrics["accuracy"] / 2}))

    def active_in_table(at):
        table = next(d.value for d in at.dataframe if "active" in d.value.columns)
        return list(table.loc[table["active"], "run"])

    try:
        at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
        next(s for s in at.selectbox if s.label == "Run to promote").select(worse.name).run()
        next(b for b in at.button if b.label == "Promote").click().run()
        assert not at.exception, at.exception
        (asked,) = [w.value for w in at.warning if w.value.startswith(f"Promote {worse.name} in place of")]
        assert f"{metrics['accuracy'] / 2:.1%} accuracy on the test split" in asked and "20260102-000000-bbbb" in asked
        assert registry.active_run(runs).id == "20260102-000000-bbbb"
        next(b for b in at.button if b.label == f"Promote {worse.name} anyway").click().run()
        assert not at.exception, at.exception
        assert registry.active_run(runs).id == worse.name and active_in_table(at) == [worse.name]
        assert any(s.value.startswith(f"{worse.name} is now the active model") for s in at.success)
        next(s for s in at.selectbox if s.label == "Run to promote").select("20260102-000000-bbbb").run()
        next(b for b in at.button if b.label == "Promote").click().run()  # better than the active one: no question
        assert registry.active_run(runs).id == "20260102-000000-bbbb"
        assert active_in_table(at) == ["20260102-000000-bbbb"]
    finally:
        registry.set_active(registry.load_run(runs / "20260102-000000-bbbb"), runs)
        shutil.rmtree(worse)


def test_resume_shows_the_run_at_once_and_cancel_says_cancelling(app_env, monkeypatch):
    """Right after Resume the page shows the run queued and resuming after its last epoch, not "cancelled" with
    the old progress; Cancel then shows "cancelling…" while the current batch finishes."""
    import subprocess

    runs = app_env / "runs"
    stopped = runs / "20260106-000000-ffff"
    shutil.copytree(runs / "20260101-000000-aaaa", stopped)
    (stopped / "status.json").write_text(json.dumps({"state": "cancelled", "pid": 1}))
    (stopped / "last.keras").write_bytes(b"checkpoint")
    (stopped / "progress.json").write_text(json.dumps({"phase": "training", "epoch": 1, "batch": 2, "batches": 3}))
    real_popen, children = subprocess.Popen, []

    def child(args, **kwargs):  # the resumed run's process: holds the training lock, outlives a cancel's SIGTERM
        children.append(real_popen(["bash", "-c", "trap '' TERM; sleep 60"], pass_fds=kwargs.get("pass_fds", ())))
        return children[-1]

    monkeypatch.setattr(subprocess, "Popen", child)
    try:
        at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=120).run()
        next(s for s in at.selectbox if s.label == "Run to resume").select(stopped.name).run()
        next(b for b in at.button if b.label == "Resume").click().run()
        assert not at.exception, at.exception
        assert f"Run {stopped.name}: resuming after epoch 1 of 1" in [s.value for s in at.subheader]
        table = next(d.value for d in at.dataframe if "status" in d.value.columns)
        assert table.loc[table["run"] == stopped.name, "status"].item() == "queued"
        assert f"Resumed run {stopped.name}." in [s.value for s in at.success]
        next(b for b in at.button if b.label == "Cancel run").click().run()
        assert not at.exception, at.exception
        assert any(i.value.startswith("Cancelling… the run stops after its current batch") for i in at.info)
        at.run()  # the panel's next tick, while the run finishes its batch
        assert f"Run {stopped.name}: cancelling…" in [s.value for s in at.subheader]
        assert any(i.value.startswith("Cancelling…") for i in at.info)
        assert not [b for b in at.button if b.label == "Cancel run"]
    finally:
        for proc in children:
            proc.kill()
            proc.wait()
        shutil.rmtree(stopped)


def test_home_describes_an_imported_checkpoint_by_its_history(tmp_path, monkeypatch):
    """An imported last.keras saved at epoch 2 of 9 is described on Home as 'epochs: 2 of 9'."""
    import keras

    from radiology.imports import import_model
    from radiology.model import ModelMetadata, save_checkpoint

    inp = keras.Input((32, 32, 3))
    x = keras.layers.GlobalMaxPooling2D()(keras.layers.Conv2D(4, 3, name="my_conv")(inp))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    meta = ModelMetadata(train_config={"epochs": 9, "weights": "none", "data": "cxr3"})
    history = [{"epoch": 1, "loss": 1.1}, {"epoch": 2, "loss": 0.9}]
    path = save_checkpoint(model, tmp_path / "last.keras", meta, {"epoch": 2, "history": history})
    registry.set_active(import_model(path, runs_dir=tmp_path / "runs"), tmp_path / "runs")
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "none")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "epochs: 2 of 9;" in text and "epochs: 9;" not in text


def test_dataset_reports_decode_at_the_training_forms_image_size(app_env, monkeypatch):
    """The dataset check decodes at the Training form's image size, its default until it is changed, so that a
    run then finds the images in the decode cache at its own size."""
    import ui
    from radiology import splits

    sizes, real = [], splits.check_splits
    monkeypatch.setattr(
        splits, "check_splits", lambda *a, spec=None, **k: sizes.append(spec.height) or real(*a, spec=spec, **k)
    )
    ui.dataset_report.clear()
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    at.switch_page("pages/4_Dataset.py").run()
    assert sizes == [224], sizes
    at.switch_page("pages/3_Training.py").run()
    at.session_state["train_image_size"] = 64
    at.run()
    at.switch_page("pages/4_Dataset.py").run()
    assert not at.exception, at.exception
    assert sizes[-1] == 64 and set(sizes) == {224, 64}, sizes


def test_evaluation_page_audits_a_run_in_the_background(tmp_path, monkeypatch):
    """The Trust section says a run is not audited, starts the audit as a background job with progress, then
    shows its verdict, the faithfulness table with both baselines, the curves and the shortcut tables."""
    from radiology import audit
    from tests.factories import corner_dataset, corner_run

    run_dir = corner_run(tmp_path / "runs" / "20260101-000000-corn")
    corner_dataset(tmp_path / "data" / "corner", per_class=10)
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("RADIOLOGY_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "no-bundle")
    at = AppTest.from_file(str(ROOT / "pages/2_Evaluation.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert "Trust" in _texts(at) and any("has not been audited yet" in i.value for i in at.info)
    next(n for n in at.number_input if n.label == "Images for the faithfulness curves").set_value(3).run()
    next(b for b in at.button if b.label == "Audit on the test split of corner").click().run()
    assert not at.exception, at.exception
    status = evaluation_job.read_status(run_dir)
    assert status["kind"] == "audit" and status["data"] == str((tmp_path / "data" / "corner").resolve())
    deadline = time.monotonic() + 400
    while evaluation_job.is_running(run_dir) and time.monotonic() < deadline:
        time.sleep(1)
    status = evaluation_job.read_status(run_dir)
    console = (run_dir / "evaluation_console.txt").read_text()[-2000:]
    assert status["state"] == "succeeded", (status, console)
    at.run()
    assert not at.exception, at.exception
    assert audit.latest_audit(run_dir)["id"] == status["job"]
    assert any(w.value.startswith("From the borders alone this model still gets 100% right") for w in at.warning)
    assert any(c.value.startswith("Audited on test split of ") for c in at.caption)
    assert any(c.value == "Last trust audit: test split of " + status["data"] for c in at.caption)
    (faithfulness,) = [d.value for d in at.dataframe if "map" in d.value.columns]
    assert set(faithfulness["map"]) == {
        "Grad-CAM",
        "Grad-CAM++",
        "ScoreCAM",
        "LayerCAM",
        "random map (baseline)",
        "centre map (baseline)",
    }
    (shortcuts,) = [d.value for d in at.dataframe if "input" in d.value.columns]
    assert list(shortcuts["input"]) == ["full image", "borders only", "thorax only"]
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert sum("Deletion" in t or "Insertion" in t for t in titles) == 2


def test_classify_orders_the_methods_by_the_audit(app_env, monkeypatch):
    """With an audit of the active model, Classify offers its most faithful method first and marks those no
    better than random; without one it keeps the usual order and says the model is not audited."""
    from radiology.audit import save_audit
    from radiology.explain import METHODS

    film = png_bytes(xray(7))
    _fake_explanations(monkeypatch, {film: [0.1, 0.8, 0.1]})
    at = _classify(monkeypatch, {"film.png": film})
    assert at.selectbox[0].options == list(METHODS)
    assert any(c.value.startswith("Not audited: the methods are in their usual order") for c in at.caption)
    scores = dict(zip(METHODS, (0.2, 0.1, 0.0, 0.3)))
    methods = {m: {"score": v, "better_than_random": m != "ScoreCAM"} for m, v in scores.items()}
    ranking = sorted(methods, key=lambda m: -methods[m]["score"])
    run_dir = app_env / "runs" / "20260102-000000-bbbb"
    folder = save_audit(
        run_dir,
        "20260103-000000-aaaa",
        {"faithfulness": {"methods": methods, "ranking": ranking, "n": 90, "layer": "x"}},
    )
    try:
        at = _classify(monkeypatch, {"film.png": film})
        assert at.selectbox[0].options == ["LayerCAM", "Grad-CAM", "Grad-CAM++", "ScoreCAM (no better than random)"]
        assert at.selectbox[0].value == "LayerCAM"
        assert any(c.value.startswith("Most faithful first, as measured for this model") for c in at.caption)
    finally:
        shutil.rmtree(folder.parent)
