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

A data-parallel run (``training.distribute``) trains with ``keras.distribution.DataParallel`` over every
device of every process; each process runs this module with the same config and feeds its slice of every
global batch. Only process 0 writes the run folder; the others log to ``log.<id>.txt`` in it. Process 0
alone then fits the gate and evaluates the test split, on its own devices, and the others wait for it.

This module orchestrates the run; the data phase is ``training.data``, progress, cancellation and the
Keras callbacks are ``training.callbacks``, the distribution is ``training.distribute``, and the run
folder's protocol (the cancel file, new run folders, what can be resumed) is ``radiology.registry``.
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
from radiology.errors import DistributeError
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
from training.distribute import Mesh, Peers, broadcast, local, scope


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


def _setup_logging(run_dir: Path, mesh: Mesh) -> logging.Handler:
    name = "log.txt" if mesh.main else f"log.{mesh.process_id}.txt"
    handler = logging.FileHandler(run_dir / name)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in log.handlers):
        log.addHandler(logging.StreamHandler())
    log.setLevel(logging.INFO)
    return handler


def run_training(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    mesh: Mesh | None = None,
    peers: Peers | None = None,
) -> str:
    """Runs one training end to end and returns its final state.

    Writes the config, status, progress, history, log, best and last checkpoints, validation report
    and test evaluation into ``run_dir``. Never raises for a failed run, whatever the error: its type
    and message go into ``status.json`` and its traceback into the log. Only an interrupt
    (``KeyboardInterrupt``, ``SystemExit``) is raised again, after it is recorded.

    In a run of several processes every process calls this with the same config and folder; process 0
    writes the folder, and a failure of any process fails the run with that process's message.

    Args:
        config: the run's frozen config.
        run_dir: the run folder, created beforehand.
        resume: continue the run in ``run_dir`` from its last completed epoch (``last.keras``); the
            status then reads ``running`` again with ``resumed`` set to the time and ``attempt`` counted up.
        mesh: the run's mesh (``training.distribute.plan``); one device by default.
        peers: the other processes of a run of several (``training.distribute.Peers``), else None.

    Returns:
        ``succeeded``, ``failed`` or ``cancelled``: the run's state, the same in every process.
    """
    run_dir = Path(run_dir)
    mesh = mesh or Mesh()
    if not resume and mesh.main:
        config.save(run_dir / "config.json", mesh=mesh.describe())
    handler = _setup_logging(run_dir, mesh)
    monitor = RunMonitor(run_dir, config.epochs, writes=mesh.main, agree=peers.any if peers is not None else None)
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(monitor, "cancel_requested", True))
    pid = os.getpid()
    if peers is not None:
        peers.on_peer_failure = lambda message: _peer_failed(run_dir, monitor, message)
        peers.start()
    if not mesh.main:
        log.info("process %d of %d; process 0 writes the run folder", mesh.process_id, mesh.processes)
    elif resume:
        if not is_live(load_run(run_dir).status):
            # resumed from the command line: this process starts the new attempt itself (launch.resume has
            # already queued it, and cleared the cancel file, when the run was resumed from the app)
            (run_dir / CANCEL_FILE).unlink(missing_ok=True)
            update_status(run_dir, "queued", new_attempt=True, queued=now(), resumed=now())
        update_status(run_dir, "running", pid=pid, pid_start=process_start(pid), resumed=now(), mesh=mesh.describe())
        for p in remove_leftovers(run_dir):  # a write the previous attempt was killed in
            log.info("removed %s, left by the previous attempt", p.name)
    else:
        update_status(
            run_dir,
            "running",
            pid=pid,
            pid_start=process_start(pid),
            started=now(),
            error=None,
            attempt=1,
            mesh=mesh.describe(),
        )
    try:
        state = _train(config, run_dir, monitor, mesh, peers, resume=resume)
        if mesh.main:
            update_status(run_dir, state, ended=now())
            monitor.update(force=True, phase=state)
        if peers is None:
            return state
        state = peers.finish(state)
        log.info("the run ended: %s", state)
        return state
    except Cancelled:
        if mesh.main:
            update_status(run_dir, "cancelled", ended=now())
            monitor.update(force=True, phase="cancelled")
        log.info("cancelled before training started")
        return peers.finish("cancelled") if peers is not None else "cancelled"
    except BaseException as exc:  # every failure is recorded; a status left at running would lie
        message = describe_error(exc)
        log.error("run failed: %s\n%s", message, traceback.format_exc())
        if peers is not None:
            message = _failure_of_the_run(peers, mesh, message)
        if mesh.main:
            update_status(run_dir, "failed", ended=now(), error=message)
            monitor.update(force=True, phase="failed")
        if not isinstance(exc, Exception):
            raise
        return "failed"
    finally:
        signal.signal(signal.SIGTERM, previous)
        log.removeHandler(handler)
        handler.close()


