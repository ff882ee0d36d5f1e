"""Command line: ``python -m radiology predict|evaluate|audit|fit-ood|calibrate|import-model|export``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output

import numpy as np

from radiology.errors import EvaluationError, RadiologyError
from radiology.jobs import now, process_start


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
    from radiology.images import decode_with_colour, dicom_header

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
            header = dicom_header(path)
            probs, gate = ood.predict_checked(loaded, gray, colourfulness=colour, stats=stats, header=header)
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


def _save_target(model_arg: str | None, *, job: str | None):
    """The run whose folder receives ``--save``'s files.

    Raises:
        EvaluationError: the model is a bare file, the bundled model, has no model, or is still training.
    """
    from radiology.evaluation_job import check_can_save
    from radiology.registry import active_run, load_run

    if model_arg:
        path = Path(model_arg)
        if not path.is_dir():
            raise EvaluationError(f"--save needs a run folder for --model, got the file {model_arg}")
        run = load_run(path)
    else:
        run = active_run()
        if run is None:
            raise RadiologyError("no active model: pass --model RUN_DIR")
    check_can_save(run)
    return run


def _evaluation_reporter(run_dir: Path | None, job: str):
    """A ``report(phase, done, total)`` that writes the job's progress at most every 0.3 s, or a no-op."""
    from radiology.evaluation_job import update_status

    last = [0.0]

    def report(phase: str, done: int, total: int) -> None:
        t = time.monotonic()
        if run_dir is None or (t - last[0] < 0.3 and done < total):
            return
        last[0] = t
        update_status(run_dir, job, phase=phase, done=done, total=total, progress=round(done / max(total, 1), 4))

    return report


def cmd_evaluate(args) -> int:
    """Evaluates a model on a split of a dataset, split as the model was trained; prints or saves the metrics.

    With ``--save`` every failure, whatever its type, is recorded in the run's evaluation status with its
    type and message, then raised again.
    """
    from radiology.evaluation import save_evaluation
    from radiology.evaluation_job import update_status

    run_dir, job = _queued(args, "evaluate")
    with _running(run_dir, job):
        result, rows, names = _evaluate(args, _evaluation_reporter(run_dir, job))
        saved_in = None
        if run_dir is not None:
            saved_in = save_evaluation(run_dir, job, {**result, "source": "evaluate"}, rows)
            update_status(run_dir, job, "succeeded", ended=now(), progress=1.0, phase="done", evaluation=job)
    _print_evaluation(args, result, names, saved_in=saved_in)
    return 0


def _queued(args, kind: str) -> tuple[Path | None, str]:
    """The run folder ``--save`` records this command in, or None, and the command's job id.

    A job the app started arrives queued, with ``--job``; a console command queues its own.
    """
    from radiology import jobs
    from radiology.evaluation_job import queue

    run = _save_target(args.model, job=args.job) if args.save else None
    job = args.job or jobs.new_id()
    if run is not None and not args.job:
        queue(run, job, kind=kind, data=str(args.data), split=args.split)
    return (run.dir if run is not None else None), job


@contextmanager
def _running(run_dir: Path | None, job: str):
    """Records this process as the running job ``job`` of ``run_dir``, and any failure in it, whatever its type,
    before raising it again; does nothing when ``run_dir`` is None."""
    from radiology import jobs
    from radiology.evaluation_job import STATUS_FILE, update_status

    with jobs.recording(run_dir / STATUS_FILE if run_dir is not None else None, job=job):
        if run_dir is not None:
            update_status(
                run_dir,
                job,
                "running",
                pid=os.getpid(),
                pid_start=process_start(os.getpid()),
                started=now(),
                phase="loading the model",
                progress=0.0,
            )
        yield


