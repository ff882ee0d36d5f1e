"""Shared helpers of the benchmarks: the machine in words, robust timing, and a model to measure."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
CXR3 = ROOT.parent / "shared" / "data" / "cxr3"


def machine() -> str:
    """CPU model, cores, memory, Python and Keras backend, in one line."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        mem = float("nan")
    import keras

    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} cores, {mem:.0f} GiB, Python {platform.python_version()}, "
        f"Keras {keras.__version__} on {keras.backend.backend()}"
    )


def median_time(fn, *, repeat: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired(fn_a, fn_b, *, repeat: int = 10, warmup: int = 2) -> tuple[float, float]:
    """Median wall times of ``fn_a()`` and ``fn_b()`` called alternately: load on a shared machine hits both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    times_a, times_b = [], []
    for _ in range(repeat):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def model_for_bench(path: str | None):
    """The model at ``path``, else the active model, else an untrained one of the real architecture."""
    from radiology.model import LoadedModel, ModelMetadata, build_model, load_model
    from radiology.registry import active_run

    if path:
        return load_model(path), path
    run = active_run()
    if run is not None:
        return load_model(run.model_path), f"active model {run.id}"
    return LoadedModel(
        build_model(weights="none", augment=True, seed=0), ModelMetadata(), ""
    ), "untrained (weights none)"