def _failure_of_the_run(peers: Peers, mesh: Mesh, message: str) -> str:
    """The failure a distributed run records for this process's error, after telling the other processes.

    A collective fails in every process when one of them dies, so process 0 first looks for a failure or
    silence of another process, which is then the cause to name.
    """
    own = f"process {mesh.process_id} of {mesh.processes} failed: {message}"
    if not mesh.main:
        peers.publish_failure(message)
        peers.stop()
        return own
    cause = peers.peer_failure()
    peers.publish_failure(cause or own)  # the others end when they see it
    peers.stop()
    if cause:
        log.error("the run failed because %s", cause)
    return cause or own


def _peer_failed(run_dir: Path, monitor: RunMonitor, message: str) -> None:
    """In process 0's watcher thread: records another process's failure as the run's, and ends this process.

    This process may be blocked in a collective that never returns, so it ends here rather than unwinds.
    """
    log.error("run failed: %s", message)
    update_status(run_dir, "failed", ended=now(), error=message)
    monitor.update(force=True, phase="failed")
    for handler in log.handlers:
        handler.flush()
    os._exit(1)


def _train(
    config: TrainConfig, run_dir: Path, monitor: RunMonitor, mesh: Mesh, peers: Peers | None, *, resume: bool = False
) -> str:
    log.info(
        "run %s%s: %s; augmentation in the %s",
        run_dir.name,
        " (resumed)" if resume else "",
        config.to_dict(),
        config.augment_where or "-",
    )
    device = device_description()
    log.info("training on %s; %s", device, mesh.describe())
    monitor.update(device=device, mesh=mesh.describe())
    data = prepare_data(config, run_dir, monitor)
    _fit(config, run_dir, monitor, data, mesh, peers, resume=resume)
    if monitor.cancel_agreed():
        if not mesh.main:
            log.info("cancelled")
        elif (run_dir / LAST_CHECKPOINT).is_file():
            log.info("cancelled; the best checkpoint so far is kept, and %s to resume from", LAST_CHECKPOINT)
        else:
            log.info("cancelled before the first epoch was complete: nothing to resume from, start a new run")
        return "cancelled"
    if not mesh.main:
        log.info("training done; process 0 fits the gate and evaluates the test split")
        return "succeeded"
    best = _fit_gate(run_dir, monitor, data)
    _evaluate_test(config, run_dir, monitor, data, best)
    (run_dir / LAST_CHECKPOINT).unlink(missing_ok=True)  # nothing left to resume; it is the largest file
    return "succeeded"


def _compute(config: TrainConfig, data: TrainingData, mesh: Mesh) -> tuple[ComputeChoice, object | None]:
    """The compute of the run: as :func:`pick_compute` on one device; not timed when distributed.

    Timing candidates would run collectives in every process and could pick differently in each; on the
    JAX backend every step is compiled with XLA anyway, so ``auto`` means float32 (bfloat16 where asked
    and supported).
    """
    if not mesh.distributed:
        return pick_compute(config, data)
    name = "float32" if config.compute == "auto" else config.compute
    host = config.augment_where == "host"
    choice = forced_compute(name, mixed_requested=config.mixed_precision, host_augment=host)
    if config.compute == "auto":
        choice.notes.append("not timed: a data-parallel run compiles every step with XLA on JAX")
    return choice, None


