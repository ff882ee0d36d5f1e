"""Data: decode + resize + hash throughput on the real images, and the second run from the decode cache.

    python -m bench.bench_data [--data DIR]      # default ../shared/data/cxr3

Both timings run in this one process on the same files.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import CXR3, machine


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=str(CXR3))
    args = p.parse_args(argv)

    from radiology.cache import load_or_decode
    from radiology.datasets import discover
    from radiology.preprocess import PreprocessSpec

    print(f"machine: {machine()}")
    start = time.perf_counter()
    ds = discover(args.data)
    paths = [s.path for s in ds.samples()]
    t_discover = time.perf_counter() - start
    print(f"data: {args.data}, {len(paths)} images, discovered in {t_discover:.2f} s")
    cache_dir = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        start = time.perf_counter()
        decoded, cached = load_or_decode(paths, PreprocessSpec(), cache_dir)
        t_first = time.perf_counter() - start
        assert not cached
        start = time.perf_counter()
        again, cached = load_or_decode(paths, PreprocessSpec(), cache_dir)
        again.pixels.sum(dtype="uint64")  # touch every pixel: the cache is memory-mapped
        t_second = time.perf_counter() - start
        assert cached
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    n = len(paths)
    _breakdown(paths[:: max(1, n // 2000)])
    print(f"  first run: decode + resize to 224x224 + hashes + write cache{n / t_first:8.0f} img/s  ({t_first:.1f} s)")
    print(f"  second run: from the cache                                 {n / t_second:8.0f} img/s  ({t_second:.2f} s)")
    print(f"  cache speed-up: {t_first / t_second:.0f}x   (target >= 20x); unreadable files: {len(decoded.errors)}")


def _breakdown(paths: list[str]) -> None:
    """Decode alone, resize alone and hashing alone, on a sample, with the same 2 worker threads."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from radiology.cache import perceptual_hash
    from radiology.images import decode_image
    from radiology.preprocess import PreprocessSpec, resize

    workers = len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        grays = list(pool.map(decode_image, paths))
        t_decode = time.perf_counter() - start
        start = time.perf_counter()
        list(pool.map(lambda g: resize(g, PreprocessSpec(height=256, width=256)), grays))
        t_resize = time.perf_counter() - start
        start = time.perf_counter()
        list(pool.map(perceptual_hash, grays))
        t_hash = time.perf_counter() - start
    n = len(paths)
    print(
        f"  on a sample of {n}, {workers} threads: decode {n / t_decode:.0f} img/s, resize {n / t_resize:.0f} img/s, "
        f"perceptual hash {n / t_hash:.0f} img/s"
    )


if __name__ == "__main__":
    main()
