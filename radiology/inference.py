"""Reduced-precision inference: a bfloat16 copy of a model, used only where it is faster and agrees.

On CPUs with bf16 instructions (AVX512-BF16 or AMX) oneDNN runs VGG16 in bfloat16 about twice as
fast as in float32 or better. Whether that is worth it depends on the model: a run measures the
label agreement of its bf16 copy on its test split, and the app uses bf16 only when that agreement
is at least ``MIN_AGREEMENT`` and a timing at load shows it is faster.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from radiology.model import LoadedModel, cast_model

MIN_AGREEMENT = 0.995
KEEP_FLOAT32 = ("predictions",)  # the softmax stays in float32 so probabilities sum to 1 exactly enough


def bf16_supported() -> bool:
    """Whether this CPU has bfloat16 instructions (Linux: avx512_bf16 or amx_bf16 in /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def bf16_copy(loaded: LoadedModel) -> LoadedModel:
    """A copy of the model computing in bfloat16, with the same weights and metadata."""
    model = cast_model(loaded.model, "bfloat16", keep_float32=KEEP_FLOAT32)
    return LoadedModel(model, loaded.metadata, loaded.path, list(loaded.warnings))


def label_agreement(probs_a: np.ndarray, probs_b: np.ndarray) -> float:
    """Fraction of rows where two probability arrays of shape (N, C) pick the same class."""
    return float(np.mean(np.argmax(probs_a, axis=1) == np.argmax(probs_b, axis=1))) if len(probs_a) else float("nan")


def choose_precision(loaded: LoadedModel, agreement: float | None) -> tuple[LoadedModel, str]:
    """Picks the bf16 copy when the CPU supports it, the run's agreement holds and it times faster.

    Args:
        loaded: the float32 model.
        agreement: label agreement of bf16 with float32 on the run's test split, or None if unknown.

    Returns:
        the model to use for predictions, and the reason for the choice in words.
    """
    if not bf16_supported():
        return loaded, "float32 (this CPU has no bfloat16 instructions)"
    if agreement is None or not agreement >= MIN_AGREEMENT:
        return loaded, f"float32 (bf16 agreement on the test split {agreement if agreement is not None else 'unknown'})"
    fast = bf16_copy(loaded)
    spec = loaded.metadata.preprocess
    x = np.zeros((1, *spec.input_shape), np.float32)
    t32, t16 = _time(loaded.model, x), _time(fast.model, x)
    if t16 >= t32:
        return loaded, f"float32 (bf16 was not faster here: {t16 * 1000:.0f} ms against {t32 * 1000:.0f} ms)"
    return fast, f"bfloat16 ({t32 / t16:.1f}x faster, {agreement:.1%} label agreement on the test split)"


def _time(model, x, repeat: int = 3) -> float:
    model.predict_on_batch(x)  # warm-up: graph tracing
    start = time.perf_counter()
    for _ in range(repeat):
        model.predict_on_batch(x)
    return (time.perf_counter() - start) / repeat