def _split_of(args, report):
    """Loads ``--model`` and the ``--split`` of ``--data``, split as the model was trained.

    Returns:
        the loaded model, the checked splits, the chosen samples, and the fields that say what they are
        (``data_root``, ``split``, ``split_method``, ``seed``, ``fractions``, ``data_fingerprint``,
        ``split_matches_training``, ``training_overlap``).

    Raises:
        EvaluationError: the split is empty.
    """
    from radiology.splits import check_splits, training_overlap, training_split

    loaded = _load(args.model)
    for w in loaded.warnings:
        print(f"warning: {w}", file=sys.stderr)
    meta = loaded.metadata
    seed, fractions = training_split(meta.train_config, seed=args.seed)
    checked = check_splits(
        args.data,
        seed=seed,
        fractions=fractions,
        spec=meta.preprocess,
        cache_dir=args.cache_dir or None,
        progress=lambda done, total: report("reading images", done, total),
    )
    dataset = checked.dataset
    samples = dataset.samples() if args.split == "all" else dataset.splits[args.split]
    if not samples:
        raise EvaluationError(f"the {args.split} split of {dataset.root} is empty ({dataset.split_method})")
    chosen = {s.path for s in samples}
    for path, err in checked.decoded.errors.items():
        if path in chosen:
            print(f"skipped {path}: {err}", file=sys.stderr)
    matches, overlap = training_overlap(meta.data_fingerprint, dataset, args.split)
    measured = {
        "data_root": str(dataset.root),
        "split": args.split,
        "split_method": dataset.split_method,
        "seed": seed,
        "fractions": list(fractions),
        "data_fingerprint": dataset.fingerprint(),
        "split_matches_training": matches,
        "training_overlap": overlap,
    }
    return loaded, checked, samples, measured


def _evaluate(args, report) -> tuple[dict, list[dict], tuple[str, ...]]:
    """Loads the model, checks the dataset split as in training, evaluates; returns metrics, rows, class names."""
    from radiology.evaluation import evaluate_samples

    loaded, checked, samples, measured = _split_of(args, report)
    result, rows = evaluate_samples(
        loaded,
        samples,
        checked.decoded,
        root=checked.dataset.root,
        progress=lambda done, total: report("predicting", done, total),
        bf16=args.save,
    )
    result.update(measured, evaluated=now())
    return result, rows, loaded.metadata.class_names


