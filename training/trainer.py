"""One training run, from dataset folder to evaluated checkpoint, written into its run folder.

The run folder is the interface to the app: ``status.json`` and ``progress.json`` are rewritten
atomically as the run goes, ``history.csv`` grows by one row per epoch, and ``log.txt`` holds the
log. A cancel request (a ``cancel`` file in the run folder, or SIGTERM) stops the run after the
current batch, of training or of validation, and keeps the best checkpoint. An epoch whose training
a cancel cut short is not counted; one whose validation it cut short keeps its training (``last.keras``)
but is not validated.

Every completed epoch also writes ``last.keras``: the model with its optimizer state and, inside the
same file, the epoch, best score, learning-rate schedule and history, so a cancelled, failed or killed
run resumes from its last completed epoch (``run_training(..., resume=True)``). A run that succeeds
deletes it.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiology import ood
from radiology.cache import DecodedImages
from radiology.calibration import fit_temperature
from radiology.datasets import Dataset
from radiology.errors import DatasetError
from radiology.evaluation import evaluate_samples, write_evaluation
from radiology.fsutil import write_csv_atomic, write_json_atomic
from radiology.jobs import describe_error, is_live, now, process_start
from radiology.model import (
    LoadedModel,
    ModelMetadata,
    build_model,
    compile_model,
    load_model,
    read_checkpoint_state,
    save_checkpoint,
    save_model,
    update_metadata,
)
from radiology.preprocess import PreprocessSpec, to_model_input
from radiology.registry import CANCEL_FILE, LAST_CHECKPOINT, load_run, update_status
from radiology.splits import check_splits
from training.clock import RunClock, format_duration
from training.compute import (
    Compute,
    ComputeChoice,
    choice_key,
    choose_compute,
    device_description,
    forced_compute,
    load_choice,
    speed_settings,
    store_choice,
)
from training.config import TrainConfig
from training.events import EventWriter

LOG_EVERY_S = 60.0  # a progress line in the log at most this often within an epoch
log = logging.getLogger("training")


class Cancelled(Exception):
    """Raised inside the run when a cancel request arrives outside of fit."""


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
            # atomic but not fsynced: rewritten up to three times a second, and a crash may lose the last one
            write_json_atomic(self.run_dir / "progress.json", {**self.progress, "updated": now()}, durable=False)


@dataclass
class FitContext:
    """What the callbacks of one fit need to know about the run.

    Attributes:
        run_dir: the run folder.
        metadata: what travels with the saved models.
        batches: training batches per epoch.
        batch_size: images per batch.
        train_images: training images per epoch.
        val_images: validation images per epoch.
        monitor_key: the score the best checkpoint is chosen by.
        patience: ReduceLROnPlateau patience.
        resume: the state read from ``last.keras`` when resuming, else None.
    """

    run_dir: Path
    metadata: ModelMetadata
    batches: int
    batch_size: int
    train_images: int
    val_images: int
    monitor_key: str
    patience: int
    resume: dict | None = None


def _make_callbacks(monitor: RunMonitor, ctx: FitContext):
    import keras

    resume = ctx.resume or {}

    val_batches = math.ceil(ctx.val_images / ctx.batch_size) if ctx.val_images else 0
    events = EventWriter(ctx.run_dir)
    if events.unavailable:
        log.info(events.unavailable)
    # what the current epoch completed: a cancel cuts its training or its validation short
    cut = {"training": False, "validation": False}

    class PlateauLR(keras.callbacks.ReduceLROnPlateau):
        """ReduceLROnPlateau whose counters survive a resume, and which skips an epoch a cancel cut short."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            for name, value in resume.get("plateau", {}).items():
                setattr(self, name, value)

        def on_epoch_end(self, epoch, logs=None):
            if not (cut["training"] or cut["validation"]):
                super().on_epoch_end(epoch, logs)

        def state(self) -> dict:
            return {"wait": self.wait, "best": float(self.best), "cooldown_counter": self.cooldown_counter}

    plateau = PlateauLR(
        monitor="val_loss" if ctx.monitor_key.startswith("val_") else "loss",
        factor=0.5,
        patience=ctx.patience,
        min_lr=1e-7,
        verbose=0,
    )
    clock = RunClock(
        epochs=monitor.epochs,
        batches=ctx.batches,
        batch_size=ctx.batch_size,
        train_images=ctx.train_images,
        val_images=ctx.val_images,
    )

    class RunCallback(keras.callbacks.Callback):
        """Writes progress per batch and history per epoch, keeps the best and last checkpoints, honours cancel."""

        def __init__(self):
            super().__init__()
            self.best = resume.get("best", -math.inf)
            self.rows: list[dict] = list(resume.get("history", []))
            self.lr = None
            self.train_seconds = None
            self.validated = 0
            self._last_log = time.monotonic()

        def on_epoch_begin(self, epoch, logs=None):
            clock.epoch_begin()
            cut.update(training=False, validation=False)
            self.train_seconds = None
            self.lr = float(np.asarray(self.model.optimizer.learning_rate))
            monitor.update(force=True, phase="training", epoch=epoch + 1, batch=0, batches=ctx.batches)

        def on_train_batch_end(self, batch, logs=None):
            clock.batch_end(batch)
            fields = clock.fields(epoch=monitor.progress["epoch"])
            monitor.update(batch=batch + 1, **fields)
            if time.monotonic() - self._last_log >= LOG_EVERY_S:
                self._last_log = time.monotonic()
                log.info(
                    "epoch %d/%d  batch %d/%d  %s img/s  epoch left %s  run left %s",
                    monitor.progress["epoch"],
                    monitor.epochs,
                    batch + 1,
                    ctx.batches,
                    fields["images_per_s"],
                    format_duration(fields["epoch_left_s"]),
                    format_duration(fields["run_left_s"]),
                )
            if monitor.check_cancel():
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            events.close()

        def on_test_begin(self, logs=None):
            # Keras validates even after stop_training broke the epoch off, and resets stop_evaluating
            # just before this call: setting it here stops that validation after its first batch
            self.train_seconds = clock.train_seconds()
            self.validated = 0
            cut["training"] = clock.done < ctx.batches
            if monitor.check_cancel():
                self.model.stop_evaluating = True

        def on_test_batch_end(self, batch, logs=None):
            self.validated += 1
            if monitor.check_cancel():
                self.model.stop_evaluating = True
                self.model.stop_training = True

        def on_test_end(self, logs=None):
            cut["validation"] = self.validated < val_batches

        def on_epoch_end(self, epoch, logs=None):
            if clock.done < ctx.batches:
                # the weights are part-way through an epoch: a resume redoes it from the last checkpoint
                log.info("epoch %d stopped after %d of %d batches: not counted", epoch + 1, clock.done, ctx.batches)
                return
            rate = clock.images_per_s()
            clock.epoch_end(self.train_seconds)
            logs = dict(logs or {})
            if cut["validation"]:
                # the epoch's training is complete and kept (a resume goes on from the next epoch), but a
                # partial validation is neither recorded nor allowed to pick the best checkpoint
                log.info(
                    "epoch %d: validation cancelled after %d of %d batches; its training is kept, unvalidated",
                    epoch + 1,
                    self.validated,
                    val_batches,
                )
                logs = {k: v for k, v in logs.items() if not k.startswith("val_")}
            row = {
                "epoch": epoch + 1,
                **{k: float(v) for k, v in logs.items() if k != "learning_rate"},
                "lr": self.lr,
                "seconds": round(clock.epoch_seconds, 2),
            }
            self.rows.append(row)
            events.write_epoch(row)
            score = -math.inf if cut["validation"] else logs.get(ctx.monitor_key, -math.inf)
            improved = score > self.best
            if improved:
                self.best = score
                monitor.update(force=True, phase="checkpoint")
                save_model(self.model, ctx.run_dir / "model.keras", ctx.metadata)
            state = {
                "epoch": epoch + 1,
                "best": self.best,
                "monitor": ctx.monitor_key,
                "plateau": plateau.state(),
                "history": self.rows,
                "seed_states": [np.asarray(v).tolist() for v in _seed_variables(self.model)],
            }
            save_checkpoint(self.model, ctx.run_dir / LAST_CHECKPOINT, ctx.metadata, state)
            write_csv_atomic(ctx.run_dir / "history.csv", self.rows)
            left = (monitor.epochs - epoch - 1) * clock.epoch_seconds
            monitor.update(force=True, images_per_s=round(rate, 2) if rate else None, epoch_left_s=0, run_left_s=left)
            log.info(
                "epoch %d/%d  %s  %.1fs  %s img/s  run left %s%s",
                epoch + 1,
                monitor.epochs,
                "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "learning_rate"),
                clock.epoch_seconds,
                f"{rate:.1f}" if rate else "?",
                format_duration(left),
                "  (best, saved)" if improved else "",
            )

    # the schedule first, so the checkpoint written at the end of an epoch holds its updated state
    return [plateau, RunCallback()]


