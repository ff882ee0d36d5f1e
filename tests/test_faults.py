"""Fault tests: hostile files, training processes killed at every phase, a full disk, concurrency, security."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radiology import registry
from radiology.errors import ImageDecodeError, TrainingBusyError
from radiology.images import decode_image
from radiology.model import load_model
from tests.factories import dicom_bytes, jpeg_bytes, make_dataset, png_bytes, xray

ROOT = Path(__file__).resolve().parent.parent
RECORDING = threading.Event()
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _hostile_corpus() -> dict[str, bytes]:
    big = png_bytes(xray(size=(200, 200)))
    jpg = jpeg_bytes(Image.fromarray(xray(size=(200, 200))))
    rgb = Image.fromarray(np.stack([xray(), xray(1), xray(2)], axis=-1))
    exif = Image.Exif()
    exif[0x0112] = 8
    zip_buf = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(zip_buf, "w") as zf:
        zf.writestr("a.txt", "hello")
    frames = [Image.fromarray(np.full((16, 16), v, np.uint8)) for v in (10, 200)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    photo = np.zeros((120, 160, 3), np.uint8)
    photo[..., 0] = np.linspace(0, 255, 160)[None]
    photo[..., 1] = np.linspace(255, 0, 120)[:, None]
    return {
        "zero.png": b"",
        "truncated.png": big[: len(big) // 2],
        "truncated.jpg": jpg[: len(jpg) // 3],
        "jpeg-named.png": jpg,
        "text.png": b"just some text\n" * 10,
        "page.png": b"<!doctype html><html><body>x</body></html>",
        "archive.png": zip_buf.getvalue(),
        "doc.png": b"%PDF-1.7\n1 0 obj << >> endobj\n%%EOF",
        "bomb.png": _png_header_only(50000, 50000),
        "deep.png": png_bytes(np.linspace(0, 65535, 4096).reshape(64, 64).astype(np.uint16)),
        "cmyk.jpg": jpeg_bytes(rgb.convert("CMYK")),
        "rgba.png": png_bytes(np.asarray(rgb.convert("RGBA"))),
        "palette.png": _encode(rgb.convert("P"), "PNG"),
        "animated.gif": gif.getvalue(),
        "rotated.jpg": jpeg_bytes(Image.fromarray(xray(size=(40, 80))), exif=exif.tobytes()),
        "xray-4000.png": png_bytes(np.tile(xray(size=(400, 400)), (10, 10))),
        "photo.jpg": jpeg_bytes(Image.fromarray(photo)),
        "no-pixels.dcm": dicom_bytes(xray(), with_pixels=False),
        "truncated.dcm": dicom_bytes(xray())[:400],
    }


def _encode(image, fmt):
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _png_header_only(w, h):
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def _try(data) -> tuple[str, float]:
    start = time.perf_counter()
    try:
        gray = decode_image(data)
        assert gray.dtype == np.uint8 and gray.ndim == 2 and min(gray.shape) > 0
        outcome = "decoded"
    except ImageDecodeError as exc:
        assert str(exc), "an error without a message"
        outcome = "clear error"
    return outcome, time.perf_counter() - start


def test_pydicom_test_files_decode_or_fail_clearly():
    """Every file of pydicom's test data decodes to grayscale or raises ImageDecodeError, each within 5 s."""
    from pydicom.data import get_testdata_files

    files = get_testdata_files()
    assert len(files) > 80
    counts = {"decoded": 0, "clear error": 0}
    for path in files:
        outcome, seconds = _try(path)  # anything but ImageDecodeError propagates and fails the test
        counts[outcome] += 1
        assert seconds < 5, (path, seconds)
    assert counts["decoded"] > 40, counts
    print(f"pydicom corpus: {len(files)} files, {counts}")


