"""A small least-recently-used cache bounded by bytes and by age, for per-session results."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np


def nbytes(value) -> int:
    """The bytes held by the numpy arrays in ``value``: an array, a tuple, list or dict of them, or an object.

    Objects count the arrays among their attributes (one level deep), such as a dataclass of arrays.
    """
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    fields = getattr(value, "__dict__", None)
    if fields:
        return sum(v.nbytes for v in fields.values() if isinstance(v, np.ndarray))
    return 0


class LRUCache:
    """Least-recently-used entries go first when the cache holds more than ``max_bytes``; entries unused
    for ``max_age_s`` seconds are dropped.

    Not thread-safe: meant for one user session, whose script runs one at a time.
    """

    def __init__(self, *, max_bytes: int, max_age_s: float, clock: Callable[[], float] = time.monotonic):
        """Args:
        max_bytes: the most bytes the entries may hold together, counted with :func:`nbytes`.
        max_age_s: seconds after its last use that an entry expires.
        clock: the time source, in seconds; tests pass their own.

        Raises:
            ValueError: a bound is not positive.
        """
        if max_bytes <= 0 or max_age_s <= 0:
            raise ValueError(f"bounds must be positive, got max_bytes={max_bytes}, max_age_s={max_age_s}")
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[object, int, float]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        self._expire()
        return key in self._entries

    def get(self, key: Hashable, default=None):
        """The value under ``key``, marked as just used; ``default`` when absent or expired."""
        self._expire()
        if key not in self._entries:
            return default
        value, size, _ = self._entries.pop(key)
        self._entries[key] = (value, size, self._clock())
        return value

    def put(self, key: Hashable, value) -> None:
        """Stores ``value`` as the most recently used entry, then evicts down to the bounds.

        A value larger than ``max_bytes`` on its own is not kept, and evicts nothing.
        """
        if key in self._entries:
            self.bytes -= self._entries.pop(key)[1]
        size = nbytes(value)
        if size > self.max_bytes:
            return
        self._entries[key] = (value, size, self._clock())
        self.bytes += size
        self._expire()
        while self.bytes > self.max_bytes and self._entries:
            self.bytes -= self._entries.popitem(last=False)[1][1]

    def _expire(self) -> None:
        now = self._clock()
        # Entries are in order of last use, so the expired ones are at the front.
        while self._entries:
            key, (_, size, used) = next(iter(self._entries.items()))
            if now - used < self.max_age_s:
                break
            del self._entries[key]
            self.bytes -= size
