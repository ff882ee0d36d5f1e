"""How a run computes: float32 with or without XLA, or mixed bfloat16, chosen by timing the real model.

Keras leaves XLA off on machines without a GPU, and bfloat16 is fast only where the hardware has it
(on the 2-core development CPU it is 13x slower to train). So a run with ``compute="auto"`` times a few
real training steps of each candidate, on its own model, batch size and loader, and keeps the fastest.
The choice is cached per machine and settings, so later runs (and the duration estimate) reuse it and
two runs with the same seed compute the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from radiology.jobs import now

log = logging.getLogger("training")

CHOICE_VERSION = 1


@dataclass(frozen=True)
class Compute:
    """One way to compute a training step.

    Attributes:
        precision: Keras dtype policy, ``float32`` or ``mixed_bfloat16``.
        xla: compile the train step with XLA (``jit_compile=True``); False leaves Keras' default.
        host_augment: flip and rotate in the loader threads instead of in the model. Keras' image
            augmentation layers do not compile with XLA on TensorFlow, so the XLA candidate of a run that
            leaves the placement to ``auto`` augments on the host.
    """

    precision: str = "float32"
    xla: bool = False
    host_augment: bool = False

    @property
    def label(self) -> str:
        """The compute in words: ``float32``, ``float32 + XLA (augmentation on the host)``, ``mixed_bfloat16``."""
        where = " (augmentation on the host)" if self.host_augment else ""
        return self.precision + (" + XLA" if self.xla else "") + where

    @property
    def jit_compile(self):
        """The ``jit_compile`` argument of ``Model.compile``."""
        return True if self.xla else "auto"


@dataclass
class ComputeChoice:
    """The compute a run uses and the evidence for it.

    Attributes:
        compute: the chosen compute.
        images_per_s: measured training throughput per candidate label.
        notes: why candidates were skipped or refused, in words.
        measured: when the timing was taken (ISO time); empty when nothing was timed.
        cached: whether this choice was read from the cache rather than timed now.
        device: the backend and device, in words.
    """

    compute: Compute
    images_per_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    measured: str = ""
    cached: bool = False
    device: str = ""

    def summary(self) -> str:
        """One line for the log: the choice, the timings and the notes."""
        timings = ", ".join(f"{k} {v:.1f} img/s" for k, v in self.images_per_s.items())
        parts = [f"compute: {self.compute.label}"]
        if timings:
            parts.append(f"timed {timings}" + (f" (cached from {self.measured})" if self.cached else ""))
        parts += self.notes
        return "; ".join(parts)

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {**asdict(self), "compute": asdict(self.compute)}

    @classmethod
    def from_dict(cls, d: dict) -> ComputeChoice:
        """Builds a choice from :meth:`to_dict` output."""
        return cls(
            Compute(**d["compute"]),
            dict(d.get("images_per_s", {})),
            list(d.get("notes", [])),
            d.get("measured", ""),
            bool(d.get("cached", False)),
            d.get("device", ""),
        )


def cpu_count() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _gpu_names() -> list[str]:
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return [d.device_kind for d in jax.devices() if d.platform == "gpu"]
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        if backend == "torch":
            import torch

            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except (ImportError, RuntimeError):
        return []
    return []


def device_description() -> str:
    """The Keras backend and the device it trains on, in words: "TensorFlow on CPU (2 cores)", "JAX on NVIDIA H100"."""
    import keras

    backend = keras.backend.backend()
    name = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch", "numpy": "NumPy"}.get(backend, backend)
    gpus = _gpu_names()
    if gpus:
        return f"{name} on {gpus[0]}" + (f" (x{len(gpus)})" if len(gpus) > 1 else "")
    return f"{name} on CPU ({cpu_count()} cores)"


def mixed_precision_support() -> tuple[bool, str]:
    """Whether bfloat16 compute can run fast here, and why not when it cannot.

    GPUs of the Ampere generation and later have bfloat16 units; on a CPU it needs AVX512-BF16 or AMX.
    """
    from radiology.inference import bf16_supported

    if _gpu_names():
        return True, ""
    if bf16_supported():
        return True, ""
    return False, "mixed precision not used: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX)"


def candidates(*, mixed_requested: bool, augment_where: str | None, augment_on: str) -> tuple[list[Compute], list[str]]:
    """The computes worth timing here, and notes on those left out.

    Args:
        mixed_requested: whether the user allowed mixed precision.
        augment_where: where the config augments: ``model``, ``host`` or None (no augmentation).
        augment_on: the config's placement setting; only ``auto`` lets the XLA candidate move it to the host.
    """
    host = augment_where == "host"
    xla_host = host or (augment_where == "model" and augment_on == "auto")
    found = [Compute("float32", False, host), Compute("float32", True, xla_host)]
    notes = []
    if mixed_requested:
        ok, why = mixed_precision_support()
        if ok:
            found.append(Compute("mixed_bfloat16", False, host))
        else:
            notes.append(why)
    return found, notes


def time_training_steps(model, loader, *, steps: int = 2, budget_s: float = 60.0) -> tuple[float, float]:
    """Times training steps of ``model`` on the loader's first batches.

    One warm-up step (tracing, XLA compilation) comes first and is timed apart. Then up to ``steps``
    steps are timed on full batches, fewer when they would exceed ``budget_s`` (at least one).

    Args:
        model: a compiled Keras model; its weights change.
        loader: a sequence of (inputs, labels) batches, such as ``trainer.batches``.
        steps: the most timed steps.
        budget_s: the time the timed steps may take in all.

    Returns:
        (seconds of the warm-up step, median seconds of a timed step).
    """
    x, y = loader[0]
    n = len(loader)
    if n > 1 and len(loader[n - 1][1]) < len(y):
        n -= 1  # a smaller last batch would be traced anew: time full batches only
    start = time.perf_counter()
    model.train_on_batch(x, y)
    warmup = time.perf_counter() - start
    times = []
    for i in range(steps):
        start = time.perf_counter()
        x, y = loader[(i + 1) % n]
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
        if sum(times) + times[-1] > budget_s:
            break
    return warmup, statistics.median(times)


class _Snapshot:
    """The values of a compiled model's variables and optimizer state, to put back after timing."""

    def __init__(self, model):
        model.optimizer.build(model.trainable_variables)
        self.variables = [(v, v.numpy()) for v in [*model.variables, *model.optimizer.variables]]

    def restore(self) -> None:
        for variable, value in self.variables:
            variable.assign(value)


