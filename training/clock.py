"""The run clock: images/s and the time left of the epoch and the run, from the times of a fit's batches.

The estimate of a run's duration before it starts lives in ``training.estimate``.
"""

from __future__ import annotations

import math
import time


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