def _seed_variables(model) -> list:
    """The states of the model's random generators (dropout, augmentation), which ``.keras`` files leave out."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


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


def build_for_training(config: TrainConfig, spec: PreprocessSpec, compute: Compute | None = None):
    """Seeds Keras, sets the precision policy, and builds and compiles the model as the config says.

    Args:
        config: the run's config.
        spec: the preprocessing spec giving the input size.
        compute: how to compute; by default float32 (mixed bfloat16 if the config asks) without forcing XLA.
    """
    import keras

    if compute is None:
        compute = Compute("mixed_bfloat16" if config.mixed_precision else "float32", False)
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(compute.precision)
    model = build_model(
        spec=spec,
        weights=config.weights,
        trainable_layers=config.trainable_layers,
        augment=config.augment_where == "model" and not compute.host_augment,
        seed=config.seed,
    )
    compile_model(model, learning_rate=config.lr, jit_compile=compute.jit_compile)
    return model


def training_batches(config: TrainConfig, data: TrainingData, *, host_augment: bool):
    """The run's shuffled training batches, augmented in the loader when ``host_augment``."""
    return batches(
        data.x_train,
        data.y_train,
        data.spec,
        config.batch_size,
        seed=config.seed,
        host_augment=host_augment,
        workers=config.workers,
    )


