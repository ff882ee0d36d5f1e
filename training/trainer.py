"""One training run, from dataset folder to evaluated checkpoint, written into its run folder.

The run folder is the interface to the app: ``status.json`` and ``progress.json`` are rewritten
atomically as the run goes, ``history.csv`` grows by one row per epoch, and ``log.txt`` holds the
log. A cancel request (a ``cancel`` file in the run folder, or SIGTERM) stops training after the
current batch and keeps the best checkpoint.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import secrets
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiology.cache import DecodedImages
from radiology.datasets import Dataset
from radiology.errors import DatasetError
from radiology.evaluation import bf16_agreement, evaluate_samples, write_evaluation
from radiology.fsutil import atomic_write_text, write_json_atomic
from radiology.model import ModelMetadata, build_model, compile_model, load_model, save_model
from radiology.ood import fit_and_store
from radiology.preprocess import PreprocessSpec, to_model_input
from radiology.registry import now, process_start, update_status
from radiology.splits import check_splits
from training.config import TrainConfig

CANCEL_FILE = "cancel"
log = logging.getLogger("training")


class Cancelled(Exception):
    """Raised inside the run when a cancel request arrives outside of fit."""


def new_run_dir(runs_dir: str | Path) -> Path:
    """Creates a new, uniquely named run folder; names sort by start time."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs_dir / f"{stamp}-{secrets.token_hex(2)}"
    path.mkdir()
    return path


def write_status(run_dir: Path, state: str, **fields) -> None:
    """Updates ``status.json`` atomically, keeping fields written before; the state never moves backwards."""
    update_status(run_dir, state, **fields)


class RunMonitor:
    """Progress and cancellation of one run, shared by the data phase and the Keras callback."""

    def __init__(self, run_dir: Path, epochs: int):
        self.run_dir = run_dir
        self.epochs = epochs
        self.cancel_requested = False
        self._last_write = 0.0
        self.progress = {"phase": "starting", "epoch": 0, "epochs": epochs, "batch": 0, "batches": 0}

    def check_cancel(self) -> bool:
        """Whether a cancel was requested by file or signal."""
        if not self.cancel_requested and (self.run_dir / CANCEL_FILE).exists():
            self.cancel_requested = True
        return self.cancel_requested

    def update(self, *, force: bool = False, **fields) -> None:
        """Records progress; writes it at most every 0.3 s unless forced."""
        self.progress.update(fields)
        t = time.monotonic()
        if force or t - self._last_write > 0.3:
            self._last_write = t
            write_json_atomic(self.run_dir / "progress.json", {**self.progress, "updated": now()})


def _make_callbacks(
    monitor: RunMonitor, run_dir: Path, metadata: ModelMetadata, batches: int, monitor_key: str, patience: int
):
    import keras

    class RunCallback(keras.callbacks.Callback):
        """Writes progress per batch and history per epoch, keeps the best checkpoint, honours cancel."""

        def __init__(self):
            super().__init__()
            self.best = -math.inf
            self.epoch_start = time.monotonic()
            self.rows: list[dict] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.monotonic()
            monitor.update(force=True, phase="training", epoch=epoch + 1, batch=0, batches=batches)

        def on_train_batch_end(self, batch, logs=None):
            monitor.update(batch=batch + 1)
            if monitor.check_cancel():
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            seconds = time.monotonic() - self.epoch_start
            lr = self.model.optimizer.learning_rate
            row = {
                "epoch": epoch + 1,
                **{k: float(v) for k, v in logs.items() if k != "learning_rate"},
                "lr": float(np.asarray(lr)),
                "seconds": round(seconds, 2),
            }
            self.rows.append(row)
            _write_history(run_dir / "history.csv", self.rows)
            score = logs.get(monitor_key, -math.inf)
            improved = score > self.best
            if improved:
                self.best = score
                monitor.update(force=True, phase="checkpoint")
                save_model(self.model, run_dir / "model.keras", metadata)
            log.info(
                "epoch %d/%d  %s  %.1fs%s",
                epoch + 1,
                monitor.epochs,
                "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "learning_rate"),
                seconds,
                "  (best, saved)" if improved else "",
            )

    return [
        RunCallback(),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss" if monitor_key.startswith("val_") else "loss",
            factor=0.5,
            patience=patience,
            min_lr=1e-7,
            verbose=0,
        ),
    ]