def _print_evaluation(args, result: dict, names, *, saved_in: Path | None) -> None:
    keys = ("n", "accuracy", "macro_f1", "report", "confusion", "ci", "skipped", "split", "split_method", "seed", "ood")
    if args.json:
        print(
            json.dumps(
                {k: result[k] for k in keys}
                | {"ece": result["calibration"]["ece"]}
                | {k: result[k] for k in ("fractions", "split_matches_training", "training_overlap")}
            )
        )
        return
    ci = result["ci"]["accuracy"]
    print(f"{result['n']} images ({args.split} split, {result['skipped']} unreadable skipped)")
    print(f"split: {result['split_method']}")
    known = {True: "yes", False: "no", None: "unknown"}[result["split_matches_training"]]
    print(f"split matches training: {known}: {result['training_overlap']}")
    print(
        f"accuracy {result['accuracy']:.4f}  (95% CI {ci[0]:.4f}-{ci[1]:.4f})   macro F1 {result['macro_f1']:.4f}"
        f"   ECE {result['calibration']['ece']:.4f}"
    )
    print(f"{'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name in names:
        r = result["report"][name]
        print(f"{name:<12}{r['precision']:>10.3f}{r['recall']:>10.3f}{r['f1-score']:>10.3f}{int(r['support']):>10d}")
    print("confusion matrix (rows true, columns predicted):")
    for name, row in zip(names, result["confusion"]["matrix"]):
        print(f"  {name:<12}" + "".join(f"{v:>8d}" for v in row))
    print(_ood_line(result["ood"]))
    if saved_in is not None:
        print(f"saved this evaluation (metrics.json, predictions.csv) in {saved_in}")


def cmd_audit(args) -> int:
    """Audits how far to trust a model on a split: its explanations' faithfulness and its shortcuts.

    With ``--save`` the audit is stored in the run folder as ``audits/ID/audit.json`` and its progress in
    the run's evaluation status, as ``evaluate --save`` does; every failure is recorded there, then raised again.
    """
    from radiology.audit import save_audit
    from radiology.evaluation_job import update_status

    if args.n < 1:
        raise EvaluationError(f"--n must be 1 or more images, got {args.n}")
    if args.steps < 2:
        raise EvaluationError(f"--steps must be 2 or more, got {args.steps}")
    if args.shortcut_n is not None and args.shortcut_n < 1:
        raise EvaluationError(f"--shortcut-n must be 1 or more images, got {args.shortcut_n}")
    run_dir, job = _queued(args, "audit")
    with _running(run_dir, job):
        result = _audit(args, _phases_to_stderr(_evaluation_reporter(run_dir, job)))
        saved_in = None
        if run_dir is not None:
            saved_in = save_audit(run_dir, job, result)
            update_status(run_dir, job, "succeeded", ended=now(), progress=1.0, phase="done", audit=job)
    if args.json:
        print(json.dumps(result))
    else:
        _print_audit(result)
        if saved_in is not None:
            print(f"saved this audit in {saved_in / 'audit.json'}")
    return 0


def _phases_to_stderr(report):
    """Wraps a ``report(phase, done, total)`` so that each new phase is also printed, with the time, to stderr."""
    seen = []

    def wrapped(phase: str, done: int, total: int) -> None:
        if not seen or seen[-1] != phase:
            seen.append(phase)
            print(f"{time.strftime('%H:%M:%S')} {phase}…", file=sys.stderr, flush=True)
        report(phase, done, total)

    return wrapped


def _audit(args, report) -> dict:
    """Loads the model and the split as in training, and audits it; returns the audit with what it was run on."""
    import keras

    from radiology.audit import audit_samples, verdict

    keras.config.disable_interactive_logging()  # tf-keras-vis's ScoreCAM would print progress bars into --json
    loaded, checked, samples, measured = _split_of(args, report)
    result = audit_samples(
        loaded,
        samples,
        checked.decoded,
        n=args.n,
        shortcut_n=args.shortcut_n,
        steps=args.steps,
        seed=args.sample_seed,
        progress=report,
    )
    result.update(measured, model=str(args.model or loaded.path), evaluated=now(), source="audit")
    result["verdict"] = verdict(result)
    return result


def _print_audit(result: dict) -> None:
    f, s = result["faithfulness"], result["shortcut"]
    from radiology.evaluation import SPLIT_NAMES

    print(f"audit of {result['model']} on the {SPLIT_NAMES[result['split']]} of {result['data_root']}")
    print(
        f"faithfulness on {f['n']} images (stratified by class; {f['steps']} steps, blur σ {f['blur_sigma_px']} px, "
        f"{f['layer']}): deletion AUC lower is better, insertion AUC higher"
    )
    print(f"  {'map':<12}{'deletion':>10}{'insertion':>11}{'ins − del':>11}  vs random")
    rows = [(m, f["methods"][m]) for m in f["ranking"]] + list(f["baselines"].items())
    for name, r in rows:
        mark = "" if "better_than_random" not in r else ("better" if r["better_than_random"] else "NO BETTER")
        print(f"  {name:<12}{r['deletion_auc']:>10.3f}{r['insertion_auc']:>11.3f}{r['score']:>11.3f}  {mark}")
    cost = f["cost"]
    print(
        f"  cost: maps {cost['map_seconds']:.0f} s, curves {cost['curve_seconds']:.0f} s "
        f"({cost['model_inputs']:,} model inputs in {cost['model_calls']:,} calls, "
        f"{cost['calls_per_image']:.1f} calls per image)"
    )
    names = result["class_names"]
    print(f"shortcuts on {s['n']} images (thorax box {s['box']['area']:.0%} of the image; chance {s['chance']:.0%})")
    print(f"  {'input':<14}{'accuracy':>10}" + "".join(f"{'recall ' + c:>18}" for c in names))
    for key in ("full", "borders_only", "thorax_only"):
        r = s[key]
        recalls = "".join(f"{'–' if r['recall'][c] is None else format(r['recall'][c], '.3f'):>18}" for c in names)
        print(f"  {key:<14}{r['accuracy']:>10.3f}{recalls}")
    inside = ", ".join(f"{c} {'–' if v is None else format(v, '.2f')}" for c, v in s["cam_inside_thorax"].items())
    print(f"  Grad-CAM mass inside the box: {inside}")
    src = s["source_from_features"]
    if src:
        print(
            f"  source from the model's features: balanced accuracy {src['balanced_accuracy']:.3f} over "
            f"{len(src['sources'])} sources (chance {src['chance']:.3f})"
        )
    else:
        print("  source from the model's features: not measured (fewer than two sources with 20 images)")
    for line in result["verdict"]:
        print(f"- {line}")
    print(f"took {result['seconds']:.0f} s")


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
    from radiology import registry, settings

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
        raise RadiologyError(f"no run {value!r} in {settings.runs_dir()} (give a run id or folder)") from exc


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


def _ood_line(summary: dict) -> str:
    from radiology.ood import UNAVAILABLE

    share = f"{summary['flagged']} of {summary['n']} images ({summary['flagged_share']:.1%})"
    if not summary["available"]:
        return f"out-of-distribution: {share} flagged by the input checks; {UNAVAILABLE}"
    reasons = ", ".join(f"{k} {v}" for k, v in summary["by_reason"].items())
    return f"out-of-distribution: {share} flagged" + (f" ({reasons})" if reasons else "")


def _model_and_splits(args, report=None):
    """Loads ``--model`` and splits ``--data`` as the model was trained.

    ``report(phase, done, total)``, when given, is told how the image reading goes.

    Returns:
        the loaded model, the ``.keras`` file to write it back to, the checked dataset, and a function
        that gives a split's readable pixels (uint8 array of shape (N, H, W), or None) and class indices.
    """
    from radiology.splits import check_splits, training_overlap, training_split

    path = Path(args.model)
    model_path = path / "model.keras" if path.is_dir() else path
    loaded = _load(args.model)
    target = model_path.with_suffix(".keras")
    if target != model_path:  # the notebook's best_model.h5: the fitted model becomes a .keras file beside it
        print(f"{model_path.name} cannot carry metadata; writing the model with its new metadata to {target}")
    meta = loaded.metadata
    seed, fractions = training_split(meta.train_config, seed=args.seed)
    checked = check_splits(
        args.data,
        seed=seed,
        fractions=fractions,
        spec=meta.preprocess,
        cache_dir=args.cache_dir or None,
        progress=None if report is None else lambda done, total: report("reading images", done, total),
    )
    dataset, decoded = checked.dataset, checked.decoded
    matches, overlap = training_overlap(meta.data_fingerprint, dataset, "val")
    if matches is not True:
        print(f"warning: {overlap}", file=sys.stderr)

    def split(name):
        pixels, labels = decoded.arrays(dataset.splits[name], meta.class_names)
        return (pixels if len(labels) else None), labels

    return loaded, target, checked, split


def cmd_fit_ood(args) -> int:
    """Fits the out-of-distribution gate of an existing model on its training data, and stores it in the model file.

    With ``--job`` (a job queued by ``radiology.evaluation_job.start_gate_fit``) it reports its phase and
    progress in the run's job status, and records any failure there, whatever its type, before raising it again.
    """
    from radiology.evaluation_job import update_status

    run_dir = Path(args.model) if args.job else None
    with _running(run_dir, args.job):
        saved = _fit_ood(args, _evaluation_reporter(run_dir, args.job or ""))
        if run_dir is not None:
            update_status(
                run_dir, args.job, "succeeded", ended=now(), progress=1.0, phase="done", evaluation=saved and saved.name
            )
    return 0


def _fit_ood(args, report) -> Path | None:
    """Fits and stores the gate, then evaluates the test split under it; returns where that evaluation was saved."""
    from radiology import ood
    from radiology.evaluation import evaluate_samples, save_evaluation
    from radiology.jobs import new_id
    from radiology.splits import training_overlap

    loaded, target, checked, split = _model_and_splits(args, report)
    x_train, y_train = split("train")
    x_val, _ = split("val")
    if x_train is None:
        raise RadiologyError(f"no readable training images in {args.data}")
    stats = ood.fit_for_model(
        loaded,
        x_train,
        y_train,
        x_val,
        percentile=args.percentile,
        progress=lambda done, total: report("fitting the gate on the training and validation images", done, total),
    )
    loaded = ood.store_stats(loaded, target, stats)
    pixels = stats.pixels
    print(
        f"fitted on {stats.n_fit} training images ({stats.layer}, {stats.means.shape[1]} features; "
        f"{pixels.side}x{pixels.side} thumbnails for layout and orientation); thresholds (features "
        f"{stats.threshold:.3f}, layout {pixels.layout_threshold:.3f}, orientation {pixels.orientation_threshold:.3f}) "
        f"are set so that {stats.percentile:g}% of the {stats.n_threshold} {stats.threshold_split} images pass every "
        f"check (the {stats.percentile:g}th percentile of their largest score)"
    )
    print(f"stored in {target}")
    test = checked.dataset.splits["test"]
    if not test:
        return None
    result, rows = evaluate_samples(
        loaded,
        test,
        checked.decoded,
        root=checked.dataset.root,
        n_boot=100,
        progress=lambda done, total: report("evaluating the test split under the new gate", done, total),
    )
    print(_ood_line(result["ood"]) + " on the test split")
    if not (Path(args.model).is_dir() and (target.parent / "status.json").is_file()):
        return None
    # an evaluation of its own: the run's training-time metrics.json keeps what it measured then
    matches, overlap = training_overlap(loaded.metadata.data_fingerprint, checked.dataset, "test")
    result.update(
        source="fit-ood",
        data_root=str(checked.dataset.root),
        split="test",
        split_method=checked.dataset.split_method,
        data_fingerprint=checked.dataset.fingerprint(),
        split_matches_training=matches,
        training_overlap=overlap,
        evaluated=now(),
    )
    saved = save_evaluation(target.parent, args.job or new_id(), result, rows)
    print(f"stored this evaluation in {saved}")
    return saved


def cmd_calibrate(args) -> int:
    """Fits a model's temperature on its validation split and stores it in the model file."""
    from radiology import calibration
    from radiology.model import predict_images, update_metadata

    loaded, target, _, split = _model_and_splits(args)
    x_val, y_val = split("val")
    if x_val is None or len(np.unique(y_val)) < 2:
        raise RadiologyError(f"the validation split of {args.data} needs readable images of two classes or more")
    old = loaded.metadata.temperature
    raw_val = predict_images(loaded, x_val, calibrated=False)
    temperature = calibration.fit_temperature(raw_val, y_val)
    loaded = update_metadata(loaded, target, temperature=temperature)
    print(f"temperature {temperature:.4g} fitted on {len(y_val)} validation images (was {old or 'none, T = 1'})")
    print(f"stored in {target}")
    rows = [("val", calibration.report(raw_val, y_val, temperature))]
    x_test, y_test = split("test")
    if x_test is not None:
        rows.append(("test", calibration.report(predict_images(loaded, x_test, calibrated=False), y_test, temperature)))
    for name, r in rows:
        print(
            f"{name}: ECE {r['ece_before']:.4f} -> {r['ece_after']:.4f}, "
            f"negative log-likelihood {r['nll_before']:.4f} -> {r['nll_after']:.4f}"
        )
    if args.json:
        print(json.dumps({"temperature": temperature, **{name: r for name, r in rows}}))
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
    ev.add_argument(
        "--seed", type=int, default=None, help="split seed (default: the seed the model was trained with, else 42)"
    )
    ev.add_argument("--cache-dir", default="", help="decode cache folder (default: none)")
    ev.add_argument("--json", action="store_true")
    ev.add_argument(
        "--save",
        action="store_true",
        help="store the evaluation in the --model run folder, as evaluations/ID/ (metrics.json, predictions.csv)",
    )
    ev.add_argument("--job", help=argparse.SUPPRESS)  # the job id given by radiology.evaluation_job.start
    ev.set_defaults(func=cmd_evaluate)
    au = sub.add_parser("audit", help="how far to trust a model: faithful explanations, shortcuts")
    au.add_argument("--data", required=True)
    au.add_argument("--model", help="run folder or model file (default: the active model)")
    au.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    au.add_argument("--n", type=int, default=90, help="images of the faithfulness sample, stratified by class")
    au.add_argument(
        "--shortcut-n", type=int, default=None, help="images of the shortcut audit (default: the whole split)"
    )
    au.add_argument("--steps", type=int, default=20, help="removal steps of each deletion and insertion curve")
    au.add_argument(
        "--seed", type=int, default=None, help="split seed (default: the seed the model was trained with, else 42)"
    )
    au.add_argument("--sample-seed", type=int, default=0, help="seed of the samples, the random map and the folds")
    au.add_argument("--cache-dir", default="", help="decode cache folder (default: none)")
    au.add_argument("--json", action="store_true", help="print the audit as one JSON object")
    au.add_argument("--save", action="store_true", help="store the audit in the --model run folder, as audits/ID/")
    au.add_argument("--job", help=argparse.SUPPRESS)
    au.set_defaults(func=cmd_audit)
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
    fo = sub.add_parser("fit-ood", help="fit the out-of-distribution gate of an existing model")
    fo.add_argument("--model", required=True, help="run folder or .keras file; the statistics are written into it")
    fo.add_argument("--data", required=True, help="the dataset the model was trained on")
    fo.add_argument("--seed", type=int, default=None, help="split seed (default: the model's training seed)")
    fo.add_argument("--percentile", type=float, default=99.0, help="share of validation images that pass, percent")
    fo.add_argument("--cache-dir", default="")
    fo.add_argument("--job", help=argparse.SUPPRESS)  # the job id given by radiology.evaluation_job.start_gate_fit
    fo.set_defaults(func=cmd_fit_ood)
    ca = sub.add_parser("calibrate", help="fit a model's temperature on its validation split")
    ca.add_argument("--model", required=True, help="run folder or .keras file; the temperature is written into it")
    ca.add_argument("--data", required=True, help="the dataset the model was trained on")
    ca.add_argument("--seed", type=int, default=None, help="split seed (default: the model's training seed)")
    ca.add_argument("--cache-dir", default="")
    ca.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    ca.set_defaults(func=cmd_calibrate)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except RadiologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written: the user's to fix, not a bug
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