def pick_compute(config: TrainConfig, data: TrainingData) -> tuple[ComputeChoice, object | None]:
    """The compute of this run: forced by the config, cached for these settings, or timed now and cached.

    Returns:
        the choice, and when it was timed now, the winning model ready to train (as if freshly built
        from the seed, with its step already traced); else None.
    """
    where = config.augment_where
    if config.compute != "auto":
        forced = forced_compute(config.compute, mixed_requested=config.mixed_precision, host_augment=where == "host")
        return forced, None
    batch_images = min(config.batch_size, len(data.x_train))
    key = choice_key({**speed_settings(config), "batch_images": batch_images})
    cached = load_choice(config.resolved_cache_dir, key)
    if cached is not None:
        return cached, None

    def make(compute):
        model = build_for_training(config, data.spec, compute)
        return model, training_batches(config, data, host_augment=compute.host_augment)

    choice, model = choose_compute(
        make, batch_images, mixed_requested=config.mixed_precision, augment_where=where, augment_on=config.augment_on
    )
    store_choice(config.resolved_cache_dir, key, choice)
    return choice, model


def _setup_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in log.handlers):
        log.addHandler(logging.StreamHandler())
    log.setLevel(logging.INFO)
    return handler


def run_training(config: TrainConfig, run_dir: str | Path, *, resume: bool = False) -> str:
    """Runs one training end to end and returns its final state.

    Writes the config, status, progress, history, log, best and last checkpoints, validation report
    and test evaluation into ``run_dir``. Never raises for a failed run, whatever the error: its type
    and message go into ``status.json`` and its traceback into the log. Only an interrupt
    (``KeyboardInterrupt``, ``SystemExit``) is raised again, after it is recorded.

    Args:
        config: the run's frozen config.
        run_dir: the run folder, created beforehand.
        resume: continue the run in ``run_dir`` from its last completed epoch (``last.keras``); the
            status then reads ``running`` again with ``resumed`` set to the time and ``attempt`` counted up.

    Returns:
        ``succeeded``, ``failed`` or ``cancelled``.
    """
    run_dir = Path(run_dir)
    if not resume:
        config.save(run_dir / "config.json")
    handler = _setup_logging(run_dir)
    monitor = RunMonitor(run_dir, config.epochs)
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(monitor, "cancel_requested", True))
    pid = os.getpid()
    if resume:
        if not is_live(load_run(run_dir).status):
            # resumed from the command line: this process starts the new attempt itself (launch.resume has
            # already queued it, and cleared the cancel file, when the run was resumed from the app)
            (run_dir / CANCEL_FILE).unlink(missing_ok=True)
            update_status(run_dir, "queued", new_attempt=True, queued=now(), resumed=now())
        update_status(run_dir, "running", pid=pid, pid_start=process_start(pid), resumed=now())
    else:
        update_status(run_dir, "running", pid=pid, pid_start=process_start(pid), started=now(), error=None, attempt=1)
    try:
        state = _train(config, run_dir, monitor, resume=resume)
        update_status(run_dir, state, ended=now())
        monitor.update(force=True, phase=state)
        return state
    except Cancelled:
        update_status(run_dir, "cancelled", ended=now())
        monitor.update(force=True, phase="cancelled")
        log.info("cancelled before training started")
        return "cancelled"
    except BaseException as exc:  # every failure is recorded; a status left at running would lie
        message = describe_error(exc)
        log.error("run failed: %s\n%s", message, traceback.format_exc())
        update_status(run_dir, "failed", ended=now(), error=message)
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


