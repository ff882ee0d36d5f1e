"""End-to-end tests in headless Chromium: upload, evaluation, training from the browser, promotion.

Runs ``streamlit run`` on a free localhost port and drives Debian's Chromium with Playwright.
Screenshots of each page go to ``test-artifacts/``.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from radiology import registry
from radiology.explain import METHODS
from tests.factories import CHROMIUM_ARGS, dicom_bytes, free_port, make_dataset, png_bytes, start_app, xray

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """A Streamlit server on a free port, with the tiny run promoted and a tiny dataset in its data root."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("RADIOLOGY_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    base = tmp_path_factory.mktemp("browser")
    runs = base / "runs"
    runs.mkdir()
    shutil.copytree(tiny_run, runs / "20260101-000000-seed")
    registry.set_active(registry.load_run(runs / "20260101-000000-seed"), runs)
    make_dataset(base / "data" / "tiny", per_class=10)
    port = free_port()
    env = {
        **os.environ,
        "RADIOLOGY_RUNS_DIR": str(runs),
        "RADIOLOGY_DATA_ROOT": str(base / "data"),
        "RADIOLOGY_BUNDLED_DIR": str(base / "no-bundle"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    log = open(base / "streamlit.log", "wb")
    try:
        proc = start_app(port, env, log=log)
    except RuntimeError as exc:
        pytest.fail(f"{exc}: " + (base / "streamlit.log").read_text()[-2000:])
    url = f"http://127.0.0.1:{port}"
    yield {"url": url, "runs": runs, "base": base}
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Playwright), one per module: Playwright's sync API allows one instance at a time."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(server, browser):
    """A Chromium page with a generous default timeout for a 2-core machine."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.set_default_timeout(120_000)
    yield pg
    pg.close()


def _open(page, server, path, heading):
    page.goto(f"{server['url']}/{path}")
    page.get_by_role("heading", name=heading).first.wait_for()


def _shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _select(page, label, option):
    box = page.get_by_role("combobox", name=label, exact=True)
    box.click()
    box.press("ArrowDown")  # opens the list
    page.get_by_role("option", name=option, exact=True).click()


def test_classify_png_and_dicom(page, server, tmp_path):
    """Uploading a PNG and an extension-less DICOM shows each predicted class and a Grad-CAM overlay."""
    png = tmp_path / "chest.png"
    png.write_bytes(png_bytes(xray(1, size=(300, 280))))
    dcm = tmp_path / "IM0001"
    dcm.write_bytes(dicom_bytes(xray(2, size=(256, 256))))
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image")
    _open(page, server, "Classify", "Classify")
    page.locator("input[type=file]").set_input_files([str(png), str(dcm), str(bad)])
    flagged = 0
    for name in ("chest.png", "IM0001"):
        page.get_by_role("heading", name=f"{name}:").first.wait_for()
        heading = page.get_by_role("heading", name=f"{name}:").first.inner_text()
        # the tiny model's gate, fitted on six validation images, may flag a synthetic film
        flagged += "not a chest X-ray?" in heading
        # an untrained tiny model may also answer too flatly for a confident prediction
        assert any(
            c in heading for c in ("not a chest X-ray?", "no confident prediction", "covid", "normal", "pneumonia")
        ), heading
    for k in range(flagged):
        page.get_by_text("show the prediction anyway").nth(k).click()
        page.get_by_text("Prediction despite the warning").nth(k).wait_for()
    page.get_by_text("Grad-CAM overlay").nth(1).wait_for()
    page.get_by_text("notes.png: not an image").wait_for()
    page.get_by_text("Download CSV").wait_for()
    assert "Doe^Jane" not in page.content() and "SECRET-123" not in page.content()
    _shot(page, "classify")


def test_slider_rerun_does_not_call_the_model(page, server):
    """Moving the opacity slider re-renders the overlays from the cache, without a model call."""
    slider = page.get_by_role("slider").first
    slider.focus()
    page.keyboard.press("ArrowRight")
    from playwright.sync_api import expect

    expect(page.get_by_text("Grad-CAM from cache: no model call")).to_have_count(2, timeout=60_000)
    expect(page.get_by_text("computed in")).to_have_count(0)
    expect(page.get_by_role("slider").first).to_have_attribute("aria-valuetext", "0.45")


def test_classify_hides_the_label_of_a_photograph(page, server, tmp_path):
    """A colour photograph gets the out-of-distribution warning; its label shows after "show the prediction anyway"."""
    from tests.test_ood import _photo_bytes

    photo = tmp_path / "temple.jpg"
    photo.write_bytes(_photo_bytes())
    film = tmp_path / "film.png"
    film.write_bytes(png_bytes(xray(1, size=(300, 280))))
    _open(page, server, "Classify", "Classify")
    page.locator("input[type=file]").set_input_files([str(photo), str(film)])
    page.get_by_role("heading", name="temple.jpg: not a chest X-ray?").wait_for()
    page.get_by_text("This does not look like a frontal chest X-ray (colour image").wait_for()
    assert page.get_by_text("Prediction despite the warning").count() == 0
    page.get_by_text("show the prediction anyway").first.click()
    page.get_by_text("Prediction despite the warning").wait_for()
    with page.expect_download() as download:
        page.get_by_text("Download CSV").click()
    rows = Path(download.value.path()).read_text().splitlines()
    assert "in_distribution" in rows[0].split(",") and any(r.startswith("temple.jpg,False,") for r in rows), rows
    _shot(page, "classify-ood")


def test_evaluation_shows_confusion_matrix(page, server):
    """The evaluation page of the active run draws its confusion matrices."""
    _open(page, server, "Evaluation", "Evaluation")
    page.get_by_role("heading", name="Confusion matrix").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    page.get_by_text("Confusion matrix (counts)").first.wait_for()
    _shot(page, "evaluation")


def test_evaluate_a_run_from_the_page(page, server):
    """Evaluating the active run on the tiny dataset from the page shows a progress bar, then its accuracy."""
    _open(page, server, "Evaluation", "Evaluate on a dataset")
    page.get_by_text("differs from the one the model was trained on").wait_for()
    page.get_by_role("button", name="Evaluate", exact=True).click()
    page.get_by_text("Evaluating on").first.wait_for()
    _shot(page, "evaluation-running")
    page.get_by_text("Last evaluation: test split of").wait_for(timeout=400_000)
    tiny = str((server["base"] / "data" / "tiny").resolve())
    page.get_by_text(tiny).first.wait_for()
    accuracy = page.get_by_test_id("stMetricValue").first.inner_text()
    assert accuracy.endswith("%"), accuracy
    _shot(page, "evaluation-done")


def test_dataset_page(page, server):
    """The dataset page shows the class balance and the leakage report of the tiny dataset."""
    _open(page, server, "Dataset", "Dataset")
    page.get_by_role("heading", name="Validation and leakage").wait_for()
    page.get_by_text("No exact or near-duplicate images across splits.").wait_for()
    _shot(page, "dataset")


def test_train_one_epoch_then_promote(page, server):
    """A 1-epoch training launched from the page reaches completion; promoting it switches Classify."""
    before = {p.name for p in server["runs"].iterdir()}
    _open(page, server, "Training", "Training")
    page.get_by_text("No exact or near-duplicate images across splits.").wait_for()
    epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
    epochs.fill("1")
    epochs.press("Tab")
    _select(page, "Initial weights", "none")
    _select(page, "Compute", "float32")  # auto would first time XLA, minutes at 224 px on 2 cores
    page.get_by_role("button", name="Launch training").click()
    page.get_by_text("Launched run").wait_for()
    new = sorted({p.name for p in server["runs"].iterdir()} - before - {".cache", ".training.lock"})
    assert len(new) == 1, new
    run_id = new[0]
    page.get_by_text(f"Run {run_id}").first.wait_for()
    page.get_by_text("Epoch 1 of 1").first.wait_for()
    _shot(page, "training-live")
    deadline = time.monotonic() + 240
    while registry.load_run(server["runs"] / run_id).state in registry.LIVE_STATES:
        assert time.monotonic() < deadline, registry.load_run(server["runs"] / run_id).log_tail()
        time.sleep(1)
    assert registry.load_run(server["runs"] / run_id).state == "succeeded"
    page.get_by_text(f"Last run {run_id}: succeeded, accuracy").wait_for()
    _open(page, server, "Training", "Runs")  # a fresh page re-attaches to the registry
    _select(page, "Run to promote", run_id)
    page.get_by_role("button", name="Promote").click()
    page.get_by_text(f"{run_id} is now the active model").wait_for()
    _shot(page, "training-done")
    _open(page, server, "Classify", "Classify")
    page.get_by_text(f"Model: {run_id}").wait_for()
    _open(page, server, "", "RadiologyAI")
    page.get_by_text(run_id).first.wait_for()
    _shot(page, "home")


def test_enter_in_the_training_form_starts_nothing(page, server):
    """Enter in a number field of the launch form neither estimates nor launches; beside Initial weights the
    page says whether the ImageNet weights are at hand."""
    from playwright.sync_api import expect

    runs = server["runs"]
    before = sorted(p.name for p in runs.iterdir() if p.name[:1].isdigit())
    _open(page, server, "Training", "Training")
    page.get_by_text("No exact or near-duplicate images across splits.").wait_for()
    page.get_by_text("The ImageNet weights").first.wait_for()
    epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
    epochs.fill("3")
    epochs.press("Enter")
    page.wait_for_timeout(3000)  # a submitted form would have started an estimate by now
    expect(page.get_by_text("Estimating:")).to_have_count(0)
    assert sorted(p.name for p in runs.iterdir() if p.name[:1].isdigit()) == before  # no run launched
    assert not list((runs / ".cache" / "estimates").glob("*.json"))
    page.get_by_text("0 to 19: VGG16 has 19 layers").wait_for()
    _shot(page, "training-form")


def test_fit_the_gate_from_classify(page, server):
    """A model without gate statistics offers Fit the gate on Classify; the background fit shows its progress and,
    when it ends, the page says the gate is active and stops offering it."""
    from dataclasses import replace

    from playwright.sync_api import expect

    from radiology.model import load_model, save_model

    runs = server["runs"]
    seed = registry.load_run(runs / "20260101-000000-seed")
    bare = runs / "20260101-000001-nogate"
    shutil.copytree(seed.dir, bare)
    old = load_model(bare / "model.keras")
    save_model(old.model, bare / "model.keras", replace(old.metadata, ood=None))
    registry.set_active(registry.load_run(bare), runs)
    try:
        _open(page, server, "Classify", "Classify")
        page.get_by_text("The out-of-distribution check is unavailable for this model").wait_for()
        page.locator("summary", has_text="Fit the gate").click()
        page.get_by_text("differs from the one the model was trained on").wait_for()
        _shot(page, "classify-gate")
        page.get_by_role("button", name="Fit the gate").click()
        page.get_by_text("is fitted on").wait_for(timeout=400_000)
        expect(page.get_by_text("The out-of-distribution check is unavailable")).to_have_count(0)
        _shot(page, "classify-gate-fitted")
    finally:
        registry.set_active(seed, runs)


def _fresh_app(tmp_path, bundled_dir: Path):
    """A Streamlit server nobody has visited yet, with an empty runs folder and data root; yields its URL."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("RADIOLOGY_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    (tmp_path / "runs").mkdir()
    (tmp_path / "data").mkdir()
    env = {
        **os.environ,
        "RADIOLOGY_RUNS_DIR": str(tmp_path / "runs"),
        "RADIOLOGY_DATA_ROOT": str(tmp_path / "data"),
        "RADIOLOGY_BUNDLED_DIR": str(bundled_dir),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    port = free_port()
    with open(tmp_path / "streamlit.log", "wb") as log:
        proc = start_app(port, env, log=log)
        yield f"http://127.0.0.1:{port}"
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # a server busy with a real model may not stop in time
            proc.kill()
            proc.wait(10)


@pytest.fixture
def fresh_server(tmp_path):
    """A fresh server with no model at all."""
    yield from _fresh_app(tmp_path, tmp_path / "no-bundle")


@pytest.fixture
def fresh_clone(tmp_path):
    """A fresh server as a clone of the repository starts: no run, the shipped model in models/default."""
    yield from _fresh_app(tmp_path, ROOT / "models" / "default")


def _nav_labels(pg) -> list[str]:
    return [link.locator("span").last.inner_text() for link in pg.locator('[data-testid="stSidebarNavLink"]').all()]


def test_deep_links_show_the_app_navigation(fresh_server, browser):
    """Each page's URL opened first, in a fresh browser context, shows the app's navigation and the page's title."""
    expected = ["Home", "Classify", "Evaluation", "Training", "Dataset"]
    # Deep links first: the server starts in Streamlit's pages-directory mode until a script declares navigation.
    pages = [("Classify", "Classify"), ("Evaluation", "Evaluation"), ("Training", "Training"), ("Dataset", "Dataset")]
    for path, title in [*pages, ("home", "RadiologyAI"), ("", "RadiologyAI")]:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = context.new_page()
        pg.set_default_timeout(120_000)
        pg.goto(f"{fresh_server}/{path}")
        pg.get_by_role("heading", name=title).first.wait_for()
        deadline = time.monotonic() + 30
        while _nav_labels(pg) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _nav_labels(pg) == expected, (path, _nav_labels(pg))
        pg.get_by_role("heading", name=title).first.wait_for()
        if path == "Classify":
            _shot(pg, "deep-link-classify")
        context.close()


def test_import_notebook_h5_promote_and_classify(page, server, notebook_h5, tmp_path):
    """The notebook's Keras 2 best_model.h5, imported on the Training page with another class order,
    promoted and evaluated on a generated dataset, serves Classify with its own labels; a file that is not a
    model is refused first."""
    from radiology import confidence
    from radiology.model import load_model, predict_images

    not_model = tmp_path / "notes.h5"
    not_model.write_bytes(png_bytes(xray(5)))
    before = {p.name for p in server["runs"].iterdir()}
    _open(page, server, "Training", "Runs")
    panel = page.get_by_test_id("stExpander").filter(has_text="Import a model file")
    panel.get_by_text("Import a model file").click()
    upload = panel.locator("input[type=file]")  # the panel's own: the form above may offer a weights upload
    upload.set_input_files(str(not_model))
    page.get_by_text("notes.h5 is not a model file").wait_for()
    upload.set_input_files(str(notebook_h5))  # 60 MB: give the upload time on a busy 2-core machine
    try:
        page.get_by_text("best_model.h5 carries no metadata").wait_for(timeout=300_000)
    except Exception:
        _shot(page, "import-failed")
        raise
    order = page.get_by_label("Class order (output 0, 1, 2…)")
    assert order.input_value() == "covid, normal, pneumonia"
    order.fill("pneumonia, covid, normal")
    page.get_by_role("button", name="Import model").click()
    try:
        # the import's outcome: after a training in the same server the success line may render off screen
        page.get_by_text("class order set on loading: pneumonia, covid, normal").wait_for(timeout=300_000)
    except Exception:
        _shot(page, "import-not-done")
        raise
    new = sorted({p.name for p in server["runs"].iterdir()} - before - {".cache", ".training.lock"})
    assert len(new) == 1 and not new[0].startswith("."), new
    run_id = new[0]
    page.get_by_text("classes pneumonia, covid, normal (set on import)").wait_for()
    _shot(page, "import")
    _select(page, "Run to promote", run_id)
    page.get_by_role("button", name="Promote").click()
    page.get_by_text(f"{run_id} is now the active model").wait_for()

    # evaluated on the generated dataset, the imported run shows metrics like a trained one
    _open(page, server, "Evaluation", "Evaluate on a dataset")
    page.get_by_text("carries no fingerprint of its training data").wait_for()
    page.get_by_role("button", name="Evaluate", exact=True).click()
    page.get_by_text("Last evaluation: test split of").wait_for(timeout=400_000)
    # an evaluation is a record of its own; an imported run has no training-time test
    assert list((server["runs"] / run_id / "evaluations").glob("*/metrics.json"))
    assert not (server["runs"] / run_id / "metrics.json").exists()
    assert page.get_by_test_id("stMetricValue").first.inner_text().endswith("%")
    _shot(page, "import-evaluated")

    png = tmp_path / "chest.png"
    image = xray(7, size=(300, 280))
    png.write_bytes(png_bytes(image))
    loaded = load_model(server["runs"] / run_id / "model.keras")
    probs = predict_images(loaded, [image])[0]
    names = loaded.metadata.class_names
    expected = (
        f"chest.png: {names[int(probs.argmax())]} ({probs.max():.1%})"
        if confidence.assess(probs, names).confident
        else "chest.png: no confident prediction"
    )
    _open(page, server, "Classify", "Classify")
    page.get_by_text(f"Model: {run_id}").wait_for()
    page.locator("input[type=file]").set_input_files(str(png))
    page.get_by_role("heading", name=expected).wait_for()
    page.get_by_text("Grad-CAM overlay").first.wait_for()
    _shot(page, "import-classify")


def test_fresh_clone_classifies_with_the_bundled_model(fresh_clone, browser, tmp_path):
    """With no run, Home shows the shipped model's card summary and Classify predicts an upload at once."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(120_000)
    pg.goto(fresh_clone)
    pg.get_by_role("heading", name="Model bundled").wait_for()
    pg.get_by_text("Accuracy per source collection", exact=True).wait_for()
    pg.get_by_text("Limits").first.wait_for()
    assert "No model yet" not in pg.content()
    _shot(pg, "fresh-clone-home")
    film = tmp_path / "film.png"
    film.write_bytes(png_bytes(xray(4, size=(320, 300))))
    pg.goto(f"{fresh_clone}/Classify")
    pg.get_by_text("calibrated with temperature").wait_for()
    pg.locator("input[type=file]").set_input_files(str(film))
    heading = pg.get_by_role("heading", name="film.png:").first
    heading.wait_for()
    if "not a chest X-ray?" in heading.inner_text():  # a generated film may not pass the real model's gate
        pg.get_by_text("show the prediction anyway").click()
        pg.get_by_text("Prediction despite the warning").wait_for()
    else:
        assert any(c in heading.inner_text() for c in ("covid", "normal", "pneumonia"))
    # the bundled model's trust audit puts its most faithful method first, whichever that is
    methods = "|".join(map(re.escape, METHODS))
    pg.get_by_text(re.compile(rf"^({methods}) overlay, block5_conv3$")).first.wait_for()
    _shot(pg, "fresh-clone-classify")
    context.close()
