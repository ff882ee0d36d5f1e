"""Command line: ``python -m radiology predict|evaluate|import-model|export``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output

from radiology.errors import RadiologyError


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
    """Prints the label and probabilities of each image; bad files get an error line."""
    from radiology.images import decode_image
    from radiology.model import predict_images

    loaded = _load(args.model)
    for w in loaded.warnings:
        print(f"warning: {w}", file=sys.stderr)
    names = loaded.metadata.class_names
    failures = 0
    for path in args.images:
        try:
            probs = predict_images(loaded, [decode_image(path)])[0]
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
                    }
                )
            )
        else:
            print(f"{path}: {label}  " + "  ".join(f"{c} {p:.3f}" for c, p in zip(names, probs)))
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
                {k: result[k] for k in ("n", "accuracy", "macro_f1", "report", "confusion", "ci", "skipped")}
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
    return 0


def cmd_import_model(args) -> int:
    """Registers a model file as a run of kind ``imported`` and prints its id, class order and warnings."""
    from radiology.imports import import_model, import_record

    order = args.class_order if args.class_order else None
    run = import_model(args.file, name=args.name, class_names=order, max_bytes=None)
    record = import_record(run) or {}
    for w in record.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(f"imported {args.file} as run {run.id}")
    print(f"classes in output order: {', '.join(record['class_names'])} ({record['class_order']})")
    print(f"sha256 {record['sha256']}; Grad-CAM layer {record['gradcam_layer'] or 'none'}")
    print(f"promote it on the Training page, or evaluate it: python -m radiology evaluate --model {run.dir} --data DIR")
    return 0


def _run_arg(value: str):
    """A run from its id, ``active``, or its folder."""
    from radiology import registry

    if value == "active":
        run = registry.active_run()
        if run is None:
            raise RadiologyError("no active model to export")
        return run
    path = Path(value)
    if path.is_dir() and (path / "model.keras").is_file():
        return registry.load_run(path)
    try:
        return registry.get_run(value)
    except KeyError as exc:
        raise RadiologyError(f"no run {value!r} in {registry.default_runs_dir()} (give a run id or folder)") from exc


def cmd_export(args) -> int:
    """Exports a run's model as a ``.keras`` file or a TensorFlow SavedModel."""
    from radiology.export import export_keras, export_savedmodel

    run = _run_arg(args.run)
    if args.format == "keras":
        out = export_keras(run, args.out or f"{run.id}.keras")
    else:
        out = export_savedmodel(run, args.out or f"{run.id}_savedmodel")
    print(f"exported run {run.id} as {args.format}: {out}")
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
    im = sub.add_parser("import-model", help="register a .keras or Keras 2 .h5 model file as a run")
    im.add_argument("file")
    im.add_argument("--name", help="a short name (default: the file's stem)")
    im.add_argument(
        "--class-order",
        help="class names in output order, e.g. covid,normal,pneumonia (default: the file's, else the notebook's)",
    )
    im.set_defaults(func=cmd_import_model)
    ex = sub.add_parser("export", help="export a run's model for a serving stack")
    ex.add_argument("run", help="run id, run folder, or 'active'")
    ex.add_argument("--format", required=True, choices=["keras", "savedmodel"])
    ex.add_argument("--out", help="file (keras) or folder (savedmodel) to write; must not exist")
    ex.set_defaults(func=cmd_export)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except RadiologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