def _train(config: TrainConfig, run_dir: Path, monitor: RunMonitor, *, resume: bool = False) -> str:
    log.info(
        "run %s%s: %s; augmentation in the %s",
        run_dir.name,
        " (resumed)" if resume else "",
        config.to_dict(),
        config.augment_where or "-",
    )
    device = device_description()
    log.info("training on %s", device)
    monitor.update(device=device)
    data = prepare_data(config, run_dir, monitor)
    _fit(config, run_dir, monitor, data, resume=resume)
    if monitor.check_cancel():
        log.info("cancelled; the best checkpoint so far is kept, and %s to resume from", LAST_CHECKPOINT)
        return "cancelled"
    best = _fit_gate(run_dir, monitor, data)
    _evaluate_test(config, run_dir, monitor, data, best)
    (run_dir / LAST_CHECKPOINT).unlink(missing_ok=True)  # nothing left to resume; it is the largest file
    return "succeeded"


def prepare_data(config: TrainConfig, run_dir: Path, monitor: RunMonitor) -> TrainingData:
    """Discovers, decodes and validates the dataset, writes ``validation.json``, and returns the arrays."""
    spec = config.spec
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
    x_train, y_train = decoded.arrays(dataset.splits["train"], class_names)
    x_val, y_val = decoded.arrays(dataset.splits["val"], class_names)
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


