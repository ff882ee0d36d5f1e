"""The honest clock: how long a run will take before it starts, and how long it has left while it runs.

Before launch, :func:`estimate_run` times a few real training steps of the real model, batch size and
loader on this machine (the same timing that picks the compute, see ``training.compute``), plus a
few validation batches and a checkpoint write, and scales them to the dataset and the epochs. During a run,
:class:`RunClock` turns batch times into images/s and the time left for the epoch and the run.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ESTIMATES = "estimates"
TIMED_STEPS = 2
VALIDATION_STEPS = 4


def format_duration(seconds: float | None) -> str:
    """A duration in words: ``42 s``, ``3 min 20 s``, ``1 h 05 min``, ``2 d 4 h``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


class RunClock:
    """Images/s and time left of a running fit, from the times of its batches.

    The first batch of every epoch (tracing, compilation, loader start) is left out of the rate.
    Validation time comes from the last finished epoch; before one has finished it is taken as a
    third of the training time of as many images (a forward pass without the backward one).
    """

    def __init__(self, *, epochs: int, batches: int, batch_size: int, train_images: int, val_images: int):
        self.epochs, self.batches, self.batch_size = epochs, batches, batch_size
        self.train_images, self.val_images = train_images, val_images
        self.epoch_seconds: float | None = None
        self.val_seconds: float | None = None
        self.done = 0
        self._last_spb: float | None = None
        self._epoch_start = time.monotonic()
        self._rate_start: float | None = None
        self._rate_from = 0

    def epoch_begin(self) -> None:
        """Marks the start of an epoch."""
        self._epoch_start = time.monotonic()
        self._rate_start, self._rate_from, self.done = None, 0, 0

    def batch_end(self, batch: int) -> None:
        """Marks the end of batch ``batch`` (0-based) of the current epoch."""
        self.done = batch + 1
        if self._rate_start is None:
            self._rate_start, self._rate_from = time.monotonic(), self.done

    def train_seconds(self) -> float:
        """Seconds since the epoch began."""
        return time.monotonic() - self._epoch_start

    def epoch_end(self, train_seconds: float | None = None) -> None:
        """Marks the end of an epoch, validation included; ``train_seconds`` is its training part."""
        if train_seconds is not None and self._rate_start is not None and self.done > self._rate_from:
            trained = self._epoch_start + train_seconds - self._rate_start
            self._last_spb = trained / (self.done - self._rate_from)
        self.epoch_seconds = time.monotonic() - self._epoch_start
        if train_seconds is not None:
            self.val_seconds = max(self.epoch_seconds - train_seconds, 0.0)

    def seconds_per_batch(self) -> float | None:
        """Seconds per batch in this epoch after its first batch, else the last epoch's, else None."""
        if self._rate_start is None or self.done <= self._rate_from:
            return self._last_spb
        return (time.monotonic() - self._rate_start) / (self.done - self._rate_from)

    def images_per_s(self) -> float | None:
        """Training images per second."""
        spb = self.seconds_per_batch()
        return self.batch_size / spb if spb else None

    def _validation(self, spb: float) -> float:
        if self.val_seconds is not None:
            return self.val_seconds
        return spb / self.batch_size * self.val_images / 3

    def epoch_left(self) -> float | None:
        """Seconds left in this epoch, validation included, or None before the rate is known."""
        spb = self.seconds_per_batch()
        if spb is None:
            return None
        return (self.batches - self.done) * spb + self._validation(spb)

    def run_left(self, epoch: int) -> float | None:
        """Seconds of training left in the run while ``epoch`` (1-based) is the current one."""
        left = self.epoch_left()
        if left is None:
            return None
        spb = self.seconds_per_batch()
        full = self.epoch_seconds if self.epoch_seconds is not None else self.batches * spb + self._validation(spb)
        return left + (self.epochs - epoch) * full

    def fields(self, epoch: int) -> dict:
        """The clock's progress fields: ``images_per_s``, ``epoch_left_s``, ``run_left_s`` (None when unknown)."""
        rate, e, r = self.images_per_s(), self.epoch_left(), self.run_left(epoch)
        return {
            "images_per_s": round(rate, 2) if rate else None,
            "epoch_left_s": round(e, 1) if e is not None else None,
            "run_left_s": round(r, 1) if r is not None else None,
        }


