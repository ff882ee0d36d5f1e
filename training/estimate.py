"""How long a run will take, measured before it starts.

:func:`estimate_run` times a few real training steps of the real model, batch size and loader on this
machine (the same timing that picks the compute, see ``training.compute``), plus a few validation
batches and a checkpoint write, and scales them to the dataset and the epochs. An estimate runs as a
background job (``training.launch.estimate``) whose record, a ``radiology.jobs`` status with the
estimate inside, is kept per dataset and speed settings in the decode cache folder.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from radiology import jobs
from radiology.model import ModelMetadata, save_checkpoint, save_model
from radiology.registry import LOCK_FILE, TrainingLock
from training.callbacks import RunMonitor
from training.clock import format_duration
from training.compute import speed_settings, time_training_steps
from training.data import batches, prepare_data, training_batches
from training.trainer import build_for_training, pick_compute

ESTIMATES = "estimates"
TIMED_STEPS = 2
VALIDATION_STEPS = 4


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
        a job status (see ``radiology.jobs``): a ``succeeded`` record has an ``estimate`` dict (see
        :class:`Estimate`), a ``failed`` one an ``error``; a live record whose process died reads as ``failed``.
    """
    return jobs.read_status(estimate_path(config), what="estimate")


def running_estimate(runs_dir: str | Path) -> dict | None:
    """The record of the estimate running now for the runs folder ``runs_dir``, or None when none runs.

    Only estimates kept in the runs folder's own cache (``RUNS_DIR/.cache``, a config's default) are seen;
    the folder is read only while some process holds the training lock, as an estimate does.
    """
    runs_dir = Path(runs_dir)
    if not (runs_dir / LOCK_FILE).exists() or not TrainingLock(runs_dir).held_elsewhere():
        return None
    for path in sorted((runs_dir / ".cache" / ESTIMATES).glob("*.json")):
        record = jobs.read_status(path, what="estimate")
        if record and record.get("state") in jobs.LIVE_STATES:
            return record
    return None


def estimate_from(record: dict | None) -> Estimate | None:
    """The estimate inside a record from :func:`read_estimate`, when it is done."""
    if not record or record.get("state") != "succeeded":
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
        measured=jobs.now(),
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
        f"About **{format_duration(estimate.total_seconds(epochs))}** for {epochs} epoch{'' if epochs == 1 else 's'} "
        "on this machine: "
        f"an epoch {format_duration(estimate.epoch_seconds())} ({estimate.train_images} training images at "
        f"{estimate.train_images_per_s:.1f} img/s, {estimate.val_images} validation images at "
        f"{estimate.val_images_per_s:.1f} img/s, checkpoints {estimate.checkpoint_s:.1f} s), then "
        f"{format_duration(estimate.after_seconds())} to fit the out-of-distribution gate and evaluate the test split."
    )
