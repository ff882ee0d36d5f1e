"""The data phase of a run: the dataset discovered, decoded through the decode cache, checked and split
into arrays, and the Keras loaders that feed those arrays to the model.
"""

from __future__ import annotations

import math
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