@dataclass
class Estimate:
    """A timed estimate of a run's duration on this machine.

    Attributes:
        train_images: readable training images.
        val_images: readable validation images.
        test_images: test images.
        train_images_per_s: training throughput with the chosen compute.
        val_images_per_s: validation (forward pass) throughput.
        checkpoint_s: seconds to write the per-epoch checkpoint and the best model.
        setup_s: seconds before the first epoch beyond its steps: model build, first-step compilation.
        compute: the chosen compute in words, with its timings.
        device: the backend and device in words.
        batch_size: images in a timed batch.
        steps: training steps timed.
        measured: when (ISO time).
    """

    train_images: int
    val_images: int
    test_images: int
    train_images_per_s: float
    val_images_per_s: float
    checkpoint_s: float
    setup_s: float
    compute: str
    device: str
    batch_size: int
    steps: int
    measured: str

    def epoch_seconds(self) -> float:
        """Seconds of one epoch: training, validation and checkpoint writes."""
        return self.train_images / self.train_images_per_s + self.val_images / self.val_images_per_s + self.checkpoint_s

    def after_seconds(self) -> float:
        """Seconds after the last epoch: the gate's forward pass over the train and validation images, and the test."""
        return (self.train_images + self.val_images + self.test_images) / self.val_images_per_s

    def total_seconds(self, epochs: int) -> float:
        """Seconds of a run of ``epochs`` epochs, gate fitting and test evaluation included (data from the cache)."""
        return self.setup_s + epochs * self.epoch_seconds() + self.after_seconds()

    def method(self) -> str:
        """How the estimate was measured, in words."""
        return (
            f"timed {self.steps} real training steps of {self.batch_size} images after a warm-up step, up to "
            f"{VALIDATION_STEPS} validation batches and one checkpoint write, on {self.device}, "
            f"{self.measured[:16].replace('T', ' ')} UTC; {self.compute}"
        )

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return asdict(self)


def speed_settings(config) -> dict:
    """The settings a run's speed depends on (not the epochs, seed, weights or learning rate)."""
    return {
        "image_size": config.image_size,
        "batch_size": config.batch_size,
        "trainable_layers": config.trainable_layers,
        "augment": config.augment_where,
        "workers": config.workers,
        "mixed_precision": config.mixed_precision,
        "compute": config.compute,
    }


