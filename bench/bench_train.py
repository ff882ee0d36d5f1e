"""Training throughput, side by side in one process: the real path, the bare model, the notebook's pipeline.

    KERAS_BACKEND=jax python -m bench.bench_train --packed .device/cxr3-pack.npz       # on a GPU machine
    python -m bench.bench_train --synthetic 96 --batch-size 16 --epochs 2               # a CPU smoke run
    python -m bench.bench_train --cpu --images 240                                      # the CPU mode, below
    python -m bench.bench_train --distribute                                            # data-parallel smoke run

* real: images on disk -> decode cache -> the trainer's loader -> ``fit`` with augmentation, the code
  ``python -m training`` runs, with the augmentation in the model and on the host;
* bare: ``fit`` on in-memory uint8 tensors of the same shape, no augmentation: the ceiling;
* notebook: per batch of 64, Python decodes, flips and rotates each image and yields float32, as
  ImageDataGenerator did.

Every layer is trainable (training from scratch). ``--accuracy-epochs N`` also trains the real path N
epochs in float32 and in mixed bfloat16 from the same seed and compares validation accuracy.

``--cpu`` measures what a CPU user waits for, on a stratified subset of ``--data`` (copied into a
temporary folder), side by side in one process:

* the trainer's real path at 224 px with the last 6 VGG16 layers trainable (decode cache, loader, the
  run's callbacks with their progress and checkpoint writes) against the same model in a bare ``fit``
  on in-memory arrays, neither validating;
* Keras' default compute (float32, XLA left off on a CPU) against the compute the trainer chooses by
  timing, at 224 and at 64 px;
* the estimate error of the clock: ``training.estimate.estimate_run`` against a real 2-epoch run at 64 px.

``--distribute`` runs ``python -m training`` on the JAX backend with 1, 2 and 4 virtual CPU devices
(``--xla_force_host_platform_device_count``), the same synthetic data, seed and global batch, and prints the
run clock's images/s (global batch, the last epoch's batches after its first) and each run's mesh. Virtual
devices share the same cores, so the figures show the mechanics (every run trains, the sharded batches and
the collectives cost little), not a speed-up.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine


class Throughput:
    """A Keras callback measuring images/s over every epoch after the first (which includes compilation).

    ``rate`` counts whole epochs, epoch-end work (checkpoints) included; ``batch_rate`` counts only the
    batches after each epoch's first, the steady state that a long epoch is made of.
    """

    def __new__(cls, images_per_epoch: int, batch_size: int = 32):
        import keras

        class _Cb(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.images, self.seconds = 0, 0.0
                self.batch_images, self.batch_seconds = 0, 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter() if epoch > 0 else None
                self.last = None

            def on_train_batch_end(self, batch, logs=None):
                now = time.perf_counter()
                if self.start is not None and self.last is not None:
                    self.batch_seconds += now - self.last
                    self.batch_images += min(batch_size, images_per_epoch - batch * batch_size)
                self.last = now

            def on_epoch_end(self, epoch, logs=None):
                if self.start is not None:
                    self.seconds += time.perf_counter() - self.start
                    self.images += images_per_epoch

            @property
            def rate(self):
                return self.images / self.seconds if self.seconds else float("nan")

            @property
            def batch_rate(self):
                return self.batch_images / self.batch_seconds if self.batch_seconds else float("nan")

        return _Cb()


def _dataset(args, tmp: Path) -> Path:
    if args.packed:
        from bench.pack_data import unpack

        return unpack(args.packed, tmp / "data")
    from tests.factories import make_dataset

    return make_dataset(tmp / "data", per_class=args.synthetic // 3, size=(256, 256))


def distribute_mode(*, devices=(1, 2, 4), image_size: int = 64, per_class: int = 16, batch_size: int = 8) -> None:
    """Trains the same tiny run on 1, 2 and 4 virtual JAX CPU devices, in subprocesses, and prints images/s."""
    import json
    import os
    import subprocess
    import sys

    from radiology.registry import load_run
    from tests.factories import make_dataset

    print(f"machine: {machine()}; the runs train on JAX (CPU)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_dataset(tmp / "data", per_class=per_class, size=(image_size, image_size), splits=True)
        print(
            f"{3 * per_class} training images, {image_size} px, global batch {batch_size}, 3 epochs, weights none, "
            "all layers trainable, float32, augmentation on the host; images/s of the last epoch:"
        )
        for n in devices:
            env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
            runs = tmp / f"runs{n}"
            argv = ["--data", str(data), "--runs-dir", str(runs), "--epochs", "3", "--batch-size", str(batch_size)]
            argv += ["--image-size", str(image_size), "--weights", "none", "--trainable-layers", "19"]
            argv += ["--compute", "float32", "--n-boot", "10", "--distribute", "off" if n == 1 else "data"]
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "training", *argv], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if out.returncode:
                print(f"  {n} device(s): failed\n{out.stderr[-2000:]}")
                continue
            (run_dir,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
            run = load_run(run_dir)
            rate = json.loads((run_dir / "progress.json").read_text())["images_per_s"]
            seconds = run.history()[-1]["seconds"]
            print(
                f"  {n} device(s): {rate:6.1f} img/s, last epoch {seconds:5.1f} s, whole run {wall:5.1f} s  "
                f"({run.status['mesh']})",
                flush=True,
            )


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
    p.add_argument("--cpu", action="store_true", help="the CPU mode: real path, compute choice, estimate error")
    p.add_argument("--data", default=None, help="dataset for --cpu (default ../shared/data/cxr3)")
    p.add_argument("--images", type=int, default=240, help="images of the subset for --cpu")
    p.add_argument("--parts", default="real,compute,estimate", help="parts of --cpu to run, comma-separated")
    p.add_argument("--distribute", action="store_true", help="images/s on 1, 2 and 4 virtual JAX CPU devices")
    args = p.parse_args(argv)
    if args.cpu:
        return cpu_mode(args)
    if args.distribute:
        return distribute_mode()

    import keras

    from radiology.cache import load_or_decode
    from radiology.datasets import discover
    from radiology.preprocess import PreprocessSpec
    from training.config import TrainConfig
    from training.data import batches
    from training.trainer import build_for_training

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
        x_train, y_train = decoded.arrays(ds.splits["train"], names)
        x_val, y_val = decoded.arrays(ds.splits["val"], names)
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
    from training.data import batches
    from training.trainer import build_for_training

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


def _subset(data: str, images: int, folder: Path) -> Path:
    """Copies a stratified subset of ``images`` files of a class-folders dataset into ``folder``."""
    from radiology.datasets import discover

    ds = discover(data)
    rng = np.random.default_rng(0)
    per_class = images // len(ds.class_names)
    for label in ds.class_names:
        samples = [s for s in ds.samples() if s.label == label]
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in rng.permutation(len(samples))[:per_class]:
            src = Path(samples[i].path)
            shutil.copyfile(src, folder / label / src.name)  # discover skips symlinks
    return folder


def cpu_mode(args) -> None:
    """The real path against a bare fit, default against chosen compute, and the clock's estimate error."""
    from bench.common import CXR3
    from radiology.registry import new_run_dir
    from training import compute
    from training.callbacks import RunMonitor
    from training.config import TrainConfig

    print(f"machine: {machine()}; {compute.device_description()}")
    print(f"load average at start: {open('/proc/loadavg').read().split()[:3]} (other processes share the cores)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = _subset(args.data or str(CXR3), args.images, tmp / "data")
        runs = tmp / "runs"

        def config(**kw):
            base = dict(data=str(root), weights="none", batch_size=32, runs_dir=str(runs), n_boot=100, workers=2)
            return TrainConfig(**{**base, **kw})

        parts = args.parts.split(",")
        run_dir = new_run_dir(runs)
        monitor = RunMonitor(run_dir, 2)
        if "real" in parts:
            _real_against_bare(config, run_dir, monitor)
        if "compute" in parts:
            _default_against_chosen(config, run_dir, monitor)
        if "estimate" in parts:
            _estimate_error(config, runs)
    print(f"load average at end: {open('/proc/loadavg').read().split()[:3]}")


def _real_against_bare(config, run_dir, monitor) -> None:
    """The trainer's real path against a bare fit: 224 px, 6 trainable layers, 64 training images."""
    import keras

    from radiology.model import ModelMetadata
    from radiology.preprocess import to_model_input
    from training.callbacks import FitContext, make_callbacks
    from training.data import prepare_data, training_batches
    from training.trainer import build_for_training

    cfg = config(image_size=224, trainable_layers=6, compute="float32")
    data = prepare_data(cfg, run_dir, monitor)
    keep = slice(0, 96)
    x, y = data.x_train[keep], data.y_train[keep]
    data = type(data)(**{**data.__dict__, "x_train": x, "y_train": y})
    epochs = 3
    model = build_for_training(cfg, data.spec)
    meta = ModelMetadata(tuple(data.class_names), data.spec)
    ctx = FitContext(run_dir, meta, epochs, 32, len(x), 0, "accuracy", 2)
    real = Throughput(len(x))
    train = training_batches(cfg, data, host_augment=False)
    model.fit(train, epochs=epochs, callbacks=[*make_callbacks(monitor, ctx), real], verbose=0)
    model = build_for_training(cfg, data.spec)
    bare = Throughput(len(x))
    model.fit(to_model_input(x, data.spec), y, batch_size=32, epochs=epochs, callbacks=[bare], verbose=0)
    print(f"224 px, 6 trainable, batch 32, {len(x)} images, float32, augmentation in the model, epochs 2-{epochs}:")
    print("                                                     batches   whole epochs (checkpoints included)")
    print(f"  trainer's real path (loader, callbacks, checkpoints) {real.batch_rate:7.2f}   {real.rate:7.2f} img/s")
    print(f"  bare fit on in-memory float32 arrays                {bare.batch_rate:7.2f}   {bare.rate:7.2f} img/s")
    checkpoint = len(x) / real.rate - len(x) / real.batch_rate
    print(
        f"  real / bare: {real.batch_rate / bare.batch_rate:.2f}x over batches, {real.rate / bare.rate:.2f}x over "
        f"{len(x)}-image epochs (target >= 0.9x); the epoch-end work, about {checkpoint:.1f} s, is "
        f"{checkpoint / (8119 / real.batch_rate):.2%} of an epoch of cxr3's 8,119 training images",
        flush=True,
    )
    keras.backend.clear_session()


def _default_against_chosen(config, run_dir, monitor) -> None:
    """Keras' default compute against the timed choice, at 224 and at 64 px."""
    import keras

    from training import compute
    from training.data import prepare_data, training_batches
    from training.trainer import build_for_training

    for size in (224, 64):
        cfg = config(image_size=size, trainable_layers=6)
        data = prepare_data(cfg, run_dir, monitor)

        def make(c, cfg=cfg, data=data):
            return build_for_training(cfg, data.spec, c), training_batches(cfg, data, host_augment=c.host_augment)

        choice, _ = compute.choose_compute(
            make, min(32, len(data.x_train)), mixed_requested=True, augment_where="model", augment_on="auto"
        )
        default = choice.images_per_s["float32"]
        best = choice.images_per_s[choice.compute.label]
        print(f"{size} px, 6 trainable, batch 32: " + choice.summary())
        print(
            f"  default float32 {default:.2f} img/s, chosen {choice.compute.label} {best:.2f} img/s: "
            f"{best / default:.2f}x",
            flush=True,
        )
        keras.backend.clear_session()


def _estimate_error(config, runs) -> None:
    """The clock's estimate against a real 2-epoch run at 64 px."""
    from radiology.registry import new_run_dir, read_history
    from training import estimate as estimate_module
    from training.trainer import run_training

    cfg = config(image_size=64, trainable_layers=6, epochs=2)
    estimate = estimate_module.estimate_run(cfg)
    run_dir = new_run_dir(runs)
    start = time.perf_counter()
    state = run_training(cfg, run_dir)
    total = time.perf_counter() - start

    history = read_history(run_dir / "history.csv")
    predicted = estimate.epoch_seconds()
    print(f"64 px, 6 trainable, batch 32, 2 epochs on {estimate.train_images} training images ({state}):")
    print(f"  estimate: {estimate_module.describe(estimate, 2)}".replace("**", ""))
    for row in history:
        err = (predicted - row["seconds"]) / row["seconds"]
        actual = row["seconds"]
        print(f"  epoch {row['epoch']}: predicted {predicted:.1f} s, actual {actual:.1f} s, error {err:+.0%}")
    err = (estimate.total_seconds(2) - total) / total
    print(
        f"  run: predicted {estimate.total_seconds(2):.1f} s, actual {total:.1f} s (data from the cache), "
        f"error {err:+.0%}   (target within 25%)"
    )


if __name__ == "__main__":
    main()
