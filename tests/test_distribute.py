"""Data-parallel training (training.distribute): the mesh, the sharded loader, and real JAX runs on virtual CPU devices.

The test process runs TensorFlow-backed Keras, so every JAX run is a ``python -m training`` subprocess with
``KERAS_BACKEND=jax``, ``JAX_PLATFORMS=cpu`` and ``--xla_force_host_platform_device_count`` virtual devices;
two processes talk over 127.0.0.1 with JAX's CPU collectives (gloo).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from radiology.errors import DistributeError
from radiology.registry import list_runs, load_run
from tests.factories import make_dataset
from training.config import TrainConfig
from training.distribute import Cluster, Mesh, resolve

ROOT = Path(__file__).resolve().parent.parent
# the smallest run of the real architecture: 32 px, from scratch, 4 images per class and split, batch 4
TINY = ["--epochs", "1", "--batch-size", "4", "--image-size", "32", "--weights", "none", "--trainable-layers", "19"]
TINY += ["--compute", "float32", "--n-boot", "10", "--lr", "0.001"]
CLUSTER_VARIABLES = tuple(f"KERAS_DISTRIBUTION_{n}" for n in ("JOB_ADDRESSES", "NUM_PROCESSES", "PROCESS_ID"))


def _env(devices: int) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    for name in CLUSTER_VARIABLES:
        env.pop(name, None)
    return env


def _train(*args: str, devices: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs ``python -m training ARGS`` on the JAX backend with ``devices`` virtual CPU devices."""
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _start(*args: str, devices: int, log: Path) -> subprocess.Popen:
    """Starts ``python -m training ARGS`` in the background, its output going to ``log``."""
    out = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "training", *args], cwd=ROOT, env=_env(devices), stdout=out, stderr=subprocess.STDOUT
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(data: Path, runs: Path, tmp: Path, *extra: str) -> list[subprocess.Popen]:
    """Starts processes 0 and 1 of one run, with 2 virtual devices each, on a free port of 127.0.0.1."""
    port = _free_port()
    common = ["--data", str(data), "--runs-dir", str(runs), *TINY, *extra, "--coordinator", f"127.0.0.1:{port}"]
    common += ["--num-processes", "2"]
    return [_start(*common, "--process-id", str(k), devices=2, log=tmp / f"console.{k}.txt") for k in (0, 1)]


def _weights(run_dir: Path) -> list[np.ndarray]:
    from radiology.model import load_model

    return load_model(run_dir / "model.keras").model.get_weights()


def _files(run_dir: Path) -> list[str]:
    """The run folder's files, those in subfolders named by their folder."""
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    return sorted(p.name if p.parent == run_dir else str(p.parent.relative_to(run_dir)) for p in files)


def _only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return run


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Split folders with 4 images per class in each split: 12 train, 12 val and 12 test images."""
    return make_dataset(tmp_path_factory.mktemp("dist") / "data", per_class=4, size=(40, 40), splits=True)


@pytest.fixture(scope="module")
def one_device(data, tmp_path_factory) -> Path:
    """The tiny run on one device (``--distribute off``), the reference of the distributed runs."""
    runs = tmp_path_factory.mktemp("one")
    out = _train("--data", str(data), "--runs-dir", str(runs), *TINY, "--distribute", "off", devices=4)
    assert out.returncode == 0, out.stderr[-3000:]
    return _only_run(runs)


def test_config_keeps_distribute_and_old_configs_read_as_auto(tmp_path):
    """distribute round-trips through config.json; a config saved before it existed reads as auto; a bad value
    is refused with the choices."""
    config = TrainConfig(data="x", distribute="data", runs_dir=str(tmp_path))
    config.save(tmp_path / "config.json")
    assert TrainConfig.load(tmp_path / "config.json") == config
    old = config.to_dict()
    del old["distribute"]
    assert TrainConfig.from_dict(old).distribute == "auto"
    with pytest.raises(ValueError, match="distribute must be one of auto, off, data, got 'all'"):
        TrainConfig(data="x", distribute="all")


def test_cli_offers_distribute_and_the_cluster_options():
    """--distribute takes auto, off or data (auto by default); --coordinator, --num-processes and --process-id
    name the cluster, else Keras' KERAS_DISTRIBUTION_* variables do, else the run is one process."""
    from training.__main__ import _config, parse_args

    args = parse_args(["--data", "x", "--distribute", "data", "--coordinator", "h:1", "--num-processes", "2"])
    assert _config(args).distribute == "data" and (args.coordinator, args.num_processes) == ("h:1", 2)
    assert _config(parse_args(["--data", "x"])).distribute == "auto"
    with pytest.raises(SystemExit):
        parse_args(["--data", "x", "--distribute", "all"])
    env = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:1234", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}
    with pytest.MonkeyPatch.context() as mp:
        for name in CLUSTER_VARIABLES:
            mp.delenv(name, raising=False)
        assert Cluster.from_options() == Cluster()
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
        assert Cluster.from_options() == Cluster("10.0.0.1:1234", 2, 1)
        assert Cluster.from_options(process_id=0) == Cluster("10.0.0.1:1234", 2, 0)
    with pytest.raises(DistributeError, match="process id must be 0 to 1 for 2 processes, got 2"):
        Cluster("h:1", 2, 2)
    with pytest.raises(DistributeError, match="2 processes need the coordinator's address"):
        Cluster(None, 2, 0)