def _write_history(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def batches(
    pixels: np.ndarray,
    labels: np.ndarray,
    spec: PreprocessSpec,
    batch_size: int,
    *,
    seed: int | None,
    host_augment: bool = False,
    workers: int = 1,
):
    """A Keras PyDataset over uint8 images, reshuffled every epoch when ``seed`` is given.

    With ``host_augment`` the flip and rotation happen here, in ``workers`` threads, instead of in the model.
    """
    import keras

    from radiology.augment import augment_on_host

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed) if seed is not None else None
            self.order = self.rng.permutation(len(labels)) if self.rng is not None else np.arange(len(labels))
            self.epoch = 0

        def __len__(self):
            return math.ceil(len(labels) / batch_size)

        def __getitem__(self, i):
            idx = np.sort(self.order[i * batch_size : (i + 1) * batch_size])
            images = pixels[idx]
            if host_augment:
                # a generator per batch and epoch keeps runs reproducible whatever the thread order
                images = augment_on_host(images, np.random.default_rng([seed or 0, self.epoch, i]))
            return to_model_input(images, spec), labels[idx]

        def on_epoch_end(self):
            self.epoch += 1
            if self.rng is not None:
                self.order = self.rng.permutation(len(labels))

    return Batches()


def split_arrays(dataset: Dataset, decoded, split: str, class_names) -> tuple[np.ndarray, np.ndarray]:
    """The readable images of one split as uint8 (N, H, W) and their class indices as int32 (N,)."""
    index = decoded.index()
    kept = [(index[s.path], class_names.index(s.label)) for s in dataset.splits[split] if decoded.ok[index[s.path]]]
    rows = [row for row, _ in kept]
    return np.asarray(decoded.pixels[rows]), np.array([label for _, label in kept], dtype=np.int32)


def build_for_training(config: TrainConfig, spec: PreprocessSpec):
    """Seeds Keras, sets the precision policy, and builds and compiles the model as the config says."""
    import keras

    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16" if config.mixed_precision else "float32")
    model = build_model(
        spec=spec,
        weights=config.weights,
        trainable_layers=config.trainable_layers,
        augment=config.augment_where == "model",
        seed=config.seed,
    )
    compile_model(model, learning_rate=config.lr)
    return model


def _setup_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in log.handlers):
        log.addHandler(logging.StreamHandler())
    log.setLevel(logging.INFO)
    return handler


def run_training(config: TrainConfig, run_dir: str | Path) -> str:
    """Runs one training end to end and returns its final state.

    Writes the config, status, progress, history, log, best checkpoint, validation report and
    test evaluation into ``run_dir``. Never raises for a failed run, whatever the error: its type
    and message go into ``status.json`` and its traceback into the log. Only an interrupt
    (``KeyboardInterrupt``, ``SystemExit``) is raised again, after it is recorded.

    Args:
        config: the run's frozen config.
        run_dir: the run folder, created beforehand.

    Returns:
        ``succeeded``, ``failed`` or ``cancelled``.
    """
    run_dir = Path(run_dir)
    config.save(run_dir / "config.json")
    handler = _setup_logging(run_dir)
    monitor = RunMonitor(run_dir, config.epochs)
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(monitor, "cancel_requested", True))
    pid = os.getpid()
    write_status(run_dir, "running", pid=pid, pid_start=process_start(pid), started=now(), error=None)
    try:
        state = _train(config, run_dir, monitor)
        write_status(run_dir, state, ended=now())
        monitor.update(force=True, phase=state)
        return state
    except Cancelled:
        write_status(run_dir, "cancelled", ended=now())
        monitor.update(force=True, phase="cancelled")
        log.info("cancelled before training started")
        return "cancelled"
    except BaseException as exc:  # every failure is recorded; a status left at running would lie
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.error("run failed: %s\n%s", message, traceback.format_exc())
        write_status(run_dir, "failed", ended=now(), error=message)
        monitor.update(force=True, phase="failed")
        if not isinstance(exc, Exception):
            raise
        return "failed"
    finally:
        signal.signal(signal.SIGTERM, previous)
        log.removeHandler(handler)
        handler.close()


@dataclass(frozen=True)
class TrainingData:
    """What the fit and evaluation phases need from the data phase.

    Attributes:
        dataset: the discovered dataset with its splits.
        decoded: the decoded images of every sample (from the decode cache).
        spec: the preprocessing the model will carry.
        class_names: class names in output order.
        x_train: uint8 array of shape (N, H, W), the readable training images.
        y_train: int32 array of shape (N,), their class indices.
        x_val: uint8 array of shape (M, H, W), the readable validation images.
        y_val: int32 array of shape (M,), their class indices.
    """

    dataset: Dataset
    decoded: DecodedImages
    spec: PreprocessSpec
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def _train(config: TrainConfig, run_dir: Path, monitor: RunMonitor) -> str:
    log.info("run %s: %s; augmentation in the %s", run_dir.name, config.to_dict(), config.augment_where or "-")
    data = _prepare_data(config, run_dir, monitor)
    _fit(config, run_dir, monitor, data)
    if monitor.check_cancel():
        log.info("cancelled; the best checkpoint so far is kept")
        return "cancelled"
    best = _fit_gate(run_dir, monitor, data)
    _evaluate_test(config, run_dir, monitor, data, best)
    return "succeeded"


