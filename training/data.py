"""The data phase of a run: the dataset discovered, decoded through the decode cache, checked and split
into arrays, and the Keras loaders that feed those arrays to the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiology.cache import DecodedImages
from radiology.datasets import Dataset
from radiology.errors import DatasetError
from radiology.fsutil import write_json_atomic
from radiology.preprocess import PreprocessSpec, to_model_input
from radiology.splits import check_splits
from training.callbacks import Cancelled, RunMonitor, log
from training.config import TrainConfig
from training.distribute import Mesh


def batches(
    pixels: np.ndarray,
    labels: np.ndarray,
    spec: PreprocessSpec,
    batch_size: int,
    *,
    seed: int | None,
    host_augment: bool = False,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    devices: int = 1,
):
    """A Keras PyDataset over uint8 images, reshuffled every epoch when ``seed`` is given.

    With ``host_augment`` the flip and rotation happen here, in ``workers`` threads, instead of in the model.

    In a data-parallel run every batch is global: ``batch_size`` images split evenly over ``devices``
    devices. A last batch that does not split evenly is cut to the largest multiple of ``devices`` (left out
    when none), since every device must take the same share. With ``shard=(k, n)`` this loader yields only
    process ``k`` of ``n``'s slice of each global batch, the images the same, augmented the same, as the
    whole batch's.

    Args:
        pixels: uint8 array of shape (N, H, W).
        labels: int array of shape (N,).
        spec: the preprocessing.
        batch_size: images per global batch.
        seed: the shuffling and augmentation seed; None keeps the order and does not shuffle.
        host_augment: augment in the loader.
        workers: loader threads.
        shard: (this process, processes).
        devices: the devices of every process together.
    """
    import keras

    from radiology.augment import augment_on_host

    part, parts = shard
    if devices % parts:
        raise ValueError(f"{devices} devices do not divide over {parts} processes")
    last = len(labels) % batch_size
    kept_last = last - last % devices
    n_batches = len(labels) // batch_size + (kept_last > 0)

    class Batches(keras.utils.PyDataset):
        images = len(labels) - last + kept_last  # images per epoch, all processes together
        left_out = last - kept_last  # of the last batch, which does not split evenly over the devices

        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed) if seed is not None else None
            self.order = self.rng.permutation(len(labels)) if self.rng is not None else np.arange(len(labels))
            self.epoch = 0

        def __len__(self):
            return n_batches

        def __getitem__(self, i):
            idx = np.sort(self.order[i * batch_size : (i + 1) * batch_size])
            idx = idx[: len(idx) - len(idx) % devices]
            share = len(idx) // parts
            start = part * share
            mine = idx[start : start + share]
            images = pixels[mine]
            if host_augment:
                # a generator per batch and epoch keeps runs reproducible whatever the thread order; drawn for
                # the whole global batch, so that a process's slice gets the draws of the same images
                rng = np.random.default_rng([seed or 0, self.epoch, i])
                images = augment_on_host(images, rng, within=(start, len(idx)))
            return to_model_input(images, spec), labels[mine]

        def on_epoch_end(self):
            self.epoch += 1
            if self.rng is not None:
                self.order = self.rng.permutation(len(labels))

    return Batches()


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


def training_batches(config: TrainConfig, data: TrainingData, *, host_augment: bool, mesh: Mesh | None = None):
    """The run's shuffled training batches, augmented in the loader when ``host_augment``.

    Args:
        config: the run's config.
        data: the run's data.
        host_augment: augment in the loader.
        mesh: the run's mesh: this process feeds its slice of every global batch; one device by default.
    """
    mesh = mesh or Mesh()
    return batches(
        data.x_train,
        data.y_train,
        data.spec,
        config.batch_size,
        seed=config.seed,
        host_augment=host_augment,
        workers=config.workers,
        shard=mesh.shard,
        devices=mesh.devices,
    )


def prepare_data(config: TrainConfig, run_dir: Path, monitor: RunMonitor) -> TrainingData:
    """Discovers, decodes and validates the dataset, writes ``validation.json``, and returns the arrays."""
    spec = config.spec
    monitor.update(force=True, phase="caching")

    def decode_progress(done, total):
        monitor.update(batch=done, batches=total)
        # process 0 alone ends a distributed run here; a cancel reaches the others at its first batch
        if monitor.writes and monitor.check_cancel():
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
    if monitor.writes:
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