def test_resolve_chooses_the_mesh_and_refuses_what_cannot_run():
    """auto is data-parallel on JAX with several devices and one device otherwise; data needs JAX; a batch the
    devices do not divide is refused with the multiple to choose; the mesh names itself."""
    assert resolve("auto", 64, backend="jax", devices=4) == Mesh("data", 4, 1, 0)
    assert resolve("auto", 64, backend="jax", devices=1) == Mesh()
    assert resolve("auto", 64, backend="tensorflow", devices=1) == Mesh()
    assert resolve("off", 30, backend="jax", devices=4) == Mesh()
    assert resolve("data", 8, backend="jax", devices=8, processes=2, process_id=1) == Mesh("data", 8, 2, 1)
    assert Mesh("data", 8, 2, 0).describe() == "JAX data-parallel on 8 devices (2 processes)"
    assert Mesh().describe() == "one device"
    with pytest.raises(DistributeError, match="batch size 30 does not divide over 4 devices: choose a multiple of 4"):
        resolve("auto", 30, backend="jax", devices=4)
    with pytest.raises(DistributeError, match="distribute data trains with keras.distribution on the JAX backend"):
        resolve("data", 64, backend="tensorflow", devices=1)
    with pytest.raises(DistributeError, match="distribute off trains on one device, but 2 processes were started"):
        resolve("off", 64, backend="jax", devices=4, processes=2)


def test_a_process_feeds_its_slice_of_each_global_batch_augmented_as_the_whole():
    """The slices of two processes put together are the one-device batch, host augmentation included, and a
    last batch that does not split over the devices is cut to a multiple of them."""
    from radiology.preprocess import PreprocessSpec
    from training.data import batches

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (22, 32, 32), dtype=np.uint8)
    labels = np.arange(22) % 3
    spec = PreprocessSpec(height=32, width=32)
    kw = {"seed": 5, "host_augment": True}
    whole = batches(pixels, labels, spec, 8, devices=4, **kw)
    parts = [batches(pixels, labels, spec, 8, shard=(k, 2), devices=4, **kw) for k in (0, 1)]
    one = batches(pixels, labels, spec, 8, **kw)
    assert (len(whole), whole.images, whole.left_out) == (3, 20, 2) and (len(one), one.images) == (3, 22)
    for loader in (whole, one, *parts):
        loader.on_epoch_end()  # the second epoch's order and draws
    for i in range(3):
        x, y = whole[i]
        x0, y0 = parts[0][i]
        x1, y1 = parts[1][i]
        np.testing.assert_array_equal(np.concatenate([x0, x1]), x)
        np.testing.assert_array_equal(np.concatenate([y0, y1]), y)
        assert len(x0) == len(x1) == len(x) // 2
    np.testing.assert_array_equal(whole[0][0], one[0][0])  # a full batch is the same as without devices
    assert len(whole[2][1]) == 4 and len(one[2][1]) == 6