def _prepare_data(config: TrainConfig, run_dir: Path, monitor: RunMonitor) -> TrainingData:
    """Discovers, decodes and validates the dataset, writes ``validation.json``, and returns the arrays."""
    spec = PreprocessSpec()
    monitor.update(force=True, phase="caching")

    def decode_progress(done, total):
        monitor.update(batch=done, batches=total)
        if monitor.check_cancel():
            raise Cancelled()

    checked = check_splits(
        config.data,
        seed=config.seed,
        fractions=config.fractions,
        spec=spec,
        cache_dir=config.resolved_cache_dir,
        progress=decode_progress,
    )
    dataset, decoded = checked.dataset, checked.decoded
    for w in dataset.warnings:
        log.warning(w)
    log.info(
        "%d images %s", len(decoded.paths), "loaded from the cache" if checked.from_cache else "decoded and cached"
    )
    summary = checked.summary()
    write_json_atomic(run_dir / "validation.json", {**summary, "duplicates": summary["duplicates"][:200]})
    for path, err in checked.report.unreadable.items():
        log.warning("skipped unreadable file %s: %s", path, err)
    class_names = list(dataset.class_names)
    x_train, y_train = split_arrays(dataset, decoded, "train", class_names)
    x_val, y_val = split_arrays(dataset, decoded, "val", class_names)
    if not len(x_train):
        raise DatasetError("no readable training images")
    log.info(
        "train %d, val %d, test %d images (%s)",
        len(x_train),
        len(x_val),
        len(dataset.splits["test"]),
        dataset.split_method,
    )
    return TrainingData(dataset, decoded, spec, class_names, x_train, y_train, x_val, y_val)


def _fit(config: TrainConfig, run_dir: Path, monitor: RunMonitor, data: TrainingData) -> None:
    """Builds and compiles the model and fits it; the callbacks keep the best checkpoint in ``model.keras``."""
    model = build_for_training(config, data.spec)
    metadata = ModelMetadata(
        tuple(data.class_names),
        data.spec,
        train_config=config.to_dict(),
        data_fingerprint=data.dataset.fingerprint(),
        name=run_dir.name,
    )
    train = batches(
        data.x_train,
        data.y_train,
        data.spec,
        config.batch_size,
        seed=config.seed,
        host_augment=config.augment_where == "host",
        workers=config.workers,
    )
    val = batches(data.x_val, data.y_val, data.spec, config.batch_size, seed=None) if len(data.x_val) else None
    monitor_key = "val_accuracy" if val is not None else "accuracy"
    class_weight = None
    if config.class_weights:
        counts = np.bincount(data.y_train, minlength=len(data.class_names))
        class_weight = {k: len(data.y_train) / (len(data.class_names) * c) for k, c in enumerate(counts) if c}
    callbacks = _make_callbacks(monitor, run_dir, metadata, len(train), monitor_key, config.lr_patience)
    model.fit(
        train, validation_data=val, epochs=config.epochs, callbacks=callbacks, class_weight=class_weight, verbose=0
    )


def _fit_gate(run_dir: Path, monitor: RunMonitor, data: TrainingData):
    """Fits the out-of-distribution gate (Gaussians on the train features, threshold on val) into the best model."""
    monitor.update(force=True, phase="fitting the out-of-distribution gate")
    path = run_dir / "model.keras"
    return fit_and_store(load_model(path), data.x_train, data.y_train, data.x_val if len(data.x_val) else None, path)


def _evaluate_test(config: TrainConfig, run_dir: Path, monitor: RunMonitor, data: TrainingData, best) -> None:
    """Evaluates the best checkpoint on the test split into ``metrics.json`` and ``predictions.csv``."""
    dataset, decoded = data.dataset, data.decoded
    test = dataset.splits["test"]
    if not test:
        log.warning("no test split: nothing to evaluate")
        return
    monitor.update(force=True, phase="evaluating")
    result, rows = evaluate_samples(best, test, decoded, root=dataset.root, n_boot=config.n_boot)
    result.update(data_root=str(dataset.root), split="test", split_method=dataset.split_method)
    result["bf16_agreement"] = bf16_agreement(best, test, decoded)
    write_evaluation(run_dir, result, rows)
    log.info(
        "test accuracy %.4f (95%% CI %.4f-%.4f), macro F1 %.4f, ECE %.4f on %d images",
        result["accuracy"],
        *result["ci"]["accuracy"],
        result["macro_f1"],
        result["calibration"]["ece"],
        result["n"],
    )
