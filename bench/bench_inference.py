"""CPU inference: one image with Grad-CAM against a bare forward pass; the out-of-distribution gate against a
plain prediction; batch throughput; bf16 against float32.

    python -m bench.bench_inference [--model PATH] [--data DIR] [--gate-only]

Prints ratios measured side by side in this one process. ``--data`` (a dataset folder) measures the
bf16 label agreement on its test split; without it, agreement is measured on synthetic images.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.common import machine, median_time, model_for_bench, paired


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model")
    p.add_argument("--data")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--gate-only", action="store_true", help="only the out-of-distribution gate's cost")
    args = p.parse_args(argv)

    from radiology.explain import Explainer
    from radiology.inference import bf16_copy, bf16_supported
    from radiology.preprocess import preprocess

    loaded, which = model_for_bench(args.model)
    print(f"machine: {machine()}")
    print(f"model: {which}")
    if args.gate_only:
        _bench_gate(loaded, args.repeat)
        return
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

    _bench_gate(loaded, args.repeat)

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


def _bench_gate(loaded, repeat: int) -> None:
    """Prediction + gate against a plain prediction, from the decoded file on; and the gate's parts alone."""
    import io
    from dataclasses import replace

    from PIL import Image

    from radiology import ood
    from radiology.explain import Explainer
    from radiology.images import decode_image, decode_with_colour
    from radiology.model import LoadedModel, predict_images
    from radiology.preprocess import resize
    from tests.factories import xray

    if ood.load_stats(loaded.metadata) is None:  # the scoring cost does not depend on the fitted values
        spec = loaded.metadata.preprocess
        films = np.stack([resize(xray(i, size=(256, 256), level=40 + (i % 3) * 70), spec) for i in range(48)])
        stats = ood.fit_for_model(loaded, films[:36], np.arange(36) % 3, films[36:])
        loaded = LoadedModel(loaded.model, replace(loaded.metadata, ood=stats.to_dict()), loaded.path)
    stats = ood.load_stats(loaded.metadata)
    buf = io.BytesIO()
    Image.fromarray(np.repeat(xray(3, size=(1024, 1024))[..., None], 3, axis=-1)).save(buf, format="JPEG")
    data = buf.getvalue()
    gray, colour = decode_with_colour(data)
    small = resize(gray, loaded.metadata.preprocess)

    def gated():
        g, c = decode_with_colour(data)
        ood.predict_checked(loaded, g, colourfulness=c, stats=stats)

    plain, gate = paired(lambda: predict_images(loaded, [decode_image(data)]), gated, repeat=repeat)
    bare, bare_gate = paired(
        lambda: predict_images(loaded, [gray]),
        lambda: ood.predict_checked(loaded, gray, colourfulness=colour, stats=stats),
        repeat=repeat,
    )
    checks = median_time(lambda: ood.input_reason(gray.shape, small, colourfulness=colour), repeat=repeat)
    feats = np.random.default_rng(0).random((1, stats.means.shape[1])).astype(np.float32)
    score = median_time(lambda: stats.scores(feats), repeat=repeat)
    pixels = median_time(lambda: stats.pixels.scores(small[None]), repeat=repeat)
    with_stats = Explainer(loaded)
    without = Explainer(LoadedModel(loaded.model, replace(loaded.metadata, ood=None), loaded.path))
    fused_plain, fused_gate = paired(
        lambda: without.explain(gray, colourfulness=colour),
        lambda: with_stats.explain(gray, colourfulness=colour),
        repeat=repeat,
    )
    print("\nout-of-distribution gate, 1 RGB JPEG of 1024x1024 (medians of interleaved calls)")
    print(f"  decode + predict             {plain * 1000:8.1f} ms   1.00x")
    print(f"  decode + predict + gate      {gate * 1000:8.1f} ms   {gate / plain:.3f}x   (target <= 1.05x)")
    print(f"  predict (decoded image)      {bare * 1000:8.1f} ms   1.00x")
    print(f"  predict + gate               {bare_gate * 1000:8.1f} ms   {bare_gate / bare:.3f}x")
    print(
        f"  input checks alone           {checks * 1000:8.2f} ms;  Mahalanobis score alone {score * 1000:.2f} ms; "
        f"thumbnail checks alone {pixels * 1000:.2f} ms"
    )
    print(f"  fused Grad-CAM, no stats     {fused_plain * 1000:8.1f} ms   1.00x")
    print(f"  fused Grad-CAM + gate        {fused_gate * 1000:8.1f} ms   {fused_gate / fused_plain:.3f}x")


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