def _fit(
    config: TrainConfig,
    run_dir: Path,
    monitor: RunMonitor,
    data: TrainingData,
    mesh: Mesh,
    peers: Peers | None,
    *,
    resume: bool = False,
) -> None:
    """Picks the compute, builds and compiles the model and fits it, from the last checkpoint when resuming.

    The callbacks keep the best checkpoint in ``model.keras`` and the last one in ``last.keras`` (process 0).
    """
    state = read_checkpoint_state(run_dir / LAST_CHECKPOINT) if resume and mesh.main else None
    if resume and peers is not None:
        state = peers.share("resume_state", state)
    metadata = ModelMetadata(
        tuple(data.class_names),
        data.spec,
        train_config=config.to_dict(),
        data_fingerprint=data.dataset.fingerprint(),
        name=run_dir.name,
    )
    monitor.update(force=True, phase="timing compute")
    choice, model = _compute(config, data, mesh)
    log.info(choice.summary())
    monitor.update(compute=choice.compute.label)
    with scope(mesh):
        if model is None:
            model = build_for_training(config, data.spec, choice.compute)
        train = training_batches(config, data, host_augment=choice.compute.host_augment, mesh=mesh)
        _warn_left_out("training", train, mesh)
        if not len(train):
            raise DistributeError(
                f"{len(data.x_train)} training images do not make one batch that splits over {mesh.devices} devices"
            )
        initial_epoch = 0
        if state is not None:
            _restore(model, run_dir / LAST_CHECKPOINT, config, data, choice, mesh)
            for variable, value in zip(seed_variables(model), state.get("seed_states", [])):
                variable.assign(np.asarray(value, dtype=variable.dtype))  # dropout and augmentation go on as they were
            initial_epoch = int(state["epoch"])
            for _ in range(initial_epoch):
                train.on_epoch_end()  # the shuffle order of the epochs already done
            if mesh.main:
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
        val = None
        if len(data.x_val):
            val = batches(
                data.x_val, data.y_val, data.spec, config.batch_size, seed=None, shard=mesh.shard, devices=mesh.devices
            )
            _warn_left_out("validation", val, mesh)
            if not len(val):
                val = None
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
            train.images,
            val.images if val is not None else 0,
            monitor_key,
            config.lr_patience,
            state,
            writes=mesh.main,
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


def _warn_left_out(split: str, loader, mesh: Mesh) -> None:
    """Logs the images of ``split`` each epoch leaves out because its last batch does not split over the devices."""
    if loader.left_out:
        log.warning(
            "%d %s images an epoch left out: the last batch does not split evenly over %d devices",
            loader.left_out,
            split,
            mesh.devices,
        )


def _restore(model, path: Path, config: TrainConfig, data: TrainingData, choice: ComputeChoice, mesh: Mesh) -> None:
    """Loads the weights, optimizer slots, step count and learning rate of ``last.keras`` into ``model``.

    With several processes only process 0 is sure to have the file (no shared filesystem is assumed): it
    reads it into a copy of the model on its own devices, and its values are broadcast to every process.
    """
    model.optimizer.build(model.trainable_variables)
    if mesh.processes == 1:
        model.load_weights(path)
        return
    variables = [*model.variables, *model.optimizer.variables]
    if mesh.main:
        with local():
            twin = build_for_training(config, data.spec, choice.compute)
            twin.optimizer.build(twin.trainable_variables)
            twin.load_weights(path)
            values = [np.asarray(v) for v in [*twin.variables, *twin.optimizer.variables]]
    else:
        values = [np.zeros(v.shape, dtype=v.dtype) for v in variables]
    for variable, value in zip(variables, broadcast(values, main=mesh.main)):
        variable.assign(value)


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