def test_hostile_corpus():
    """Hostile and odd files either decode sensibly or raise the clear error; the legitimate ones decode."""
    corpus = _hostile_corpus()
    outcomes = {name: _try(data)[0] for name, data in corpus.items()}
    must_decode = {
        "jpeg-named.png",
        "deep.png",
        "cmyk.jpg",
        "rgba.png",
        "palette.png",
        "animated.gif",
        "rotated.jpg",
        "xray-4000.png",
        "photo.jpg",
    }
    assert {n for n, o in outcomes.items() if o == "decoded"} == must_decode, outcomes
    assert decode_image(corpus["rotated.jpg"]).shape == (80, 40)
    print(f"hostile corpus: {len(corpus)} files, {sum(o == 'decoded' for o in outcomes.values())} decoded")


def test_photographs_are_classified(tiny_model):
    """A non-X-ray colour photograph still gets class probabilities (the app does not refuse it)."""
    from radiology.model import predict_images

    probs = predict_images(tiny_model, [decode_image(_hostile_corpus()["photo.jpg"])])
    assert probs.shape == (1, 3) and abs(probs.sum() - 1) < 1e-4


def test_decoding_never_logs_patient_fields(caplog):
    """Decoding a DICOM logs and raises nothing that contains its patient fields."""
    import logging

    caplog.set_level(logging.DEBUG)
    decode_image(dicom_bytes(xray(), patient_name="Secret^Patient"))
    with pytest.raises(ImageDecodeError) as err:
        decode_image(dicom_bytes(xray(), with_pixels=False, patient_name="Secret^Patient"))
    assert "Secret" not in caplog.text and "Secret" not in str(err.value)


# --- training killed at each phase -------------------------------------------------------------

KILL_AT = {
    # phase: code run in the training process before training starts, arranging a SIGKILL at that phase
    "caching": """
import radiology.cache as c
orig = c._decode_one
calls = []
def patched(*a):
    calls.append(1)
    if len(calls) == 6:
        os.kill(os.getpid(), signal.SIGKILL)
    return orig(*a)
c._decode_one = patched
""",
    "mid-epoch": """
import training.trainer as t
orig = t.RunMonitor.update
def patched(self, **kw):
    if self.progress.get("epoch") == 2 and kw.get("batch") == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return orig(self, **kw)
t.RunMonitor.update = patched
""",
    "checkpoint": """
import radiology.fsutil as f
orig = f.os.replace
def patched(src, dst):
    if str(dst).endswith("model.keras"):
        os.kill(os.getpid(), signal.SIGKILL)
    return orig(src, dst)
f.os.replace = patched
""",
    "evaluating": """
import training.trainer as t
def patched(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
t.evaluate_samples = patched
""",
}


@pytest.fixture(scope="module")
def fault_env(tmp_path_factory, tiny_run):
    """A dataset and a runs folder whose active model is a copy of the tiny run."""
    import shutil

    base = tmp_path_factory.mktemp("faults")
    data = make_dataset(base / "data", per_class=8)
    runs = base / "runs"
    runs.mkdir()
    shutil.copytree(tiny_run, runs / "00000000-000000-good")
    registry.set_active(registry.load_run(runs / "00000000-000000-good"), runs)
    return data, runs


