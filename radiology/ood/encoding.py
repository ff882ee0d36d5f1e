"""Base64 float32 arrays: how the gate's statistics travel in a model file's JSON metadata."""

from __future__ import annotations

import base64

import numpy as np


def _encode(array: np.ndarray) -> dict:
    """JSON-ready ``{"dtype", "shape", "base64"}`` of an array, as float32."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    return {"dtype": "float32", "shape": list(array.shape), "base64": base64.b64encode(array.tobytes()).decode()}


def _decode(data: dict) -> np.ndarray:
    """The float32 array of :func:`_encode` output."""
    raw = base64.b64decode(data["base64"], validate=True)
    return np.frombuffer(raw, dtype=np.dtype(data["dtype"])).reshape(data["shape"]).astype(np.float32)