def choose_compute(
    make, batch_images: int, *, mixed_requested: bool, augment_where: str | None, augment_on: str, steps: int = 2
) -> tuple[ComputeChoice, object]:
    """Times each candidate compute on the real model and loader and keeps the fastest.

    The winner's model is returned with its weights, seed states and optimizer put back as they were
    before timing, so it trains exactly as a freshly built one would, without tracing its step again.

    Args:
        make: callable ``make(compute)`` returning ``(model, loader)``: a fresh compiled model computing
            that way, built from the run's seed, and the run's training batches for it.
        batch_images: images in the batches timed (the batch size, or fewer for a tiny dataset).
        mixed_requested: whether the user allowed mixed precision.
        augment_where: where the config augments (see :func:`candidates`).
        augment_on: the config's placement setting.
        steps: timed steps per candidate after one warm-up step.

    Returns:
        the choice with the throughput of every candidate, and the winner's model.
    """
    found, notes = candidates(mixed_requested=mixed_requested, augment_where=augment_where, augment_on=augment_on)
    rates, models = {}, {}
    for compute in found:
        model, loader = make(compute)
        if compute.xla and not model.jit_compile:
            notes.append("XLA not possible: Keras turned it off for this model and backend")
            continue
        snapshot = _Snapshot(model)
        _, step = time_training_steps(model, loader, steps=steps)
        snapshot.restore()
        rates[compute.label] = batch_images / step
        models[compute] = model
    best = max(models, key=lambda c: rates[c.label])
    mixed = [c for c in models if c.precision != "float32"]
    if mixed and best not in mixed:
        notes.append(f"mixed precision not used: slower here ({rates[mixed[0].label]:.1f} img/s)")
    return ComputeChoice(best, rates, notes, measured=now(), device=device_description()), models[best]


def forced_compute(name: str, *, mixed_requested: bool, host_augment: bool) -> ComputeChoice:
    """The compute a config forces (``float32`` or ``xla``), with mixed precision where asked and possible."""
    notes = []
    precision = "float32"
    if mixed_requested:
        ok, why = mixed_precision_support()
        if ok:
            precision = "mixed_bfloat16"
        else:
            notes.append(why)
    return ComputeChoice(Compute(precision, name == "xla", host_augment), notes=notes, device=device_description())


def choice_key(settings: dict) -> str:
    """A short hash of what a timing depends on: the machine, backend, device and the run's settings."""
    machine = {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": cpu_count(),
        "device": device_description(),
        "v": CHOICE_VERSION,
    }
    blob = json.dumps({**machine, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_choice(cache_dir: str | Path, key: str) -> ComputeChoice | None:
    """A cached choice, or None when there is none (or it is unreadable)."""
    from radiology.fsutil import read_json

    data = read_json(Path(cache_dir) / "compute" / f"{key}.json")
    if not data:
        return None
    try:
        choice = ComputeChoice.from_dict(data)
    except (KeyError, TypeError):
        return None
    choice.cached = True
    return choice


def store_choice(cache_dir: str | Path, key: str, choice: ComputeChoice) -> None:
    """Caches a timed choice atomically."""
    from radiology.fsutil import write_json_atomic

    folder = Path(cache_dir) / "compute"
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / f"{key}.json", {**choice.to_dict(), "cached": False})


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
