"""Tests for radiology.lru: the per-session cache bounded by bytes and by age."""

import numpy as np
import pytest

from radiology.explain import Explanation
from radiology.lru import LRUCache, nbytes


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _mib(n: int = 1) -> np.ndarray:
    return np.zeros(n * 2**20, np.uint8)


def test_nbytes_counts_arrays_in_tuples_and_dataclasses():
    """An (image, Explanation) tuple counts the image, the probabilities and the CAM."""
    ex = Explanation(np.zeros(3, np.float32), 0, np.zeros((224, 224), np.float32), "Grad-CAM")
    assert nbytes((np.zeros((10, 10), np.uint8), ex)) == 100 + 12 + 224 * 224 * 4
    assert nbytes("text") == 0


def test_least_recently_used_goes_first_beyond_the_byte_bound():
    """Three 1 MiB entries under a 2.5 MiB bound keep the two most recently used."""
    cache = LRUCache(max_bytes=int(2.5 * 2**20), max_age_s=60, clock=Clock())
    cache.put("a", _mib())
    cache.put("b", _mib())
    assert cache.get("a") is not None  # a is now more recent than b
    cache.put("c", _mib())
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.bytes == 2 * 2**20 and len(cache) == 2


def test_entries_expire_after_their_age_since_last_use():
    """An entry unused for max_age_s is gone; one used in between stays."""
    clock = Clock()
    cache = LRUCache(max_bytes=10 * 2**20, max_age_s=100, clock=clock)
    cache.put("old", _mib())
    cache.put("used", _mib())
    clock.now = 60
    cache.get("used")
    clock.now = 120
    assert cache.get("old") is None and cache.get("used") is not None
    assert cache.bytes == 2**20


def test_replacing_a_key_and_an_oversized_value():
    """Putting a key again replaces its bytes; a value larger than the bound is not kept and evicts nothing."""
    cache = LRUCache(max_bytes=3 * 2**20, max_age_s=60, clock=Clock())
    cache.put("a", _mib())
    cache.put("a", _mib(2))
    assert cache.bytes == 2 * 2**20 and len(cache) == 1
    cache.put("huge", _mib(4))
    assert "huge" not in cache and "a" in cache and cache.bytes == 2 * 2**20


def test_bounds_must_be_positive():
    """A zero or negative bound is refused, naming the value."""
    with pytest.raises(ValueError, match="max_bytes=0"):
        LRUCache(max_bytes=0, max_age_s=1)
