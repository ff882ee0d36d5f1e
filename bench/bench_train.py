"""Training throughput, side by side in one process: the real path, the bare model, the notebook's pipeline.

    KERAS_BACKEND=jax python bench/bench_train.py --packed .device/cxr3-pack.npz       # on a GPU machine
    python bench/bench_train.py --synthetic 96 --batch-size 16 --epochs 2               # a CPU smoke run

* real: images on disk -> decode cache -> the trainer's loader -> ``fit`` with augmentation, the code
  ``python -m training`` runs, with the augmentation in the model and on the host;
* bare: ``fit`` on in-memory uint8 tensors of the same shape, no augmentation: the ceiling;
* notebook: per batch of 64, Python decodes, flips and rotates each image and yields float32, as
  ImageDataGenerator did.

Every layer is trainable (training from scratch). ``--accuracy-epochs N`` also trains the real path N
epochs in float32 and in mixed bfloat16 from the same seed and compares validation accuracy.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench.common import machine  # noqa: E402


class Throughput:
    """A Keras callback measuring images/s over every epoch after the first (which includes compilation)."""

    def __new__(cls, images_per_epoch: int):
        import keras

        class _Cb(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.images, self.seconds = 0, 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter() if epoch > 0 else None

            def on_epoch_end(self, epoch, logs=None):
                if self.start is not None:
                    self.seconds += time.perf_counter() - self.start
                    self.images += images_per_epoch

            @property
            def rate(self):
                return self.images / self.seconds if self.seconds else float("nan")

        return _Cb()


def _dataset(args, tmp: Path) -> Path:
    if args.packed:
        from bench.pack_data import unpack

        return unpack(args.packed, tmp / "data")
    from tests.factories import make_dataset

    return make_dataset(tmp / "data", per_class=args.synthetic // 3, size=(256, 256))


def _fit(model, data, epochs, images_per_epoch) -> float:
    cb = Throughput(images_per_epoch)
    model.fit(data, epochs=epochs, callbacks=[cb], verbose=0)
    return cb.rate


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--packed", help="npz written by bench/pack_data.py")
    p.add_argument("--synthetic", type=int, default=96, help="images to generate when --packed is not given")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="per measurement; the first (compiling) epoch is not timed")
    p.add_argument("--precision", default="mixed_bfloat16", choices=["float32", "mixed_bfloat16"])
    p.add_argument("--workers", type=int, default=8, help="loader threads of the real path")
    p.add_argument("--skip-notebook", action="store_true")
    p.add_argument("--accuracy-epochs", type=int, default=0)
    args = p.parse_args(argv)

    import keras

    from radiology.cache import load_or_decode
    from radiology.datasets import discover
    from radiology.preprocess import PreprocessSpec
    from training.config import TrainConfig
    from training.trainer import batches, build_for_training, split_arrays

    print(f"machine: {machine()}")
    try:
        import jax

        print(f"jax devices: {jax.devices()}")
    except ImportError:
        pass
    spec = PreprocessSpec()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = _dataset(args, tmp)
        start = time.perf_counter()
        ds = discover(root)
        decoded, _ = load_or_decode([s.path for s in ds.samples()], spec, tmp / "cache")
        t_cache = time.perf_counter() - start
        names = list(ds.class_names)
        x_train, y_train = split_arrays(ds, decoded, "train", names)
        x_val, y_val = split_arrays(ds, decoded, "val", names)
        n = len(x_train)
        print(
            f"data: {len(decoded.paths)} images from disk, decode + cache {len(decoded.paths) / t_cache:.0f} img/s; "
            f"train {n}, batch {args.batch_size}, {args.precision}, backend {keras.backend.backend()}"
        )

        def config(**kw):
            base = dict(
                data=str(root),
                weights="none",
                trainable_layers=100,
                batch_size=args.batch_size,
                mixed_precision=args.precision == "mixed_bfloat16",
                workers=args.workers,
            )
            return TrainConfig(**{**base, **kw})

        for label, cfg in (
            ("real, augment in model", config(augment_on="model")),
            ("real, augment on host", config(augment_on="host")),
            ("real, no augmentation", config(augment=False)),
        ):
            model = build_for_training(cfg, spec)
            data = batches(
                x_train,
                y_train,
                spec,
                cfg.batch_size,
                seed=0,
                host_augment=cfg.augment_where == "host",
                workers=cfg.workers,
            )
            results[label] = _fit(model, data, args.epochs, n)
            print(f"  {label:<32} {results[label]:9.1f} img/s", flush=True)

        model = build_for_training(config(augment=False), spec)
        x_uint8 = np.repeat(x_train[..., None], 3, axis=-1)
        cb = Throughput(n)
        model.fit(x_uint8, y_train, batch_size=args.batch_size, epochs=args.epochs, callbacks=[cb], verbose=0)
        results["bare"] = cb.rate
        print(f"  {'bare model, uint8 in memory':<32} {results['bare']:9.1f} img/s", flush=True)

        if not args.skip_notebook:
            model = build_for_training(config(augment=False, mixed_precision=False), spec)
            files = [s.path for s in ds.splits["train"]]
            results["notebook"] = _fit(model, _notebook_generator(files, names, ds), args.epochs, len(files))
            print(f"  {'notebook pipeline replica':<32} {results['notebook']:9.1f} img/s", flush=True)

        best = max(results["real, augment in model"], results["real, augment on host"])
        print("\nratios")
        print(f"  real path / bare model:        {best / results['bare']:.2f}x   (target >= 0.9x)")
        if "notebook" in results:
            print(f"  real path / notebook pipeline: {best / results['notebook']:.1f}x   (target >= 50x)")
        if args.accuracy_epochs:
            _accuracy(args, config, spec, x_train, y_train, x_val, y_val)


def _notebook_generator(files, names, ds):
    """Python decodes, resizes, flips and rotates each image and yields float32 batches of 64, in one thread."""
    import keras
    from PIL import Image

    label_of = {s.path: names.index(s.label) for s in ds.samples()}

    class Notebook(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.rng = np.random.default_rng(0)

        def __len__(self):
            return math.ceil(len(files) / 64)

        def __getitem__(self, i):
            xs, ys = [], []
            for path in files[i * 64 : (i + 1) * 64]:
                img = Image.open(path).convert("RGB").resize((224, 224))
                if self.rng.random() < 0.5:
                    img = img.transpose(Image.FLIP_LEFT_RIGHT)
                img = img.rotate(self.rng.uniform(-15, 15), resample=Image.BILINEAR)
                xs.append(np.asarray(img, dtype=np.float32) / 255.0)
                ys.append(label_of[path])
            return np.stack(xs), np.array(ys)

    return Notebook()


def _accuracy(args, config, spec, x_train, y_train, x_val, y_val) -> None:
    """Validation accuracy after the same number of epochs in float32 and in mixed bfloat16."""
    from training.trainer import batches, build_for_training

    print(f"\nvalidation accuracy after {args.accuracy_epochs} epochs, same seed")
    accs = {}
    for precision in ("float32", "mixed_bfloat16"):
        cfg = config(mixed_precision=precision == "mixed_bfloat16", augment_on="host")
        model = build_for_training(cfg, spec)
        train = batches(x_train, y_train, spec, cfg.batch_size, seed=0, host_augment=True, workers=cfg.workers)
        val = batches(x_val, y_val, spec, cfg.batch_size, seed=None)
        hist = model.fit(train, validation_data=val, epochs=args.accuracy_epochs, verbose=0)
        accs[precision] = hist.history["val_accuracy"][-1]
        print(f"  {precision:<16} {accs[precision]:.4f}")
    print(f"  difference: {abs(accs['float32'] - accs['mixed_bfloat16']) * 100:.2f} points   (target <= 0.5)")


if __name__ == "__main__":
    main()
