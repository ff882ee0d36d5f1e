"""TensorBoard event files of a run, so ``tensorboard --logdir runs`` compares every run.

Each counted epoch (a row of ``history.csv``) becomes one scalar per metric in ``RUN/tensorboard/train``
and ``RUN/tensorboard/validation`` (the ``val_`` metrics, under the same names as their training
counterparts, so TensorBoard draws them on one chart). They are written with TensorFlow's own summary
ops; the ``tensorboard`` package is needed only to view them. Where TensorFlow is absent (a JAX-only
GPU machine) the writer says so once and writes nothing; the run goes on.
"""

from __future__ import annotations

from pathlib import Path

EVENTS_DIR = "tensorboard"
# history columns that are not metrics of the model, under the names TensorBoard users expect
RENAMED = {"lr": "learning_rate", "seconds": "epoch_seconds"}


class EventWriter:
    """Writes a run's epochs as TensorBoard scalars, or nothing where TensorFlow is not installed.

    Attributes:
        unavailable: why no event files are written, or None when they are.
    """

    def __init__(self, run_dir: str | Path):
        """Args:
        run_dir: the run folder; the event files go into its ``tensorboard`` folder.
        """
        self.folder = Path(run_dir) / EVENTS_DIR
        self.unavailable: str | None = None
        self._writers: dict = {}
        try:
            import tensorflow as tf
            from tensorflow.core.framework import summary_pb2
        except ImportError:
            self.unavailable = "TensorFlow is not installed here, so this run writes no TensorBoard event files"
            return
        self._tf = tf
        # what tensorboard's own scalar summary writes, without needing the tensorboard package
        self._metadata = summary_pb2.SummaryMetadata()
        self._metadata.plugin_data.plugin_name = "scalars"
        self._metadata.data_class = summary_pb2.DATA_CLASS_SCALAR

    def _writer(self, name: str):
        if name not in self._writers:
            self._writers[name] = self._tf.summary.create_file_writer(str(self.folder / name))
        return self._writers[name]

    def write_epoch(self, row: dict) -> None:
        """Writes one history row (``epoch`` and its numbers) as scalars at step ``epoch``; a no-op when unavailable."""
        if self.unavailable is not None:
            return
        step = int(row["epoch"])
        for key, value in row.items():
            if key == "epoch" or value is None:
                continue
            name, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", RENAMED.get(key, key))
            with self._writer(name).as_default():
                self._tf.summary.write(tag, self._tf.constant(float(value)), step=step, metadata=self._metadata)
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        """Flushes and closes the event files."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
