"""Tests for training.clock: durations in words and the live clock of a run."""

import pytest

from training import clock
from training.clock import RunClock, format_duration


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "?"),
        (float("nan"), "?"),
        (0.4, "0 s"),
        (42, "42 s"),
        (200, "3 min 20 s"),
        (3900, "1 h 05 min"),
        (28 * 3600, "1 d 4 h"),
    ],
)
def test_format_duration(seconds, text):
    """Durations read as seconds, minutes, hours or days."""
    assert format_duration(seconds) == text


class FakeTime:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_run_clock_rates_and_time_left(monkeypatch):
    """Images/s leaves out the first (compiling) batch; time left counts the batches, validation and epochs left."""
    now = FakeTime()
    monkeypatch.setattr(clock.time, "monotonic", now)
    c = RunClock(epochs=3, batches=10, batch_size=8, train_images=80, val_images=24)
    c.epoch_begin()
    now.t += 30  # the first batch traces the step
    c.batch_end(0)
    assert c.fields(epoch=1) == {"images_per_s": None, "epoch_left_s": None, "run_left_s": None}
    for b in range(1, 5):
        now.t += 2
        c.batch_end(b)
    assert c.images_per_s() == pytest.approx(4.0)  # 8 images per 2 s
    # 5 batches left at 2 s, validation 24 images at a third of the training cost: 24 * 0.25 / 3 = 2 s
    assert c.epoch_left() == pytest.approx(12.0)
    assert c.run_left(epoch=1) == pytest.approx(12.0 + 2 * (20 + 2))
    for b in range(5, 10):
        now.t += 2
        c.batch_end(b)
    train_seconds = c.train_seconds()
    now.t += 5  # validation took 5 s
    c.epoch_end(train_seconds)
    assert c.epoch_seconds == pytest.approx(30 + 18 + 5) and c.val_seconds == pytest.approx(5)
    c.epoch_begin()
    assert c.fields(epoch=2)["run_left_s"] == pytest.approx(10 * 2 + 5 + 53)  # last epoch's rate until a new one
