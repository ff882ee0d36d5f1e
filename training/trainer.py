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

This module orchestrates the run; the data phase is ``training.data``, progress, cancellation and the
Keras callbacks are ``training.callbacks``, and the run folder's protocol (the cancel file, new run
folders, what can be resumed) is ``radiology.registry``.
"""

from __future__ import annotations

import logging
import os
import signal
import traceback
from pathlib import Path

import numpy as np

from radiology import ood
from radiology.calibration import fit_temperature
from radiology.evaluation import evaluate_samples, write_evaluation
from radiology.fsutil import remove_leftovers, write_csv_atomic
from radiology.jobs import describe_error, is_live, now, process_start
from radiology.model import (
    LoadedModel,
    ModelMetadata,
    build_model,
    compile_model,
    load_model,
    read_checkpoint_state,
    update_metadata,
)
from radiology.preprocess import PreprocessSpec
from radiology.registry import CANCEL_FILE, LAST_CHECKPOINT, load_run, update_status
from training.callbacks import Cancelled, FitContext, RunMonitor, log, make_callbacks, seed_variables
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
from training.data import TrainingData, batches, prepare_data, training_batches


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
        for p in remove_leftovers(run_dir):  # a write the previous attempt was killed in
            log.info("removed %s, left by the previous attempt", p.name)
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
        if (run_dir / LAST_CHECKPOINT).is_file():
            log.info("cancelled; the best checkpoint so far is kept, and %s to resume from", LAST_CHECKPOINT)
        else:
            log.info("cancelled before the first epoch was complete: nothing to resume from, start a new run")
        return "cancelled"
    best = _fit_gate(run_dir, monitor, data)
    _evaluate_test(config, run_dir, monitor, data, best)
    (run_dir / LAST_CHECKPOINT).unlink(missing_ok=True)  # nothing left to resume; it is the largest file
    return "succeeded"


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
        for variable, value in zip(seed_variables(model), state.get("seed_states", [])):
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
        callbacks=make_callbacks(monitor, ctx),
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