def _fit(config: TrainConfig, run_dir: Path, monitor: RunMonitor, data: TrainingData, *, resume: bool = False) -> None:
    """Picks the compute, builds and compiles the model and fits it, from the last checkpoint when resuming.

    The callbacks keep the best checkpoint in ``model.keras`` and the last one in ``last.keras``.
    """
    state = read_checkpoint_state(run_dir / LAST_CHECKPOINT) if resume else None
    metadata = ModelMetadata(
        tuple(data.class_names),
        data.spec,
        train_config=config.to_dict(),
        data_fingerprint=data.dataset.fingerprint(),
        name=run_dir.name,
    )
    monitor.update(force=True, phase="timing compute")
    choice, model = pick_compute(config, data)
    log.info(choice.summary())
    monitor.update(compute=choice.compute.label)
    if model is None:
        model = build_for_training(config, data.spec, choice.compute)
    train = training_batches(config, data, host_augment=choice.compute.host_augment)
    initial_epoch = 0
    if state is not None:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(run_dir / LAST_CHECKPOINT)  # weights, optimizer slots, step count, learning rate
        for variable, value in zip(_seed_variables(model), state.get("seed_states", [])):
            variable.assign(np.asarray(value, dtype=variable.dtype))  # dropout and augmentation go on as they were
        initial_epoch = int(state["epoch"])
        for _ in range(initial_epoch):
            train.on_epoch_end()  # the shuffle order of the epochs already done
        write_csv_atomic(run_dir / "history.csv", state["history"])
        log.info(
            "resumed after epoch %d of %d: best %s %.4f, learning rate %.2e",
            initial_epoch,
            config.epochs,
            state["monitor"],
            state["best"],
            float(np.asarray(model.optimizer.learning_rate)),
        )
        if initial_epoch >= config.epochs:
            return
    val = batches(data.x_val, data.y_val, data.spec, config.batch_size, seed=None) if len(data.x_val) else None
    monitor_key = "val_accuracy" if val is not None else "accuracy"
    class_weight = None
    if config.class_weights:
        counts = np.bincount(data.y_train, minlength=len(data.class_names))
        class_weight = {k: len(data.y_train) / (len(data.class_names) * c) for k, c in enumerate(counts) if c}
    ctx = FitContext(
        run_dir,
        metadata,
        len(train),
        config.batch_size,
        len(data.x_train),
        len(data.x_val),
        monitor_key,
        config.lr_patience,
        state,
    )
    model.fit(
        train,
        validation_data=val,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=_make_callbacks(monitor, ctx),
        class_weight=class_weight,
        verbose=0,
    )


def _fit_gate(run_dir: Path, monitor: RunMonitor, data: TrainingData) -> LoadedModel:
    """Fits the out-of-distribution gate and the temperature into the best model, from one pass over val.

    The gate's Gaussians are fitted on the train features and its threshold on val; the temperature
    (``radiology.calibration``) on the same val pass's probabilities.
    """
    monitor.update(force=True, phase="fitting the out-of-distribution gate and the temperature")
    path = run_dir / "model.keras"
    loaded = load_model(path)
    x_val = data.x_val if len(data.x_val) else None
    temperature = val_features = None
    if x_val is not None:
        raw, val_features = ood.predict_with_features(
            loaded, x_val, layer=ood.feature_layer(loaded.model), calibrated=False
        )
        if len(np.unique(data.y_val)) > 1:
            temperature = fit_temperature(raw, data.y_val)
            log.info("temperature %.3f fitted on %d validation images", temperature, len(x_val))
    stats = ood.fit_for_model(loaded, data.x_train, data.y_train, x_val, val_features=val_features)
    return update_metadata(loaded, path, ood=stats.to_dict(), temperature=temperature)


def _evaluate_test(config: TrainConfig, run_dir: Path, monitor: RunMonitor, data: TrainingData, best) -> None:
    """Evaluates the best checkpoint on the test split into ``metrics.json`` and ``predictions.csv``."""
    dataset, decoded = data.dataset, data.decoded
    test = dataset.splits["test"]
    if not test:
        log.warning("no test split: nothing to evaluate")
        return
    monitor.update(force=True, phase="evaluating")
    result, rows = evaluate_samples(best, test, decoded, root=dataset.root, n_boot=config.n_boot, bf16=True)
    result.update(
        source="training",
        data_root=str(dataset.root),
        split="test",
        split_method=dataset.split_method,
        seed=config.seed,
        fractions=list(config.fractions),
        data_fingerprint=dataset.fingerprint(),
        split_matches_training=True,
        training_overlap="the test split held out when this model was trained",
        evaluated=now(),
    )
    write_evaluation(run_dir, result, rows)
    log.info(
        "test accuracy %.4f (95%% CI %.4f-%.4f), macro F1 %.4f, ECE %.4f on %d images",
        result["accuracy"],
        *result["ci"]["accuracy"],
        result["macro_f1"],
        result["calibration"]["ece"],
        result["n"],
    )
