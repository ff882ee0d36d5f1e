"""Command line: ``python -m training --data DIR [options]`` trains one run in the foreground.

``--resume RUN_DIR`` continues a cancelled, failed or killed run from its last completed epoch;
``--estimate`` times the settings on this machine and prints how long the run would take.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.config import TrainConfig

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
    p.add_argument(
        "--mixed-precision",
        action="store_true",
        help="allow bfloat16 compute; used only where the device has it and it times faster",
    )
    p.add_argument("--image-size", type=int, default=224, help="input side in pixels, a multiple of 32 (notebook: 224)")
    p.add_argument(
        "--compute",
        choices=["auto", "float32", "xla"],
        default="auto",
        help="auto: time float32 with and without XLA (and bf16 if allowed) at the start and keep the fastest",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last completed epoch")
    p.add_argument("--estimate", action="store_true", help="time these settings here and print the run's duration")
    p.add_argument("--estimate-file", help=argparse.SUPPRESS)  # an estimate record prepared by training.launch
    p.add_argument(
        "--runs-dir", default="", help="where runs live (default: $RADIOLOGY_RUNS_DIR, else runs/ in the project)"
    )
    p.add_argument("--cache-dir", default="", help="decode cache (default RUNS_DIR/.cache)")
    p.add_argument("--run-dir", help=argparse.SUPPRESS)  # a run folder prepared by training.launch
    p.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # the lock handed over by training.launch
    args = p.parse_args(argv)
    if not (args.run_dir or args.resume or args.estimate_file) and not args.data:
        p.error("--data is required")
    return args


def _config(args) -> TrainConfig:
    from training.config import TrainConfig

    return TrainConfig(
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
        image_size=args.image_size,
        compute=args.compute,
        runs_dir=args.runs_dir,
        cache_dir=args.cache_dir,
    )


def main(argv=None) -> int:
    """Runs the command; returns the exit status (0 succeeded, 1 failed, 2 busy, 3 cancelled)."""
    args = parse_args(argv)
    from radiology.errors import RadiologyError
    from radiology.registry import TrainingLock, load_run
    from training.config import TrainConfig
    from training.launch import busy_message
    from training.trainer import new_run_dir, resumable, run_training

    run_dir = Path(args.resume or args.run_dir) if (args.resume or args.run_dir) else None
    try:
        if args.estimate_file:
            return _estimate(args, None)
        if run_dir is not None:
            config = TrainConfig.load(run_dir / "config.json")
        else:
            config = _config(args)
        if args.lock_fd is None:  # a child of the app's launcher records its failure in the run's folder instead
            _check_data(config)
    except (RadiologyError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT["failed"]
    if args.lock_fd is None:
        lock = TrainingLock(config.runs_dir)
        if not lock.acquire():
            print(f"refused: {busy_message(Path(config.runs_dir))}", file=sys.stderr)
            return EXIT["busy"]
        if args.estimate:
            return _estimate(args, config)
        if run_dir is None:
            run_dir = new_run_dir(config.runs_dir)
    if args.resume and args.lock_fd is None:  # launch.resume checked it under the lock, then queued the run
        why = resumable(load_run(run_dir))
        if why:
            print(f"error: cannot resume: {why}", file=sys.stderr)
            return EXIT["failed"]
    print(f"run folder: {run_dir}", flush=True)
    _console_without_errors()
    state = run_training(config, run_dir, resume=bool(args.resume))
    print(f"run {run_dir.name}: {state}", flush=True)
    if state == "failed":
        error = load_run(run_dir).error or "unknown error"
        print(f"error: {error} (the traceback is in {run_dir / 'log.txt'})", file=sys.stderr)
    return EXIT[state]


def _check_data(config: TrainConfig) -> None:
    """Finds the dataset's images before a run folder is made, so that a wrong ``--data`` leaves no failed run.

    Raises:
        DatasetError: the folder does not exist or holds no class folder with images.
    """
    from radiology.datasets import discover

    discover(config.data, fractions=config.fractions, seed=config.seed)


def _console_without_errors() -> None:
    """Shows the training log on the console without its error records.

    A failed run logs its traceback, which stays in the run's ``log.txt``; the console gets one ``error:``
    line from :func:`main` instead. The trainer adds no console handler of its own when one is there.
    """
    logger = logging.getLogger("training")
    consoles = [h for h in logger.handlers if type(h) is logging.StreamHandler]
    if not consoles:
        consoles = [logging.StreamHandler()]
        logger.addHandler(consoles[0])
    for console in consoles:
        if _below_error not in console.filters:
            console.addFilter(_below_error)


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


def _estimate(args, config) -> int:
    """Times the settings, prints the estimate, and records it where the Training page finds it."""
    from radiology.errors import RadiologyError
    from radiology.registry import now, read_json, write_json_atomic
    from training.clock import describe, estimate_path, estimate_run
    from training.config import TrainConfig

    if args.estimate_file:
        path = Path(args.estimate_file)
        config = TrainConfig.from_dict(read_json(path, {})["config"])
    else:
        path = estimate_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
    record = {"state": "running", "pid": os.getpid(), "started": now(), "config": config.to_dict()}
    write_json_atomic(path, record)

    def say(phase):
        print(f"{phase}…", flush=True)
        write_json_atomic(path, {**record, "phase": phase})

    try:
        estimate = estimate_run(config, progress=say)
    except (RadiologyError, ValueError, OSError) as exc:
        write_json_atomic(path, {**record, "state": "failed", "error": f"{type(exc).__name__}: {exc}"})
        print(f"error: {exc}", file=sys.stderr)
        return EXIT["failed"]
    write_json_atomic(path, {**record, "state": "done", "ended": now(), "estimate": estimate.to_dict()})
    print(f"{describe(estimate, config.epochs)}\nHow: {estimate.method()}".replace("**", ""), flush=True)
    return EXIT["succeeded"]


if __name__ == "__main__":
    sys.exit(main())
