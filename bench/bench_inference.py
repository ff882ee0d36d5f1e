"""CPU inference: one image with Grad-CAM against a bare forward pass; batch throughput; bf16 against float32.

    python bench/bench_inference.py [--model PATH] [--data DIR]

Prints ratios measured side by side in this one process. ``--data`` (a dataset folder) measures the
bf16 label agreement on its test split; without it, agreement is measured on synthetic images.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))  # run from anywhere

from bench.common import machine, median_time, model_for_bench  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model")
    p.add_argument("--data")
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args(argv)

    from radiology.explain import Explainer
    from radiology.inference import bf16_copy, bf16_supported
    from radiology.preprocess import preprocess

    loaded, which = model_for_bench(args.model)
    print(f"machine: {machine()}")
    print(f"model: {which}")
    rng = np.random.default_rng(0)
    gray = (rng.random((512, 512)) * 255).astype(np.uint8)
    x = preprocess(gray, loaded.metadata.preprocess)
    model = loaded.model
    explainer = Explainer(loaded)

    bare = median_time(lambda: model.predict_on_batch(x), repeat=args.repeat)
    fused = median_time(lambda: explainer.explain(gray, method="Grad-CAM"), repeat=args.repeat)

    def naive():
        probs = model.predict_on_batch(x)
        explainer.vis_cam(x, int(np.argmax(probs)), "Grad-CAM")

    naive_t = median_time(naive, repeat=args.repeat)
    print("\n1 image, 224x224, CPU")
    print(f"  bare forward pass            {bare * 1000:8.1f} ms   1.00x")
    print(f"  predict + fused Grad-CAM     {fused * 1000:8.1f} ms   {fused / bare:.2f}x   (target <= 1.25x)")
    print(f"  predict + tf-keras-vis       {naive_t * 1000:8.1f} ms   {naive_t / bare:.2f}x   (naive)")

    from radiology.model import predict_images

    batch = (rng.random((128, 224, 224)) * 255).astype(np.uint8)
    from radiology.preprocess import to_model_input

    xb = to_model_input(batch, loaded.metadata.preprocess)
    bare_b = median_time(lambda: model.predict(xb, batch_size=32, verbose=0), repeat=3, warmup=1)
    ours_b = median_time(lambda: predict_images(loaded, batch, batch_size=32), repeat=3, warmup=1)
    print("\nbatch of 128 (uint8 -> probabilities)")
    print(f"  bare model.predict           {128 / bare_b:8.1f} img/s   1.00x")
    print(f"  radiology predict_images     {128 / ours_b:8.1f} img/s   {bare_b / ours_b:.2f}x   (target >= 0.9x)")

    print(f"\nbf16 supported by this CPU: {bf16_supported()}")
    fast = bf16_copy(loaded)
    t16 = median_time(lambda: fast.model.predict_on_batch(x), repeat=args.repeat)
    print(f"  float32 forward pass         {bare * 1000:8.1f} ms   1.00x")
    print(f"  bfloat16 forward pass        {t16 * 1000:8.1f} ms   {bare / t16:.2f}x faster")
    images = _agreement_images(args.data, loaded)
    p32 = predict_images(loaded, images)
    p16 = predict_images(fast, images)
    agree = float(np.mean(p32.argmax(1) == p16.argmax(1)))
    print(
        f"  label agreement on {len(images)} images: {agree:.2%}   (target >= 99.5%), "
        f"max |dp| {np.abs(p32 - p16).max():.4f}"
    )


def _agreement_images(data: str | None, loaded) -> np.ndarray:
    if data:
        from radiology.cache import load_or_decode
        from radiology.datasets import discover

        ds = discover(data)
        decoded, _ = load_or_decode([s.path for s in ds.splits["test"]], loaded.metadata.preprocess, None)
        return np.asarray(decoded.pixels[decoded.ok])
    from tests.factories import xray

    return np.stack([xray(i, size=(224, 224), level=40 + (i % 3) * 70) for i in range(60)])


if __name__ == "__main__":
    main()