@pytest.mark.parametrize("phase", list(KILL_AT))
def test_kill_minus_nine_loses_nothing(fault_env, phase):
    """SIGKILL while caching, mid-epoch, saving a checkpoint or evaluating leaves a readable registry,
    a run read as failed, an intact last checkpoint, the active model unchanged, and no stale lock."""
    data, runs = fault_env
    before = {p.name for p in runs.iterdir()}
    cache = runs.parent / f"cache-{phase}"
    epochs = "2" if phase == "mid-epoch" else "1"  # the mid-epoch kill comes in epoch 2, after a checkpoint
    code = (
        "import os, signal, sys\n" + KILL_AT[phase] + "\nfrom training.__main__ import main\n"
        f"sys.exit(main(['--data', {str(data)!r}, '--epochs', {epochs!r}, '--batch-size', '8', '--weights', 'none', "
        f"'--runs-dir', {str(runs)!r}, '--cache-dir', {str(cache)!r}, '--compute', 'float32']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    (new,) = {p.name for p in runs.iterdir()} - before - {".training.lock", ".cache"}
    runs_listed = registry.list_runs(runs, include_bundled=False)
    run = next(r for r in runs_listed if r.id == new)
    assert run.state == "failed" and "died" in run.error
    # a write killed before its rename leaves at most a .tmp- file (resuming removes it), never a half file
    assert not (run.dir / "metrics.json").exists()
    if phase in ("mid-epoch", "evaluating"):
        assert load_model(run.model_path).model is not None  # the last good checkpoint loads
    else:
        assert not run.has_model  # no half-written model file
    active = registry.active_run(runs)
    assert active.id == "00000000-000000-good" and load_model(active.model_path).model is not None
    lock = registry.TrainingLock(runs)
    assert lock.acquire()
    lock.release()
    if phase == "caching":
        assert not cache.exists() or not [p for p in cache.iterdir() if not p.name.startswith(".tmp-")]


def test_kill_minus_nine_mid_epoch_then_resume_loses_only_that_epoch(tmp_path):
    """A run killed by SIGKILL in its second epoch resumes from the first epoch's checkpoint and reads as one
    run: two history rows, the first unchanged, attempt 2, a test evaluation, no checkpoint left to resume."""
    data = make_dataset(tmp_path / "data", per_class=8)
    runs = tmp_path / "runs"
    argv = ["--data", str(data), "--epochs", "2", "--batch-size", "8", "--weights", "none", "--image-size", "32"]
    argv += ["--runs-dir", str(runs)]
    code = "import os, signal, sys\n" + KILL_AT["mid-epoch"] + f"\nfrom training.__main__ import main\nmain({argv!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    (killed,) = registry.list_runs(runs, include_bundled=False)
    assert killed.state == "failed" and len(killed.history()) == 1 and (killed.dir / "last.keras").is_file()
    first_epoch = killed.history()[0]
    leftover = killed.dir / ".tmp-killedwrite.keras"  # what a kill inside a checkpoint write leaves
    leftover.write_bytes(b"half a model")

    resumed = subprocess.run(
        [sys.executable, "-m", "training", "--resume", str(killed.dir)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    run = registry.load_run(killed.dir)
    assert run.state == "succeeded" and run.status["attempt"] == 2 and run.status["resumed"] >= run.status["started"]
    assert [r["epoch"] for r in run.history()] == [1, 2] and run.history()[0] == first_epoch
    assert "resumed after epoch 1 of 2" in run.log_tail(200) and run.metrics is not None
    assert not (run.dir / "last.keras").exists()  # nothing left to resume
    assert not leftover.exists() and "removed .tmp-killedwrite.keras" in run.log_tail(200)


def test_full_disk_fails_cleanly(tmp_path, monkeypatch):
    """A write error while saving the checkpoint fails the run with a clear message and no model file."""
    import errno
    import zipfile

    from radiology.registry import new_run_dir
    from training.config import TrainConfig
    from training.trainer import run_training

    data = make_dataset(tmp_path / "data", per_class=6)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", full)
    config = TrainConfig(data=str(data), epochs=1, batch_size=8, weights="none", runs_dir=str(tmp_path / "runs"))
    run_dir = new_run_dir(config.runs_dir)
    assert run_training(config, run_dir) == "failed"
    status = json.loads((run_dir / "status.json").read_text())
    assert "No space left on device" in status["error"]
    assert not (run_dir / "model.keras").exists() and not list(run_dir.glob(".tmp-*"))


def _concurrent_predictions_match(loaded) -> bool:
    """Explanations from six threads at once, sharing one model and its lock, equal the sequential ones."""
    from radiology.explain import Explainer

    explainer, lock = Explainer(loaded), threading.Lock()
    images = [xray(i, size=(120, 110)) for i in range(6)]
    expected = [explainer.explain(img).probs for img in images]
    got = {}

    def worker(i):
        with lock:
            got[i] = explainer.explain(images[i]).probs

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return all(np.allclose(got[i], expected[i], atol=1e-5) for i in range(6))


def test_two_simultaneous_launches_exactly_one_runs(tmp_path, tiny_model):
    """Two launches at the same moment: one run starts, the other is refused; predictions made from several
    threads while it trains are all correct."""
    from training.config import TrainConfig
    from training.launch import cancel, launch

    data = make_dataset(tmp_path / "data", per_class=8)
    config = TrainConfig(data=str(data), epochs=50, batch_size=4, weights="none", runs_dir=str(tmp_path / "runs"))
    results, barrier = [], threading.Barrier(2)

    def go():
        barrier.wait()
        try:
            results.append(launch(config))
        except TrainingBusyError as exc:
            results.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = [r for r in results if isinstance(r, registry.Run)]
    refused = [r for r in results if isinstance(r, TrainingBusyError)]
    assert len(started) == 1 and len(refused) == 1 and "another training is running" in str(refused[0])
    try:
        deadline = time.monotonic() + 120
        while registry.load_run(started[0].dir).progress().get("phase") != "training":
            assert time.monotonic() < deadline, registry.load_run(started[0].dir).log_tail()
            time.sleep(0.5)
        assert _concurrent_predictions_match(tiny_model)
        assert registry.load_run(started[0].dir).state == "running"
    finally:
        cancel(registry.load_run(started[0].dir))
    deadline = time.monotonic() + 120
    while registry.load_run(started[0].dir).state in registry.LIVE_STATES:
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_app_configuration_is_safe():
    """The app binds to localhost with an explicit upload limit, and no page passes text through unsafe HTML."""
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost" and config["server"]["maxUploadSize"] > 0
    assert config["client"]["showErrorDetails"] == "none"
    sources = [ROOT / "streamlit_app.py", *(ROOT / "ui").glob("*.py"), *(ROOT / "pages").glob("*.py")]
    assert all("unsafe_allow_html" not in p.read_text() for p in sources)


def test_uploads_are_never_written_to_disk(tiny_run, monkeypatch, tmp_path):
    """Classifying an upload through the app's path opens no file for writing."""
    import builtins

    from streamlit.testing.v1 import AppTest

    script = tmp_path / "page.py"
    script.write_text(
        "import streamlit as st, ui\n"
        "from radiology import registry\n"
        f"run = registry.load_run({str(tiny_run)!r})\n"
        "ui.load_run_model(run)\n"  # loading the model unpacks the .keras file: not an upload
        "import tests.test_faults as tf; tf.RECORDING.set()\n"
        f"gray, ex, s = ui.explain_cached(run, {png_bytes(xray())!r}, 'Grad-CAM')\n"
        "st.write(f'label {ex.label}')\n"
    )
    ui_module_dir = str(ROOT)
    monkeypatch.syspath_prepend(ui_module_dir)
    real_open = builtins.open
    writes = []

    def guarded(file, mode="r", *a, **k):
        if RECORDING.is_set() and any(c in mode for c in "wax+"):
            writes.append(str(file))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)
    RECORDING.clear()
    at = AppTest.from_file(str(script), default_timeout=120).run()
    assert not at.exception, at.exception
    assert RECORDING.is_set()
    assert any(m.value.startswith("label") for m in at.markdown)
    assert writes == []


@pytest.mark.parametrize("error", [MemoryError("out of memory"), KeyError("phase"), KeyboardInterrupt()])
def test_every_training_failure_is_recorded(tmp_path, monkeypatch, error):
    """An error of any type ends the run as failed with its type and message in status.json and its traceback
    in the log; run_training returns "failed", and raises again only an interrupt."""
    import training.trainer as trainer
    from radiology.registry import new_run_dir
    from training.config import TrainConfig

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(trainer, "_train", fail)
    config = TrainConfig(data=str(tmp_path / "data"), epochs=1, weights="none", runs_dir=str(tmp_path / "runs"))
    run_dir = new_run_dir(config.runs_dir)
    if isinstance(error, Exception):
        assert trainer.run_training(config, run_dir) == "failed"
    else:
        with pytest.raises(KeyboardInterrupt):
            trainer.run_training(config, run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    expected = {MemoryError: "MemoryError: out of memory", KeyError: "KeyError: 'phase'"}.get(type(error))
    assert status["state"] == "failed" and status["error"] == (expected or "KeyboardInterrupt")
    assert registry.load_run(run_dir).state == "failed" and status["ended"]
    assert "Traceback (most recent call last)" in (run_dir / "log.txt").read_text()
    assert json.loads((run_dir / "progress.json").read_text())["phase"] == "failed"