def estimate_path(config) -> Path:
    """Where the estimate for this config's dataset, split and speed settings is kept."""
    key = {
        "data": str(Path(config.data).resolve()),
        "seed": config.seed,
        "fractions": list(config.fractions),
        **speed_settings(config),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return config.resolved_cache_dir / ESTIMATES / f"{digest}.json"


def read_estimate(config) -> dict | None:
    """The stored estimate record for this config, or None.

    Returns:
        ``{"state": "running" | "done" | "failed", ...}``; a ``done`` record has an ``estimate`` dict
        (see :class:`Estimate`), a ``failed`` one an ``error``. A ``running`` record whose process died
        reads as ``failed``.
    """
    from radiology.registry import pid_alive, read_json

    record = read_json(estimate_path(config))
    if record and record.get("state") == "running" and not pid_alive(record.get("pid")):
        record = {**record, "state": "failed", "error": "the estimate process died"}
    return record


def estimate_from(record: dict | None) -> Estimate | None:
    """The estimate inside a record from :func:`read_estimate`, when it is done."""
    if not record or record.get("state") != "done":
        return None
    return Estimate(**record["estimate"])


def estimate_run(config, *, progress=None) -> Estimate:
    """Times this config on this machine and returns its estimate; caches the compute choice as a run would.

    Decodes the dataset through the decode cache, picks the compute as the run will (timing it unless
    cached), builds the real model and times training steps from the real loader, validation batches and
    the checkpoint writes.

    Args:
        config: the run's config.
        progress: optional callable ``progress(phase)`` told what is being timed.

    Raises:
        DatasetError: the dataset cannot be used.
    """
    import keras

    from radiology.model import ModelMetadata, save_checkpoint, save_model
    from radiology.registry import now
    from training.compute import time_training_steps
    from training.trainer import (
        RunMonitor,
        batches,
        build_for_training,
        pick_compute,
        prepare_data,
        training_batches,
    )

    def say(phase):
        if progress:
            progress(phase)

    with tempfile.TemporaryDirectory() as tmp:
        say("reading images")
        data = prepare_data(config, Path(tmp), RunMonitor(Path(tmp), config.epochs))
        say("timing float32 with and without XLA")
        choice, _ = pick_compute(config, data)
        start = time.perf_counter()
        model = build_for_training(config, data.spec, choice.compute)
        build = time.perf_counter() - start
        train = training_batches(config, data, host_augment=choice.compute.host_augment)
        say("timing training steps")
        warmup, step = time_training_steps(model, train, steps=TIMED_STEPS)
        n_batch = min(config.batch_size, len(data.x_train))
        say("timing validation")
        has_val = len(data.x_val) > 0
        x_val, y_val = (data.x_val, data.y_val) if has_val else (data.x_train, data.y_train)
        # validation as fit runs it: evaluate over the loader (compiled by a first call), not a bare batch
        val = batches(x_val, y_val, data.spec, config.batch_size, seed=None)
        steps = min(VALIDATION_STEPS, len(val))
        model.evaluate(val, steps=1, verbose=0)
        start = time.perf_counter()
        model.evaluate(val, steps=steps, verbose=0)
        val_rate = min(steps * config.batch_size, len(x_val)) / max(time.perf_counter() - start, 1e-6)
        say("timing a checkpoint write")
        meta = ModelMetadata(tuple(data.class_names), data.spec)
        start = time.perf_counter()
        save_checkpoint(model, Path(tmp) / "last.keras", meta, {"epoch": 0})
        save_model(model, Path(tmp) / "model.keras", meta)
        checkpoint = time.perf_counter() - start
        del model
        keras.backend.clear_session()
    # the run finds the compute choice that this estimate cached, so it does not time it again
    return Estimate(
        train_images=len(data.x_train),
        val_images=len(data.x_val),
        test_images=len(data.dataset.splits["test"]),
        train_images_per_s=n_batch / step,
        val_images_per_s=val_rate,
        checkpoint_s=checkpoint,
        setup_s=build + max(warmup - step, 0.0),
        compute=choice.summary(),
        device=choice.device,
        batch_size=n_batch,
        steps=TIMED_STEPS,
        measured=now(),
    )


def size_tradeoff(image_size: int) -> str:
    """The image-size trade-off in one line: time per epoch against the Grad-CAM grid."""
    cells = image_size // 16
    share = (image_size / 224) ** 2
    return (
        f"{image_size} px: compute per image about {share:.0%} of 224 px (it grows with N²; Estimate measures it), "
        f"and a Grad-CAM of {cells}×{cells} cells (block5_conv3 is N/16 across; 14×14 at 224 px)."
    )


def describe(estimate: Estimate, epochs: int) -> str:
    """The estimate of a run of ``epochs`` epochs in one sentence."""
    return (
        f"About **{format_duration(estimate.total_seconds(epochs))}** for {epochs} epochs on this machine: "
        f"an epoch {format_duration(estimate.epoch_seconds())} ({estimate.train_images} training images at "
        f"{estimate.train_images_per_s:.1f} img/s, {estimate.val_images} validation images at "
        f"{estimate.val_images_per_s:.1f} img/s, checkpoints {estimate.checkpoint_s:.1f} s), then "
        f"{format_duration(estimate.after_seconds())} to fit the out-of-distribution gate and evaluate the test split."
    )
