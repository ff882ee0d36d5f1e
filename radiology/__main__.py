"""Command line: ``python -m radiology predict IMAGE...``, ``evaluate --data DIR`` and ``fit-ood --data DIR``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output

import numpy as np  # noqa: E402

from radiology.errors import RadiologyError  # noqa: E402


def _load(model_arg: str | None):
    from radiology.model import load_model
    from radiology.registry import active_run

    if model_arg:
        path = Path(model_arg)
        return load_model(path / "model.keras" if path.is_dir() else path)
    run = active_run()
    if run is None:
        raise RadiologyError("no active model: train one with 'python -m training --data DIR' or pass --model RUN_DIR")
    return load_model(run.model_path)


def cmd_predict(args) -> int:
    """Prints the label, probabilities and out-of-distribution verdict of each image; bad files get an error line."""
    from radiology import ood
    from radiology.images import decode_with_colour

    loaded = _load(args.model)
    for w in loaded.warnings:
        print(f"warning: {w}", file=sys.stderr)
    stats = ood.load_stats(loaded.metadata)
    if stats is None:
        print(f"warning: {ood.UNAVAILABLE}; only the input checks run", file=sys.stderr)
    names = loaded.metadata.class_names
    failures = 0
    for path in args.images:
        try:
            gray, colour = decode_with_colour(path)
            probs, gate = ood.predict_checked(loaded, gray, colourfulness=colour, stats=stats)
        except RadiologyError as exc:
            failures += 1
            line = {"file": path, "error": str(exc)}
            print(
                json.dumps(line) if args.json else f"{path}: error: {exc}", file=sys.stdout if args.json else sys.stderr
            )
            continue
        label = names[int(probs.argmax())]
        if args.json:
            print(
                json.dumps(
                    {
                        "file": path,
                        "label": label,
                        "probabilities": {c: round(float(p), 6) for c, p in zip(names, probs)},
                        "ood": gate.to_dict(),
                    }
                )
            )
        else:
            mark = f"  [OUT OF DISTRIBUTION: {gate.message}]" if gate.flag else ""
            print(f"{path}: {label}  " + "  ".join(f"{c} {p:.3f}" for c, p in zip(names, probs)) + mark)
    return 1 if failures else 0


def cmd_evaluate(args) -> int:
    """Evaluates a model on a split of a dataset and prints the metrics."""
    from radiology.cache import load_or_decode
    from radiology.datasets import discover
    from radiology.evaluation import evaluate_samples

    loaded = _load(args.model)
    dataset = discover(args.data, seed=args.seed)
    samples = dataset.samples() if args.split == "all" else dataset.splits[args.split]
    if not samples:
        raise RadiologyError(f"the {args.split} split of {args.data} is empty")
    decoded, _ = load_or_decode([s.path for s in samples], loaded.metadata.preprocess, args.cache_dir or None)
    for path, err in decoded.errors.items():
        print(f"skipped {path}: {err}", file=sys.stderr)
    result, _ = evaluate_samples(loaded, samples, decoded, root=dataset.root)
    if args.json:
        print(
            json.dumps(
                {k: result[k] for k in ("n", "accuracy", "macro_f1", "report", "confusion", "ci", "skipped", "ood")}
                | {"ece": result["calibration"]["ece"]}
            )
        )
        return 0
    ci = result["ci"]["accuracy"]
    print(f"{result['n']} images ({args.split} split, {result['skipped']} unreadable skipped)")
    print(
        f"accuracy {result['accuracy']:.4f}  (95% CI {ci[0]:.4f}-{ci[1]:.4f})   macro F1 {result['macro_f1']:.4f}"
        f"   ECE {result['calibration']['ece']:.4f}"
    )
    print(f"{'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name in loaded.metadata.class_names:
        r = result["report"][name]
        print(f"{name:<12}{r['precision']:>10.3f}{r['recall']:>10.3f}{r['f1-score']:>10.3f}{int(r['support']):>10d}")
    print("confusion matrix (rows true, columns predicted):")
    for name, row in zip(loaded.metadata.class_names, result["confusion"]["matrix"]):
        print(f"  {name:<12}" + "".join(f"{v:>8d}" for v in row))
    print(_ood_line(result["ood"]))
    return 0


def _ood_line(summary: dict) -> str:
    from radiology.ood import UNAVAILABLE

    share = f"{summary['flagged']} of {summary['n']} images ({summary['flagged_share']:.1%})"
    if not summary["available"]:
        return f"out-of-distribution: {share} flagged by the input checks; {UNAVAILABLE}"
    reasons = ", ".join(f"{k} {v}" for k, v in summary["by_reason"].items())
    return f"out-of-distribution: {share} flagged" + (f" ({reasons})" if reasons else "")


def cmd_fit_ood(args) -> int:
    """Fits the out-of-distribution gate of an existing model on its training data, and stores it in the model file."""
    from radiology import ood
    from radiology.cache import load_or_decode
    from radiology.datasets import discover
    from radiology.evaluation import evaluate_samples, write_evaluation
    from radiology.registry import read_json

    path = Path(args.model)
    model_path = path / "model.keras" if path.is_dir() else path
    loaded = _load(args.model)
    target = model_path.with_suffix(".keras")
    if target != model_path:  # the notebook's best_model.h5: the fitted model becomes a .keras file beside it
        print(f"{model_path.name} cannot carry metadata; writing the model with its statistics to {target}")
    trained = loaded.metadata.train_config
    # the split the model was trained on: its own seed and fractions, unless given
    seed = args.seed if args.seed is not None else int(trained.get("seed", 42))
    fractions = tuple(trained.get("fractions", (0.7, 0.2, 0.1)))
    dataset = discover(args.data, fractions=fractions, seed=seed)
    if loaded.metadata.data_fingerprint and dataset.fingerprint() != loaded.metadata.data_fingerprint:
        print(
            "warning: this dataset or split differs from the one the model was trained on; "
            "validation images may have been training images",
            file=sys.stderr,
        )
    names = list(loaded.metadata.class_names)
    decoded, _ = load_or_decode([s.path for s in dataset.samples()], loaded.metadata.preprocess, args.cache_dir or None)
    index = decoded.index()

    def split(name):
        kept = [s for s in dataset.splits[name] if decoded.ok[index[s.path]] and s.label in names]
        pixels = np.stack([decoded.pixels[index[s.path]] for s in kept]) if kept else None
        return pixels, np.array([names.index(s.label) for s in kept], dtype=np.int32)

    x_train, y_train = split("train")
    x_val, _ = split("val")
    if x_train is None:
        raise RadiologyError(f"no readable training images in {args.data}")
    stats = ood.fit_for_model(loaded, x_train, y_train, x_val, percentile=args.percentile)
    loaded = ood.store_stats(loaded, target, stats)
    print(
        f"fitted on {stats.n_fit} training images ({stats.layer}, {stats.means.shape[1]} features); threshold "
        f"{stats.threshold:.3f} = {stats.percentile:g}th percentile of "
        f"{stats.n_threshold} {stats.threshold_split} images"
    )
    print(f"stored in {target}")
    test = dataset.splits["test"]
    if test:
        result, rows = evaluate_samples(loaded, test, decoded, root=dataset.root, n_boot=100)
        print(_ood_line(result["ood"]) + " on the test split")
        metrics_path = model_path.parent / "metrics.json"
        old = read_json(metrics_path, None) if path.is_dir() else None
        if old is not None:
            # the run's own evaluation stays; only the gate's numbers and the prediction rows are new
            write_evaluation(model_path.parent, {**old, "ood": result["ood"]}, rows)
            print(f"updated {metrics_path}")
    return 0


def main(argv=None) -> int:
    """Runs the command line; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="python -m radiology", description="RadiologyAI: research demo, not for diagnosis."
    )
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="classify images")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--model", help="run folder or model file (default: the active model)")
    pr.add_argument("--json", action="store_true", help="one JSON object per line")
    pr.set_defaults(func=cmd_predict)
    ev = sub.add_parser("evaluate", help="evaluate a model on a dataset")
    ev.add_argument("--data", required=True)
    ev.add_argument("--model", help="run folder or model file (default: the active model)")
    ev.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    ev.add_argument("--seed", type=int, default=42, help="split seed for a class-folders dataset")
    ev.add_argument("--cache-dir", default="")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_evaluate)
    fo = sub.add_parser("fit-ood", help="fit the out-of-distribution gate of an existing model")
    fo.add_argument("--model", required=True, help="run folder or .keras file; the statistics are written into it")
    fo.add_argument("--data", required=True, help="the dataset the model was trained on")
    fo.add_argument("--seed", type=int, default=None, help="split seed (default: the model's training seed)")
    fo.add_argument("--percentile", type=float, default=99.0, help="share of validation images that pass, percent")
    fo.add_argument("--cache-dir", default="")
    fo.set_defaults(func=cmd_fit_ood)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except RadiologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
