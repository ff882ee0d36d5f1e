"""Command line: ``python -m training --data DIR [options]`` trains one run in the foreground."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output

EXIT = {"succeeded": 0, "failed": 1, "busy": 2, "cancelled": 3}


def parse_args(argv=None) -> argparse.Namespace:
    """Parses the command line."""
    p = argparse.ArgumentParser(
        prog="python -m training", description="Train the VGG16 transfer model on a dataset folder."
    )
    p.add_argument("--data", help="dataset folder: class folders, or train/val/test folders of class folders")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--trainable-layers", type=int, default=6, help="VGG16 layers left trainable, from the end")
    p.add_argument("--weights", default="imagenet", help="imagenet, none, or a path to a weights file")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn off flip and rotation")
    p.add_argument(
        "--augment-on",
        choices=["auto", "model", "host"],
        default="auto",
        help="augment in the model (Keras layers) or in loader threads; auto: host on JAX, else model",
    )
    p.add_argument("--workers", type=int, default=1, help="loader threads")
    p.add_argument("--class-weights", action="store_true", help="weight the loss by inverse class frequency")
    p.add_argument("--mixed-precision", action="store_true", help="compute in bfloat16")
    p.add_argument(
        "--runs-dir", default="", help="where runs live (default: $RADIOLOGY_RUNS_DIR, else runs/ in the project)"
    )
    p.add_argument("--cache-dir", default="", help="decode cache (default RUNS_DIR/.cache)")
    p.add_argument("--run-dir", help=argparse.SUPPRESS)  # a run folder prepared by training.launch
    p.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # the lock handed over by training.launch
    args = p.parse_args(argv)
    if not args.run_dir and not args.data:
        p.error("--data is required")
    return args


def main(argv=None) -> int:
    """Runs the command; returns the exit status (0 succeeded, 1 failed, 2 busy, 3 cancelled)."""
    args = parse_args(argv)
    from radiology.registry import TrainingLock
    from training.config import TrainConfig
    from training.launch import busy_message
    from training.trainer import new_run_dir, run_training

    if args.run_dir:
        run_dir = Path(args.run_dir)
        config = TrainConfig.load(run_dir / "config.json")
    else:
        try:
            config = TrainConfig(
                data=args.data,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                trainable_layers=args.trainable_layers,
                weights=args.weights,
                seed=args.seed,
                augment=args.augment,
                augment_on=args.augment_on,
                workers=args.workers,
                class_weights=args.class_weights,
                mixed_precision=args.mixed_precision,
                runs_dir=args.runs_dir,
                cache_dir=args.cache_dir,
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT["failed"]
    if args.lock_fd is None:
        lock = TrainingLock(config.runs_dir)
        if not lock.acquire():
            print(f"refused: {busy_message(Path(config.runs_dir))}", file=sys.stderr)
            return EXIT["busy"]
        if not args.run_dir:
            run_dir = new_run_dir(config.runs_dir)
    print(f"run folder: {run_dir}", flush=True)
    state = run_training(config, run_dir)
    print(f"run {run_dir.name}: {state}", flush=True)
    return EXIT[state]


if __name__ == "__main__":
    sys.exit(main())
