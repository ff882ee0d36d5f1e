"""Progress, cancellation and the Keras callbacks of one run.

:class:`RunMonitor` writes ``progress.json`` and notices a cancel request (the ``cancel`` file or
SIGTERM). The callbacks of :func:`make_callbacks` write progress per batch and ``history.csv`` per
epoch, keep the best (``model.keras``) and last (``last.keras``) checkpoints, write the TensorBoard
event files, step the learning-rate schedule, and stop the run after the current batch of training or
of validation when a cancel arrives: an epoch whose training was cut is not counted, one whose
validation was cut keeps its training, unvalidated.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiology.fsutil import write_csv_atomic, write_json_atomic
from radiology.jobs import now
from radiology.model import ModelMetadata, save_checkpoint, save_model
from radiology.registry import CANCEL_FILE, LAST_CHECKPOINT
from training.clock import RunClock, format_duration
from training.distribute import local
from training.events import EventWriter

LOG_EVERY_S = 60.0  # a progress line in the log at most this often within an epoch
log = logging.getLogger("training")


class Cancelled(Exception):
    """Raised inside the run when a cancel request arrives outside of fit."""


class RunMonitor:
    """Progress and cancellation of one run, shared by the data phase and the Keras callback.

    Args:
        run_dir: the run folder.
        epochs: the run's epochs.
        writes: whether this process writes the run folder (process 0 of a distributed run; the others
            keep their progress to themselves).
        agree: in a run of several processes, the collective that tells whether a flag is set in any of them
            (``training.distribute.Peers.any``), so that a cancel stops them all at the same batch.
    """

    def __init__(self, run_dir: Path, epochs: int, *, writes: bool = True, agree: Callable[[bool], bool] | None = None):
        self.run_dir = run_dir
        self.epochs = epochs
        self.writes = writes
        self.agree = agree
        self.cancel_requested = False
        self._last_write = 0.0
        self.progress = {"phase": "starting", "epoch": 0, "epochs": epochs, "batch": 0, "batches": 0}

    def check_cancel(self) -> bool:
        """Whether a cancel was requested of this process, by file or signal."""
        if not self.cancel_requested and (self.run_dir / CANCEL_FILE).exists():
            self.cancel_requested = True
        return self.cancel_requested

    def cancel_agreed(self) -> bool:
        """Whether a cancel was requested of any process of the run; every process must call it at the same point."""
        requested = self.check_cancel()
        if self.agree is not None:
            self.cancel_requested = requested = self.agree(requested)
        return requested

    def update(self, *, force: bool = False, **fields) -> None:
        """Records progress; writes it at most every 0.3 s unless forced, in the process that writes the run folder."""
        self.progress.update(fields)
        t = time.monotonic()
        if self.writes and (force or t - self._last_write > 0.3):
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
        writes: whether this process writes the run folder (checkpoints, history, TensorBoard events).
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
    writes: bool = True


def make_callbacks(monitor: RunMonitor, ctx: FitContext):
    import keras

    resume = ctx.resume or {}

    val_batches = math.ceil(ctx.val_images / ctx.batch_size) if ctx.val_images else 0
    events = EventWriter(ctx.run_dir) if ctx.writes else None
    if events is not None and events.unavailable:
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
            if monitor.cancel_agreed():
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if events is not None:
                events.close()

        def on_test_begin(self, logs=None):
            # Keras validates even after stop_training broke the epoch off, and resets stop_evaluating
            # just before this call: setting it here stops that validation after its first batch
            self.train_seconds = clock.train_seconds()
            self.validated = 0
            cut["training"] = clock.done < ctx.batches
            if monitor.cancel_agreed():
                self.model.stop_evaluating = True

        def on_test_batch_end(self, batch, logs=None):
            self.validated += 1
            if monitor.cancel_agreed():
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
            score = -math.inf if cut["validation"] else logs.get(ctx.monitor_key, -math.inf)
            improved = score > self.best
            if improved:
                self.best = score
            if ctx.writes:
                self._write(epoch, row, improved)
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
                ("  (best, saved)" if ctx.writes else "  (best)") if improved else "",
            )

        def _write(self, epoch, row, improved):
            """Writes the epoch's events, checkpoints and history (process 0 of a distributed run).

            The variables are replicated, so this process's copy is the model. The uncompiled copy that
            ``save_model`` builds is made on this process's own devices, outside any distribution: its
            variables would otherwise be created across every process, which only this one is doing.
            """
            events.write_epoch(row)
            with local():
                if improved:
                    monitor.update(force=True, phase="checkpoint")
                    save_model(self.model, ctx.run_dir / "model.keras", ctx.metadata)
                state = {
                    "epoch": epoch + 1,
                    "best": self.best,
                    "monitor": ctx.monitor_key,
                    "plateau": plateau.state(),
                    "history": self.rows,
                    "seed_states": [np.asarray(v).tolist() for v in seed_variables(self.model)],
                }
                save_checkpoint(self.model, ctx.run_dir / LAST_CHECKPOINT, ctx.metadata, state)
            write_csv_atomic(ctx.run_dir / "history.csv", self.rows)

    # the schedule first, so the checkpoint written at the end of an epoch holds its updated state
    return [plateau, RunCallback()]


def seed_variables(model) -> list:
    """The states of the model's random generators (dropout, augmentation), which ``.keras`` files leave out."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]