def test_four_devices_train_as_one(data, one_device, tmp_path):
    """One epoch data-parallel on 4 virtual devices (distribute auto) gives the weights of one device with the
    same seed and global batch, within float tolerance; the run's config, status, progress and log name the mesh."""
    out = _train("--data", str(data), "--runs-dir", str(tmp_path), *TINY, devices=4)
    assert out.returncode == 0, out.stderr[-3000:]
    run = load_run(_only_run(tmp_path))
    assert run.state == "succeeded"
    mesh = "JAX data-parallel on 4 devices (1 process)"
    assert run.status["mesh"] == mesh and run.progress()["mesh"] == mesh and mesh in run.log_tail(40)
    assert run.config["mesh"] == mesh and TrainConfig.load(run.dir / "config.json").distribute == "auto"
    assert load_run(one_device).status["mesh"] == "one device"
    assert run.progress()["images_per_s"] > 0
    for a, b in zip(_weights(run.dir), _weights(one_device), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert [r["loss"] for r in run.history()] == pytest.approx([r["loss"] for r in load_run(one_device).history()])


def test_two_processes_train_one_run(data, one_device, tmp_path):
    """Two processes of 2 devices each train one epoch together into one run folder: the registry lists one
    succeeded run with the one-device result; process 1 wrote only its log.1.txt."""
    runs = tmp_path / "runs"
    procs = _two_processes(data, runs, tmp_path)
    codes = [p.wait(timeout=400) for p in procs]
    consoles = [(tmp_path / f"console.{k}.txt").read_text()[-3000:] for k in (0, 1)]
    assert codes == [0, 0], consoles
    (run,) = list_runs(runs, include_bundled=False)
    assert run.state == "succeeded" and run.status["mesh"] == "JAX data-parallel on 4 devices (2 processes)"
    for a, b in zip(_weights(run.dir), _weights(one_device), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # the same files as one process writes, TensorBoard's event files counted by folder (their names differ)
    assert _files(run.dir) == sorted([*_files(one_device), "log.1.txt"])
    assert "process 1 of 2; process 0 writes the run folder" in (run.dir / "log.1.txt").read_text()
    assert "run folder" in consoles[1] and ": succeeded" in consoles[1]


def test_killing_a_process_fails_the_run_with_its_message(data, tmp_path):
    """When process 1 is killed while training, process 0 ends and the run reads failed, naming process 1."""
    runs = tmp_path / "runs"
    procs = _two_processes(data, runs, tmp_path, "--epochs", "200")
    try:
        _wait_for(runs, procs, tmp_path, epoch=2)
        procs[1].send_signal(signal.SIGKILL)
        assert procs[0].wait(timeout=120) == 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    run = load_run(_only_run(runs))
    assert run.state == "failed"
    assert run.error.startswith("process 1 of 2 "), run.error
    assert "stopped responding" in run.error or "failed" in run.error


def test_a_process_that_cannot_start_stops_the_run_before_its_folder_is_made(data, tmp_path):
    """When process 1's machine lacks the dataset (the same relative --data, another working folder), both
    processes exit 1 before any run folder is made, and process 0 names process 1 and its error."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "xrays").symlink_to(data)
    runs = tmp_path / "runs"
    port = _free_port()
    argv = ["--data", "xrays", "--runs-dir", str(runs), *TINY, "--coordinator", f"127.0.0.1:{port}"]
    env = {**_env(2), "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "training", *argv, "--num-processes", "2", "--process-id", str(k)],
            cwd=tmp_path / folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, folder in enumerate("ab")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], outs
    assert "error: process 1 of 2 could not start: DatasetError: dataset folder not found: " in outs[0][1], outs[0][1]
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]


def _wait_for(runs: Path, procs, tmp: Path, *, epoch: int, batch: int = 0, timeout: float = 300) -> None:
    """Waits until process 0's progress reaches ``batch`` of ``epoch`` in training."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = next(runs.glob("*/progress.json"), None)
        p = json.loads(progress.read_text() or "{}") if progress is not None else {}
        if p.get("phase") == "training" and (p.get("epoch", 0), p.get("batch", 0)) >= (epoch, batch):
            return
        for k, proc in enumerate(procs):
            assert proc.poll() is None, (tmp / f"console.{k}.txt").read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no progress to epoch {epoch} batch {batch} in {timeout} s")


def _stop_lines(text: str) -> list[str]:
    return [line.split(" INFO ", 1)[1] for line in text.splitlines() if "not counted" in line or "unvalidated" in line]


def test_cancel_stops_both_processes_at_the_same_batch_and_resume_continues_them(data, tmp_path):
    """The cancel file, which only process 0 reads, stops both processes at the same batch of epoch 2 (exit 3,
    run cancelled); --resume run by both continues from epoch 1's last.keras to a succeeded 2-epoch run."""
    runs = tmp_path / "runs"
    procs = _two_processes(data, runs, tmp_path, "--epochs", "2")
    try:
        _wait_for(runs, procs, tmp_path, epoch=2)
        run_dir = _only_run(runs)
        (run_dir / "cancel").touch()
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [3, 3], [(tmp_path / f"console.{k}.txt").read_text()[-2000:] for k in (0, 1)]
    run = load_run(run_dir)
    assert run.state == "cancelled" and len(run.history()) == 1 and (run_dir / "last.keras").is_file()
    stopped = _stop_lines((run_dir / "log.txt").read_text())
    assert stopped and stopped == _stop_lines((run_dir / "log.1.txt").read_text())

    port = _free_port()
    cluster = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    procs = [
        _start("--resume", str(run_dir), *cluster, "--process-id", str(k), devices=2, log=tmp_path / f"resume.{k}.txt")
        for k in (0, 1)
    ]
    codes = [p.wait(timeout=400) for p in procs]
    assert codes == [0, 0], [(tmp_path / f"resume.{k}.txt").read_text()[-2000:] for k in (0, 1)]
    run = load_run(run_dir)
    assert run.state == "succeeded" and run.status["attempt"] == 2 and [r["epoch"] for r in run.history()] == [1, 2]
    assert "resumed after epoch 1 of 2" in (run_dir / "log.1.txt").read_text()


def test_a_batch_the_devices_do_not_divide_is_refused_before_training(data, tmp_path):
    """Batch 6 on 4 devices is refused with the multiple to choose, before any run folder is made."""
    out = _train("--data", str(data), "--runs-dir", str(tmp_path), *TINY, "--batch-size", "6", devices=4)
    assert out.returncode == 1
    assert "error: batch size 6 does not divide over 4 devices: choose a multiple of 4" in out.stderr
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_training_page_offers_distribute_and_refuses_an_indivisible_batch(tmp_path, monkeypatch):
    """The launch form has a Distribute field (auto by default); with 4 JAX devices for the runs it names the
    mesh, and a batch of 30 is refused on the page with the multiple to choose."""
    from streamlit.testing.v1 import AppTest

    from radiology import registry

    make_dataset(tmp_path / "data" / "tiny", per_class=4)
    monkeypatch.setenv("RADIOLOGY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("RADIOLOGY_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setattr(registry, "BUNDLED_DIR", tmp_path / "no-bundle")
    for name, value in _env(4).items():
        if name in ("JAX_PLATFORMS", "XLA_FLAGS"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("RADIOLOGY_TRAINING_BACKEND", "jax")
    at = AppTest.from_file(str(ROOT / "pages/3_Training.py"), default_timeout=180).run()
    assert not at.exception, at.exception
    field = next(s for s in at.selectbox if s.label == "Distribute")
    assert field.value == "auto" and list(field.options) == ["auto", "off", "data"]
    assert any(c.value == "Trains on JAX data-parallel on 4 devices (1 process)." for c in at.caption)
    next(n for n in at.number_input if n.label == "Batch size").set_value(30)
    next(b for b in at.button if b.label == "Launch training").click().run()
    assert any("batch size 30 does not divide over 4 devices: choose a multiple of 4" in e.value for e in at.error), [
        e.value for e in at.error
    ]
    assert not (tmp_path / "runs").exists() or not list_runs(tmp_path / "runs", include_bundled=False)
